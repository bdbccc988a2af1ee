#!/usr/bin/env bash
# Deferral in the proxy pair (sync.defer, on by default): the backend's SYN-ACK of a new flow,
# the packet that makes the connection exist for the client, waits until the standby has
# acknowledged the flow's checkpoint, at most sync.defer_timeout_ms. Topology: pair_lib.sh
# (passthrough, SNAT, two backends).
#
#   - A alone: it warns that it has no standby; B starting with A's sync frames dropped: A
#     warns that its standby is not ready (bulk resync visibility), until B's bulk completes;
#   - A active, B a ready standby: A's deferral is on; 50 verified connections complete, and
#     A counts their flows as deferred and acknowledged (SYN-ACKs held: tandem_sync_deferred);
#   - B's sync port blocked (iptables DROP in B's namespace; the heartbeat timeout is long, so
#     B stays standby): 5 new connections still complete, each after the wait ran out
#     (counted as deferral timeouts);
#   - unblocked: new connections are acknowledged again, B is standby and holds every flow.
TDM_PREFIX=${TDM_PREFIX:-tpdf}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
# Deferral is what this test checks, and kernel binding excludes it (docs/fastpath.md).
unset TANDEM_FASTPATH_BIND
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# A 4 s dead interval: the sync port stays blocked well within it.
HB_INTERVAL=0.1
HB_MISS=40
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
command -v iptables >/dev/null || skip_all "iptables not installed"

m_a() { metric_in "$NS_PA" "$@"; }
deferral_is() { [ "$(m_a tandem_pair_deferral)" = "$1" ]; }

TDM_ADDRESSING=snat
pair_topo || { fail "topology set up"; finish; }
tcpcheck_servers || { fail "tcpcheck servers listen"; finish; }
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
printf 'defer_timeout_ms = 50\n' >>"$TDM_TMP/a.conf"  # [sync] is the last section

standby_is() { http_in "$NS_PA" /status | grep -q "\"standby\":\"$1\""; }

start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
name="A alone and active: /status says no standby, the warning is logged and counted"
if wait_for 8 is_role "$NS_PA" active && wait_for 2 standby_is absent &&
    [ "$(m_a tandem_pair_standby_warnings_total)" -ge 1 ] &&
    grep -q "no standby heard" "$TDM_TMP/tandemd-a.log"; then
  pass "$name"
else
  fail "$name" "$(http_in "$NS_PA" /status)"
fi

# B starts with A's sync frames dropped (its own heartbeats reach A): its bulk cannot finish.
in_ns "$NS_PB" iptables -I INPUT -p udp --dport "$SYNC_PORT" -j DROP
w0=$(m_a tandem_pair_standby_warnings_total)
start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
B_PID=$NODE_PID
name="B bulk-resyncing: A warns while its standby is not ready (/status, metric, log)"
if wait_for 2 standby_is syncing && [ "$(m_a tandem_pair_standby_ready)" = 0 ] &&
    [ "$(m_a tandem_pair_standby_warnings_total)" -gt "$w0" ] &&
    grep -q "standby node 2 is not ready" "$TDM_TMP/tandemd-a.log" && is_role "$NS_PB" standby
then
  pass "$name"
else
  fail "$name" "$(http_in "$NS_PA" /status)"
fi
in_ns "$NS_PB" iptables -D INPUT -p udp --dport "$SYNC_PORT" -j DROP
name="B's bulk completes: A reports a ready standby"
if wait_for 5 standby_is ready && [ "$(m_a tandem_pair_standby_ready)" = 1 ] &&
    grep -q "standby node 2 is ready" "$TDM_TMP/tandemd-a.log"; then
  pass "$name"
else
  fail "$name" "$(http_in "$NS_PA" /status)"
fi
name="A active, B ready standby: A defers new flows"
if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby &&
    wait_for 2 deferral_is 1; then
  pass "$name"
else
  fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB"), deferral $(m_a tandem_pair_deferral)"
