#!/usr/bin/env bash
# A planned switchover with a few thousand flows keeps the table on both nodes without a bulk
# resync (pair_lib.sh topology, transparent addressing):
#   1. A active, B standby and ready; FLOWS idle flows created through A (tcpinject --flood: one
#      SYN per flow from a spoofed source; the backends drop them, so they stay in SYN_SENT with
#      a long timeout) until B holds every one.
#   2. Switchover A -> B: the old active A is ready at once (it keeps its table and follows B's
#      update stream), both /flows list every flow, and neither node served a bulk transfer.
#   3. More flows created through B reach A (A follows B's stream from its first message).
#   4. Switchover back B -> A (possible only because A is ready): same checks.
# Also: B stopped while A stays active: A stops queueing checkpoints for it (dropped counter);
# B started again bulk-resyncs to every flow and stays standby.
TDM_PREFIX=${TDM_PREFIX:-thot}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL TCPINJECT
require_kernel
HB_MISS=${HB_MISS:-15}  # 20 ms x 15: nothing here depends on a fast detection
FLOWS=${FLOWS:-3000}
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
TDM_ADDRESSING=transparent
SPOOF_NET=10.$TDM_NET.128.0/17

ctl() {
  local ns=$1
  shift
  in_ns "$ns" "$TANDEMCTL" --metrics "$METRICS_ADDR" "$@"
}
flows_of() { http_in "$1" '/flows?limit=1000000' | grep -c '^web '; }
bulks_of() { metric_in "$1" tandem_pair_bulk_transfers_total; }
has_flows() { [ "$(flows_of "$1")" -ge "$2" ]; }
peer_ready_in() { ctl "$1" peer 2>/dev/null | grep -qE '^ready +yes$'; }

flood() {  # flood COUNT SEED: COUNT new SYN_SENT flows through the VIP's holder
  in_ns "$NS_CLI" "$TCPINJECT" --flood --src-net "$SPOOF_NET" --dst "$VIP:80" \
    --count "$1" --rate 20000 --seed "$2" >>"$TDM_TMP/flood.log" 2>&1
}

pair_topo || { fail "topology"; exit 1; }
for ns in "$NS_BE1" "$NS_BE2"; do in_ns "$ns" iptables -A INPUT -s "$SPOOF_NET" -j DROP; done
ip -n "$NS_PA" route add blackhole "$SPOOF_NET"
ip -n "$NS_PB" route add blackhole "$SPOOF_NET"
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK" "$A_FRONT" "$B_FRONT"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK" "$B_FRONT" "$A_FRONT"
for c in a b; do sed -i 's/^established = .*/&\nsyn_sent = 900/' "$TDM_TMP/$c.conf"; done
start_node a "$NS_PA" "$TDM_TMP/a.conf"
wait_for 5 is_role "$NS_PA" active
start_node b "$NS_PB" "$TDM_TMP/b.conf"
PID_B=$NODE_PID
check "A active, B standby and ready" wait_for 10 is_ready "$NS_PB"

flood "$FLOWS" 1
wait_for 20 has_flows "$NS_PA" "$FLOWS"
total=$(flows_of "$NS_PA")
name="$FLOWS flows created through A reach B"
if [ "$total" -ge "$FLOWS" ] && wait_for 20 has_flows "$NS_PB" "$total"; then
  pass "$name (A $total, B $(flows_of "$NS_PB"))"
else
  fail "$name" "A $total, B $(flows_of "$NS_PB")"
fi
bulk_a=$(bulks_of "$NS_PA")
bulk_b=$(bulks_of "$NS_PB")

# switchover FROM_NS TO_NS LABEL
switchover() {
  local from=$1 to=$2 label=$3 out rc fa fb
  wait_for 5 peer_ready_in "$from"
  out=$(ctl "$from" switchover 2>&1)
  rc=$?
  name="$label: switchover completes"
  if [ "$rc" -eq 0 ] && echo "$out" | grep -q '^switchover complete'; then
    pass "$name ($out)"
  else
    fail "$name" "exit $rc: $out"
    return
  fi
  name="$label: the old active is ready without a bulk resync"
  if wait_for 2 is_ready "$from" && [ "$(bulks_of "$NS_PA")" = "$bulk_a" ] &&
      [ "$(bulks_of "$NS_PB")" = "$bulk_b" ]; then
    pass "$name"
  else
    fail "$name" "ready: $(metric_in "$from" tandem_pair_ready); bulk transfers served:" \
      "A $(bulks_of "$NS_PA") (was $bulk_a), B $(bulks_of "$NS_PB") (was $bulk_b)"
  fi
  fa=$(flows_of "$NS_PA")
  fb=$(flows_of "$NS_PB")
  name="$label: both nodes list every flow"
  if [ "$fa" -ge "$total" ] && [ "$fb" -ge "$total" ] && [ "$fa" = "$fb" ]; then
    pass "$name (A $fa, B $fb, expected $total)"
  else
    fail "$name" "A $fa, B $fb, expected $total"
  fi
}

switchover "$NS_PA" "$NS_PB" "A -> B"
flood 500 2
wait_for 20 has_flows "$NS_PB" $((total + 500))
total=$(flows_of "$NS_PB")
name="flows created through B after the handover reach A (it follows B's stream)"
if [ "$total" -gt "$FLOWS" ] && wait_for 20 has_flows "$NS_PA" "$total"; then
  pass "$name (B $total, A $(flows_of "$NS_PA"))"
else
  fail "$name" "B $total, A $(flows_of "$NS_PA")"
fi
switchover "$NS_PB" "$NS_PA" "B -> A"

# The standby goes away: the active stops queueing checkpoints for it.
drops0=$(metric_in "$NS_PA" tandem_pair_dead_peer_drops_total)
stop_node "$PID_B" "$NS_PB"
flood 500 3
wait_for 20 has_flows "$NS_PA" $((total + 500))
total=$(flows_of "$NS_PA")
name="B stopped: A drops its checkpoint queue instead of resending it"
pending_of_a() { ctl "$NS_PA" pair | awk '$1 == "sync_pending_updates" { print $2 }'; }
queue_dropped() {
  [ "$(metric_in "$NS_PA" tandem_pair_dead_peer_drops_total)" -gt "$drops0" ] &&
    [ "$(pending_of_a)" = 0 ]
}
wait_for 5 queue_dropped
pending=$(pending_of_a)
drops=$(metric_in "$NS_PA" tandem_pair_dead_peer_drops_total)
if [ "$drops" -gt "$drops0" ] && [ "$pending" = 0 ]; then
  pass "$name (pending $pending)"
else
  fail "$name" "dead-peer drops $drops0 -> $drops, pending $pending"
fi
start_node b "$NS_PB" "$TDM_TMP/b.conf"
name="B started again: bulk-resyncs to every flow and stays standby"
if wait_for 20 is_ready "$NS_PB" && is_role "$NS_PB" standby && is_role "$NS_PA" active &&
    [ "$(flows_of "$NS_PB")" -ge "$total" ]; then
  pass "$name (A $total, B $(flows_of "$NS_PB"))"
else
  fail "$name" "B: $(role_of "$NS_PB"), ready $(metric_in "$NS_PB" tandem_pair_ready)," \
    "flows $(flows_of "$NS_PB") of $total"
fi
finish
