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
TDM_PREFIX=${TDM_PREFIX:-tpsp}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# A 200 ms dead interval: on a busy shared machine a 100 ms loop stall is not a dead peer.
HB_MISS=10
pair_init
CONNS=100
COOKIE_SECRET=0f1e2d3c4b5a69788796a5b4c3d2e1f0

dump_state() {
  echo "  ---- state dump ($TDM_ID, addressing $TDM_ADDRESSING) ----"
  local ns f
  for ns in "$NS_PA" "$NS_PB"; do
    ns_exists "$ns" || continue
    echo "  -- $ns: ip -br addr:"
    ip -n "$ns" -br addr 2>&1 | sed 's/^/  | /'
    echo "  -- $ns: pair, splice and drop metrics (non-zero):"
    http_in "$ns" /metrics | grep -E '^tandem_(pair|sync|splice|drops)' | awk '$NF != 0' |
      sed 's/^/  | /'
  done
  for f in "$TDM_TMP"/*.log; do
    [ -f "$f" ] || continue
    echo "  -- $(basename "$f") (last 15 lines):"
    tail -n 15 "$f" | sed 's/^/  | /'
  done
  echo "  ---- end of state dump ----"
}

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
  if ! pair_topo; then
    fail "$a: topology set up"
    topo_down
    return
  fi
  if ! tcpcheck_servers; then
    fail "$a: tcpcheck servers listen"
    topo_down
    return
  fi
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

  log "$a: killing A (SIGKILL) and taking its links down"
  crash_node "$a_pid" "$NS_PA"

  name="$a: B becomes active and holds the VIP"
  if wait_for 5 is_role "$NS_PB" active && wait_for 2 has_addr "$NS_PB" front "$VIP"; then
    pass "$name"
  else
    fail "$name" "B's role: '$(role_of "$NS_PB")'"
  fi

  wait "$conns_pid"
  local conns_rc=$?
  wait "$stream_pid"
  local stream_rc=$?
  local conns_out stream_out
  conns_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/conns-$a.log")
  stream_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream-$a.log")
  log "$a: conns: $conns_out"
  log "$a: stream: $stream_out"

  name="$a: all $CONNS spliced connections survived the crash, every byte verified"
  if [ "$conns_rc" -eq 0 ] && echo "$conns_out" | grep -q "conns=$CONNS ok=$CONNS failed=0 "; then
    pass "$name"
  else
    fail "$name" "exit $conns_rc" "$(tail -n 20 "$TDM_TMP/conns-$a.log")"
  fi

  name="$a: the spliced stream survived the crash with every byte verified"
  if [ "$stream_rc" -eq 0 ] && echo "$stream_out" | grep -q 'conns=1 ok=1 failed=0 '; then
    pass "$name (max_gap_ms=$(summary_field "$stream_out" max_gap_ms))"
  else
    fail "$name" "exit $stream_rc" "$(tail -n 20 "$TDM_TMP/stream-$a.log")"
  fi

  name="$a: 20 new spliced connections through B, every byte verified"
  local out
  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 20 --bytes 16384 \
        --timeout 20 2>&1 | tail -n 1)
  if [ "$(summary_field "$out" ok)" = 20 ]; then
    pass "$name"
  else
    fail "$name" "$out"
  fi
  log "$a: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(pair_(takeovers|flows_installed|install_failures)|sync_updates_delivered|splices_completed)' | tr '\n' ' ')"
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-snat transparent}; do
  run_case "$addressing"
done
finish