fi

name="50 connections complete; A counts them deferred and acknowledged by B"
acked0=$(m_a tandem_pair_deferred_acked_total)
tmo0=$(m_a tandem_pair_deferred_timeouts_total)
held0=$(m_a tandem_sync_deferred_total)
out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 50 --bytes 16384 \
      --timeout 20 2>&1 | tail -n 1)
sleep 0.2
acked=$(( $(m_a tandem_pair_deferred_acked_total) - acked0 ))
tmo=$(( $(m_a tandem_pair_deferred_timeouts_total) - tmo0 ))
held=$(( $(m_a tandem_sync_deferred_total) - held0 ))
if [ "$(summary_field "$out" ok)" = 50 ] && [ "$acked" -ge 1 ] && [ $((acked + tmo)) -ge 50 ] &&
    [ "$held" -ge 1 ]; then
  pass "$name ($acked acked, $tmo timed out, SYN-ACKs held $held times)"
else
  fail "$name" "$out" "acked $acked, timed out $tmo, held $held"
fi

name="B's sync port blocked: 5 new connections still complete after the wait, counted"
in_ns "$NS_PB" iptables -I INPUT -p udp --dport "$SYNC_PORT" -j DROP
sleep 0.3
tmo0=$(m_a tandem_pair_deferred_timeouts_total)
acked0=$(m_a tandem_pair_deferred_acked_total)
t0=$(date +%s%N)
out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 5 --bytes 4096 \
      --timeout 10 2>&1 | tail -n 1)
t1=$(date +%s%N)
tmo=$(( $(m_a tandem_pair_deferred_timeouts_total) - tmo0 ))
acked=$(( $(m_a tandem_pair_deferred_acked_total) - acked0 ))
if [ "$(summary_field "$out" ok)" = 5 ] && [ "$tmo" -ge 5 ] && [ "$acked" -eq 0 ] &&
    is_role "$NS_PB" standby && is_role "$NS_PA" active; then
  pass "$name ($tmo timeouts, $(( (t1 - t0) / 1000000 )) ms for the 5 connections)"
else
  fail "$name" "$out" "timeouts $tmo, acked $acked, A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")"
fi
in_ns "$NS_PB" iptables -D INPUT -p udp --dport "$SYNC_PORT" -j DROP

name="unblocked: new flows are acknowledged again, B standby and holding every flow"
sleep 0.5
acked0=$(m_a tandem_pair_deferred_acked_total)
out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 10 --bytes 4096 \
      --hold-ms 1000 --timeout 10 2>&1 | tail -n 1)
acked=$(( $(m_a tandem_pair_deferred_acked_total) - acked0 ))
a_flows=$(http_in "$NS_PA" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
b_flows=$(http_in "$NS_PB" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
if [ "$(summary_field "$out" ok)" = 10 ] && [ "$acked" -ge 1 ] && is_role "$NS_PB" standby &&
    [ "$a_flows" -eq "$b_flows" ]; then
  pass "$name ($acked acked; A $a_flows flows, B $b_flows)"
else
  fail "$name" "$out" "acked $acked, B: $(role_of "$NS_PB"), A $a_flows flows, B $b_flows"
fi

name="a lone active does not defer: B stopped, A's deferral turns off, connections complete"
stop_node "$B_PID" "$NS_PB" >/dev/null 2>&1
tmo0=$(m_a tandem_pair_deferred_timeouts_total)
if wait_for 8 deferral_is 0; then
  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 5 --bytes 4096 \
        --timeout 10 2>&1 | tail -n 1)
  tmo=$(( $(m_a tandem_pair_deferred_timeouts_total) - tmo0 ))
  if [ "$(summary_field "$out" ok)" = 5 ] && [ "$tmo" -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "$out" "timeouts $tmo"
  fi
else
  fail "$name" "deferral still $(m_a tandem_pair_deferral)"
fi
topo_down
finish
