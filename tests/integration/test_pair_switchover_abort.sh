#!/usr/bin/env bash
# A planned switchover that the standby does not acknowledge is aborted, and the active keeps the
# address group: the switchover withdraws the group first (while still forwarding), so the abort
# must add it back. Topology and helpers in pair_lib.sh (transparent addressing, A active).
#
#   1. A's sync frames to B are dropped in B's namespace (B still heartbeats to A, so A sees a
#      live, ready standby), and one new connection gives A a flow change B cannot acknowledge.
#   2. `tandemctl switchover` on A: the group is withdrawn, the data path held, the change never
#      acknowledged: after 500 ms the command fails ("switchover aborted: the standby did not
#      acknowledge"), A stays active, holds the front VIP and the backends' gateway again, and B
#      stays standby without them.
#   3. Once the drop rule is gone, a switchover completes; a stream running through it all and
#      the new connection verify every byte, with no reset.
#
# B's dead interval is 2 s (HB_MISS=100 x 20 ms), so that it does not take over while A's frames
# are dropped (about 1 s here).
TDM_PREFIX=${TDM_PREFIX:-tswa}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL TCPCHECK
require_kernel
HB_MISS=${HB_MISS:-100}
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
TDM_ADDRESSING=transparent

ctl() {  # ctl NS ARGS...: tandemctl against the tandemd of NS
  local ns=$1
  shift
  in_ns "$ns" "$TANDEMCTL" --metrics "$METRICS_ADDR" "$@"
}
peer_ready_in() { ctl "$1" peer 2>/dev/null | grep -qE '^ready +yes$'; }
pending_in() {  # pending_in NS: A's sync updates not yet acknowledged (>= 1)
  [ "$(ctl "$1" pair 2>/dev/null | sed -n 's/^sync_pending_updates //p')" -ge 1 ] 2>/dev/null
}

state() {
  local ns
  for ns in "$NS_PA" "$NS_PB"; do
    echo "  -- $ns: $(ip -n "$ns" -br addr 2>&1 | tr '\n' ' ')"
    ctl "$ns" pair 2>&1 | grep -E '^(role|addresses_held|sync_pending|switchover_)' | sed 's/^/  | /'
  done
  tail -n 12 "$TDM_TMP/tandemd-a.log" | sed 's/^/  | /'
}

drop_rule() {  # drop_rule -I|-D: A's sync frames to B
  in_ns "$NS_PB" iptables -w "$1" INPUT -p udp -s "$A_BACK" --dport "$SYNC_PORT" -j DROP
}

back=$(pair_group_back)
if ! pair_topo || ! tcpcheck_servers; then
  fail "topology and servers"
  finish
fi
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
wait_for 5 is_role "$NS_PA" active
start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
name="A active, B standby and ready"
if wait_for 5 is_ready "$NS_PB" && wait_for 2 peer_ready_in "$NS_PA" && is_role "$NS_PA" active; then
  pass "$name"
else
  fail "$name" "$(state)"
  finish
fi

bg_start stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 6 \
  --rate 1048576 --timeout 20
stream_pid=$BG_PID
sleep 1

drop_rule -I
bg_start short "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 1 --bytes 4096 \
  --timeout 20
short_pid=$BG_PID
name="A has a flow change B cannot acknowledge"
if wait_for 2 pending_in "$NS_PA"; then
  pass "$name"
else
  drop_rule -D
  fail "$name" "$(state)"
  finish
fi
out=$(ctl "$NS_PA" switchover 2>&1)
rc=$?
drop_rule -D

name="the unacknowledged switchover is aborted: A stays active and holds the group again"
if [ "$rc" -eq 1 ] && echo "$out" | grep -q 'switchover aborted: the standby did not acknowledge' &&
    is_role "$NS_PA" active && has_addr "$NS_PA" front "$VIP" && has_addr "$NS_PA" back "$back" &&
    is_role "$NS_PB" standby && ! has_addr "$NS_PB" front "$VIP" &&
    ! has_addr "$NS_PB" back "$back" &&
    grep -q 'address group up' <(sed -n '/withdrawing the group/,$p' "$TDM_TMP/tandemd-a.log"); then
  pass "$name ($out)"
else
  fail "$name" "exit $rc: $out" "$(state)"
fi

name="after the drop rule is gone, a switchover completes"
if wait_for 5 is_ready "$NS_PB" && wait_for 3 peer_ready_in "$NS_PA" &&
    out=$(ctl "$NS_PA" switchover 2>&1) && echo "$out" | grep -q '^switchover complete' &&
    is_role "$NS_PB" active && has_addr "$NS_PB" front "$VIP" && ! has_addr "$NS_PA" front "$VIP"; then
  pass "$name"
else
  fail "$name" "$out" "$(state)"
fi

name="the stream and the new connection verified every byte, no reset"
wait "$stream_pid"
stream_rc=$?
wait "$short_pid"
short_rc=$?
stream_line=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream.log")
short_line=$(grep '^tcpcheck: conns=' "$TDM_TMP/short.log")
if [ "$stream_rc" -eq 0 ] && [ "$short_rc" -eq 0 ] &&
    [ "$(summary_field "$stream_line" reset)" = 0 ] && [ "$(summary_field "$short_line" reset)" = 0 ] &&
    [ "$(summary_field "$stream_line" failed)" = 0 ] && [ "$(summary_field "$short_line" failed)" = 0 ]; then
  pass "$name (stream max_gap_ms=$(summary_field "$stream_line" max_gap_ms))"
else
  fail "$name" "stream exit $stream_rc: $stream_line" "short exit $short_rc: $short_line"
fi
finish
