#!/usr/bin/env bash
# The proxy pair end to end: two tandemd with [sync], A active and B standby, on the client's
# front bridge and the backends' back bridge; the sync link runs over the back bridge.
#
#   client 10.N.1.2 --+-- brf --+-- A front 10.N.1.11   A back 10.N.2.11 --+-- brb --+-- be1 10.N.2.2
#                                +-- B front 10.N.1.12   B back 10.N.2.12 --+         +-- be2 10.N.2.3
#                                                                            +-- attacker 10.N.2.66
#   The group that moves with the active role: front VIP 10.N.1.100/32 and, on the back side,
#   the SNAT address 10.N.2.10/32 (snat) or the backends' gateway 10.N.2.1/32 (transparent).
#   The topology and the node helpers live in pair_lib.sh (scripts/demo.sh uses them too).
#
# For each addressing (snat, then transparent):
#   - A takes the group (no peer heard), B starts, bulk-resyncs and reports ready as standby;
#   - forged sync frames from the attacker (garbage, a bad MAC claiming to be A with a huge epoch,
#     an unknown key id) change nothing on B and are counted;
#   - 100 concurrent verified connections held open plus one paced stream; B holds their flows;
#   - A is killed (SIGKILL) and its links taken down: B becomes active, holds the VIP, every
#     connection verifies every byte through B, and the stream's max_gap_ms is reported.
TDM_PREFIX=${TDM_PREFIX:-tpair}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
CONNS=100

run_case() {
  local a=$1 name
  TDM_ADDRESSING=$a
  log "==== addressing $a ===="
  pair_servers_up "$a" || return
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  local back
  back=$(pair_group_back)

  name="$a: A starts alone, becomes active and holds the group (VIP + $back)"
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
  local a_pid=$NODE_PID
  if wait_for 5 is_role "$NS_PA" active && has_addr "$NS_PA" front "$VIP" &&
      has_addr "$NS_PA" back "$back"; then
    pass "$name"
  else
    fail "$name" "A's role: '$(role_of "$NS_PA")'"
    topo_down
    return
  fi

  name="$a: B starts, stays standby, bulk-resyncs and reports ready; holds no address"
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby &&
      ! has_addr "$NS_PB" front "$VIP" && ! has_addr "$NS_PB" back "$back"; then
    pass "$name"
  else
    fail "$name" "B's role: '$(role_of "$NS_PB")', ready $(metric_in "$NS_PB" tandem_pair_ready)"
  fi

  name="$a: forged sync frames (garbage, bad MAC as node 1, unknown key) are counted, no effect"
  local rej_before epoch_before rej_after
  rej_before=$(rejected "$NS_PB")
  epoch_before=$(metric_in "$NS_PB" tandem_pair_epoch)
  forge "$NS_ATK" "$B_BACK"
  wait_for 3 rejected_reaches "$NS_PB" $((rej_before + 3))
  sleep 0.1  # a fourth count would show here
  rej_after=$(rejected "$NS_PB")
  if [ $((rej_after - rej_before)) -eq 3 ] && is_role "$NS_PB" standby &&
      is_role "$NS_PA" active && [ "$(metric_in "$NS_PB" tandem_pair_epoch)" = "$epoch_before" ] &&
      [ "$(metric_in "$NS_PB" tandem_sync_rejected_total bad_mac)" -ge 1 ] &&
      [ "$(metric_in "$NS_PB" tandem_sync_rejected_total unknown_key)" -ge 1 ] &&
      [ "$(metric_in "$NS_PB" tandem_sync_rejected_total bad_magic)" -ge 1 ]; then
    pass "$name"
  else
    fail "$name" "rejected rose by $((rej_after - rej_before)) (want 3)" \
      "B: $(role_of "$NS_PB"), A: $(role_of "$NS_PA")"
  fi

  # 100 connections: exchange 64 KiB each way, stay idle 7 s, then close (through B by then).
  bg_start conns-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$CONNS" \
    --bytes 65536 --hold-ms 7000 --timeout 20
  local conns_pid=$BG_PID
  bg_start stream-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 9 \
    --rate 1048576 --timeout 20
  local stream_pid=$BG_PID
  sleep 2.5

  name="$a: B holds the $((CONNS + 1)) client flows before the crash"
  local a_flows b_flows
  a_flows=$(http_in "$NS_PA" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
  b_flows=$(http_in "$NS_PB" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
  if [ "$b_flows" -ge $((CONNS + 1)) ] && [ "$b_flows" -eq "$a_flows" ]; then
    pass "$name (A $a_flows, B $b_flows)"
  else
    fail "$name" "A has $a_flows, B has $b_flows"
  fi

  log "$a: killing A (SIGKILL) and taking its links down"
  local t0 t1
  t0=$(date +%s%N)
  crash_node "$a_pid" "$NS_PA"

  name="$a: B becomes active and holds the VIP and $back"
  if wait_for 5 is_role "$NS_PB" active && wait_for 2 has_addr "$NS_PB" front "$VIP" &&
      has_addr "$NS_PB" back "$back"; then
    t1=$(date +%s%N)
    pass "$name (seen after $(( (t1 - t0) / 1000000 )) ms by polling)"
  else
    fail "$name" "B's role: '$(role_of "$NS_PB")'"
  fi

  check_survivors "$a: after the crash" "$CONNS" "$conns_pid" "$stream_pid" \
    "$TDM_TMP/conns-$a.log" "$TDM_TMP/stream-$a.log"

  name="$a: forged frames at the new active are counted and change nothing"
  rej_before=$(rejected "$NS_PB")
  epoch_before=$(metric_in "$NS_PB" tandem_pair_epoch)
  forge "$NS_ATK" "$B_BACK"
  wait_for 3 rejected_reaches "$NS_PB" $((rej_before + 3))
  sleep 0.1  # a fourth count would show here
  rej_after=$(rejected "$NS_PB")
  if [ $((rej_after - rej_before)) -eq 3 ] && is_role "$NS_PB" active &&
      [ "$(metric_in "$NS_PB" tandem_pair_epoch)" = "$epoch_before" ] &&
      has_addr "$NS_PB" front "$VIP"; then
    pass "$name"
  else
    fail "$name" "rejected rose by $((rej_after - rej_before)) (want 3), B: $(role_of "$NS_PB")"
  fi
  log "$a: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(pair_(takeovers|flows_installed|install_failures)|sync_updates_delivered)' | tr '\n' ' ')"
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-snat transparent}; do
  run_case "$addressing"
done
finish
