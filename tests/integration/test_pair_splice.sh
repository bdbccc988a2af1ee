#!/usr/bin/env bash
# The proxy pair in splice mode: every client connection completed its handshake with the
# active's SYN cookie and the backend leg with the proxy on the client's behalf, so the two legs
# differ in sequence space, timestamp clock and window scale. The standby must hold that
# translation (checkpointed: FLOW_UPSERT revision 1.1) to carry the flows on. Topology and
# helpers: pair_lib.sh (two backends, round robin, so the standby could not guess the mapping).
#
# For each addressing (snat, then transparent):
#   - A takes the group, B starts, bulk-resyncs and reports ready as standby;
#   - 100 concurrent verified connections held open plus one paced stream, all spliced;
#     B holds their flows and none of its checkpoints was refused;
#   - A is killed (SIGKILL) and its links taken down: B becomes active, every connection
#     verifies every byte through B; new spliced connections through B work too.
# With TANDEM_FASTPATH=on: A's kernel answered the SYNs, B's (the standby's) none, and B's
# answers new SYNs once it is active.
TDM_PREFIX=${TDM_PREFIX:-tpsp}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# A 200 ms dead interval: on a busy shared machine a 100 ms loop stall is not a dead peer.
HB_MISS=10
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
CONNS=100
COOKIE_SECRET=0f1e2d3c4b5a69788796a5b4c3d2e1f0

# splice_config FILE NODE PRIORITY BIND PEER: pair_config's file, the service in splice mode,
# the SYN-cookie secret shared by the pair (a cookie minted by A is checked by B).
splice_config() {
  pair_config "$@" || return 1
  sed -i 's/^mode = passthrough/mode = splice/' "$1"
  sed -i "/^\[daemon\]/a cookie_secret = $COOKIE_SECRET" "$1"
}

run_case() {
  local a=$1 name
  TDM_ADDRESSING=$a
  log "==== addressing $a, splice mode ===="
  pair_servers_up "$a" || return
  splice_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  splice_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"

  name="$a: A starts alone and becomes active; B starts, bulk-resyncs, ready standby"
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
  local a_pid=$NODE_PID
  wait_for 5 is_role "$NS_PA" active && wait_for 2 has_addr "$NS_PA" front "$VIP"
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby && is_role "$NS_PA" active; then
    pass "$name"
  else
    fail "$name" "A: '$(role_of "$NS_PA")', B: '$(role_of "$NS_PB")'"
    topo_down
    return
  fi

  bg_start conns-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$CONNS" \
    --bytes 65536 --hold-ms 7000 --timeout 20
  local conns_pid=$BG_PID
  bg_start stream-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 9 \
    --rate 1048576 --timeout 20
  local stream_pid=$BG_PID
  sleep 2.5

  name="$a: the flows are spliced on A and B holds all of them, none refused"
  local a_flows b_flows spliced refused
  a_flows=$(http_in "$NS_PA" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
  b_flows=$(http_in "$NS_PB" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
  spliced=$(metric_in "$NS_PA" tandem_splices_completed_total)
  refused=$(metric_in "$NS_PB" tandem_pair_install_failures_total)
  if [ "$b_flows" -ge $((CONNS + 1)) ] && [ "$b_flows" -eq "$a_flows" ] &&
      [ "$spliced" -ge $((CONNS + 1)) ] && [ "$refused" -eq 0 ]; then
    pass "$name (A $a_flows, B $b_flows, $spliced spliced)"
  else
    fail "$name" "A has $a_flows, B has $b_flows, spliced $spliced, B refused $refused"
  fi

  # With the kernel fast path (TANDEM_FASTPATH=on, docs/fastpath.md) the active's flows are on
  # it; a standby never holds entries (without it both read 0).
  name="$a: B, the standby, holds no fast-path entry"
  local b_entries
  b_entries=$(metric_in "$NS_PB" tandem_fastpath_entries)
  if [ "$b_entries" -eq 0 ]; then
    pass "$name (A: $(metric_in "$NS_PA" tandem_fastpath_entries) entries)"
  else
    fail "$name" "B reports $b_entries entries"
  fi

  # With it, A answered the SYNs in its kernel (daemon.fastpath_syn, on by default); B, the
  # standby, never answers: its program is told so (tandem_fastpath_syn_active 0).
  local fp=${TANDEM_FASTPATH:-off} a_syn b_syn b_active
  a_syn=$(metric_in "$NS_PA" tandem_fastpath_syn_answered_total)
  b_syn=$(metric_in "$NS_PB" tandem_fastpath_syn_answered_total)
  b_active=$(metric_in "$NS_PB" tandem_fastpath_syn_active)
  name="$a: SYNs answered in A's kernel ($fp), none by B, the standby (inactive)"
  if [ "$b_syn" -eq 0 ] && [ "$b_active" -eq 0 ] &&
     { [ "$fp" != on ] || [ "$a_syn" -ge $((CONNS + 1)) ]; } &&
     { [ "$fp" = on ] || [ "$a_syn" -eq 0 ]; }; then
    pass "$name (A answered $a_syn)"
  else
    fail "$name" "A answered $a_syn, B answered $b_syn, B active $b_active"
  fi

  crash_a_check_b "$a" "$a_pid"

  check_survivors "$a: after the crash" "$CONNS" "$conns_pid" "$stream_pid" \
    "$TDM_TMP/conns-$a.log" "$TDM_TMP/stream-$a.log"

  name="$a: 20 new spliced connections through B, every byte verified"
  local out
  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 20 --bytes 16384 \
        --timeout 20 2>&1 | tail -n 1)
  if [ "$(summary_field "$out" ok)" = 20 ]; then
    pass "$name"
  else
    fail "$name" "$out"
  fi
  if [ "${TANDEM_FASTPATH:-off}" = on ]; then
    name="$a: B, now active, answers new SYNs in its kernel"
    b_syn=$(metric_in "$NS_PB" tandem_fastpath_syn_answered_total)
    if [ "$(metric_in "$NS_PB" tandem_fastpath_syn_active)" -eq 1 ] && [ "$b_syn" -ge 20 ]; then
      pass "$name ($b_syn answered)"
    else
      fail "$name" "B answered $b_syn, active $(metric_in "$NS_PB" tandem_fastpath_syn_active)"
    fi
  fi
  log "$a: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(pair_(takeovers|flows_installed|install_failures)|sync_updates_delivered|splices_completed)' | tr '\n' ' ')"
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-snat transparent}; do
  run_case "$addressing"
done
finish
