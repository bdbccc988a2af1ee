#!/usr/bin/env bash
# The proxy pair under attack on its sync channel (topology and node helpers in pair_lib.sh): a
# third namespace on the back bridge (the attacker, 10.N.2.66) sends
#   - replayed frames: genuine frames captured on B's back interface (AF_PACKET) while A
#     checkpointed 21 new connections, both directions: A's heartbeats and flow updates to B,
#     B's heartbeats and acknowledgements to A; resent verbatim to the node they were sent to;
#   - forged frames, built with the sync library and sealed with a wrong key (right key id) or
#     under an unknown key id: a heartbeat claiming ACTIVE with handover and epoch 1000000, a
#     flow upsert, a flow delete and a bulk request, impersonating each node to the other;
#   - garbage and a hand-made heartbeat with a bad MAC (pair_lib.sh's forge).
# Nothing may change: roles, epochs, takeovers, addresses, both flow tables, bulk transfers; every
# frame is counted under its reason in /metrics (replay, bad_mac, unknown_key, bad_magic); the
# connections open meanwhile verify every byte with zero resets.
TDM_PREFIX=${TDM_PREFIX:-tatk}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK SYNCFORGE
require_kernel
HB_MISS=${HB_MISS:-15}
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
WRONG_KEY=ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100

# capture_sync NS IFACE SECONDS OUT_AB OUT_BA: the UDP payloads between A_BACK and B_BACK on the
# sync port seen on IFACE in NS, one hex line per datagram, per direction; prints a summary of the
# first section's action of each frame (1 heartbeat, 2 updates, 5 bulk request, 7 ack).
capture_sync() {
  in_ns "$1" python3 - "$2" "$3" "$4" "$5" "$A_BACK" "$B_BACK" "$SYNC_PORT" <<'PY'
import socket, struct, sys, time, collections
iface, secs, out_ab, out_ba, ip_a, ip_b, port = sys.argv[1:8]
secs, port = float(secs), int(port)
# ETH_P_ALL: a socket bound to one protocol does not see the packets this host sends.
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((iface, 0))
s.settimeout(0.05)
open(out_ab + ".ready", "w").close()  # the caller starts the traffic only now
kinds = {"ab": collections.Counter(), "ba": collections.Counter()}
names = {1: "heartbeat", 2: "updates", 5: "bulk_request", 7: "ack"}
end = time.time() + secs
with open(out_ab, "w") as fab, open(out_ba, "w") as fba:
    while time.time() < end:
        try:
            pkt = s.recv(65535)
        except socket.timeout:
            continue
        if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        sport, dport, ulen = struct.unpack(">HHH", ip[ihl:ihl + 6])
        if sport != port or dport != port:
            continue
        payload = ip[ihl + 8:ihl + ulen]
        kind = names.get(payload[24], str(payload[24])) if len(payload) > 24 else "short"
        if (src, dst) == (ip_a, ip_b):
            fab.write(payload.hex() + "\n"); kinds["ab"][kind] += 1
        elif (src, dst) == (ip_b, ip_a):
            fba.write(payload.hex() + "\n"); kinds["ba"][kind] += 1
for d in ("ab", "ba"):
    print(d, " ".join(f"{k}={v}" for k, v in sorted(kinds[d].items())))
PY
}

snapshot() {  # snapshot NS: the state that must not change
  echo "role=$(role_of "$1") epoch=$(metric_in "$1" tandem_pair_epoch)" \
    "takeovers=$(metric_in "$1" tandem_pair_takeovers_total)" \
    "role_changes=$(metric_in "$1" tandem_pair_role_changes_total)" \
    "bulk=$(metric_in "$1" tandem_pair_bulk_transfers_total)" \
    "vip=$(has_addr "$1" front "$VIP" && echo held || echo none)"
}

flow_set() {  # flow_set NS: the sorted client legs of NS's table; fails if /flows never answers
  local out _
  for _ in 1 2 3; do  # /flows always starts with its header: empty means curl got no answer
    out=$(http_in "$1" '/flows?limit=100000') && [ -n "$out" ] && break
    out=""
  done
  [ -n "$out" ] || { echo "(no answer from /flows)"; return 1; }
  echo "$out" | grep -v '^#' | awk '{print $2, $3, $4}' | sort
}

rej() { metric_in "$1" tandem_sync_rejected_total "\"$2\""; }

run_case() {
  local a=$1 name
  TDM_ADDRESSING=$a
  log "==== addressing $a ===="
  if ! pair_topo || ! tcpcheck_servers; then
    fail "$a: topology and servers"
    topo_down
    return
  fi
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
  wait_for 5 is_role "$NS_PA" active
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  name="$a: A active, B standby and ready"
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PA" active && is_role "$NS_PB" standby; then
    pass "$name"
  else
    fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")"
    topo_down
    return
  fi

  # Genuine traffic to capture: 20 connections (then idle) and a stream open while we listen.
  capture_sync "$NS_PB" back 2 "$TDM_TMP/a2b.hex" "$TDM_TMP/b2a.hex" >"$TDM_TMP/capture.txt" &
  local cap_pid=$!
  wait_for 5 test -e "$TDM_TMP/a2b.hex.ready"
  bg_start conns-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 20 --bytes 65536 \
    --hold-ms 5000 --timeout 20
  local conns_pid=$BG_PID
  bg_start stream-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 6 \
    --rate 1048576 --timeout 20
  local stream_pid=$BG_PID
  wait "$cap_pid"
  local n_ab n_ba
  n_ab=$(wc -l <"$TDM_TMP/a2b.hex")
  n_ba=$(wc -l <"$TDM_TMP/b2a.hex")
  name="$a: captured genuine frames both ways: A's heartbeats and updates, B's heartbeats and acks"
  if grep -q '^ab .*heartbeat=' "$TDM_TMP/capture.txt" && grep -q '^ab .*updates=' "$TDM_TMP/capture.txt" &&
      grep -q '^ba .*heartbeat=' "$TDM_TMP/capture.txt" && grep -q '^ba .*ack=' "$TDM_TMP/capture.txt"; then
    pass "$name ($(tr '\n' ';' <"$TDM_TMP/capture.txt"))"
  else
    fail "$name" "$(cat "$TDM_TMP/capture.txt")"
  fi
  sleep 0.5  # the last checkpoints of the new connections settle

  local snap_a snap_b flows_a flows_b
  snap_a=$(snapshot "$NS_PA")
  snap_b=$(snapshot "$NS_PB")
  flows_a=$(flow_set "$NS_PA")
  flows_b=$(flow_set "$NS_PB")
  local -A before
  local ns r
  local -A before_total
  for ns in "$NS_PA" "$NS_PB"; do
    for r in replay bad_mac unknown_key bad_magic; do before[$ns.$r]=$(rej "$ns" "$r"); done
    before_total[$ns]=$(rejected "$ns")
  done

  log "$a: attacker replays $n_ab frames to B and $n_ba to A, forges 8 per node, sends garbage"
  in_ns "$NS_ATK" "$SYNCFORGE" replay --to "$B_BACK:$SYNC_PORT" --frames "$TDM_TMP/a2b.hex" >/dev/null
  in_ns "$NS_ATK" "$SYNCFORGE" replay --to "$A_BACK:$SYNC_PORT" --frames "$TDM_TMP/b2a.hex" >/dev/null
  local target node
  for target in "$B_BACK:1" "$A_BACK:2"; do
    node=${target#*:}
    for kid in 7 99; do
      in_ns "$NS_ATK" "$SYNCFORGE" forge --to "${target%:*}:$SYNC_PORT" --key "$WRONG_KEY" \
        --key-id "$kid" --node "$node" --client "$CLIENT_IP:40000" --vip "$VIP:80" \
        --backend "$BE1_IP:8080" >/dev/null
    done
  done
  forge "$NS_ATK" "$B_BACK"
  # Until each node has counted every frame sent to it (replays, 4 forged, B: 1 more forged and
  # the garbage), then a little longer so that an extra count would show.
  wait_for 5 rejected_reaches "$NS_PB" $(( ${before_total[$NS_PB]} + n_ab + 11 ))
  wait_for 5 rejected_reaches "$NS_PA" $(( ${before_total[$NS_PA]} + n_ba + 8 ))
  sleep 0.2

  local want
  for ns in "$NS_PA" "$NS_PB"; do
    local who=A n_replay=$n_ba extra=0
    [ "$ns" = "$NS_PB" ] && who=B n_replay=$n_ab extra=1
    name="$a: $who counts every attack frame under its reason"
    local got="" ok=1
    for r in replay bad_mac unknown_key bad_magic; do
      case $r in
        replay) want=$n_replay ;;
        bad_mac|unknown_key) want=$((4 + extra)) ;;
        bad_magic) want=$extra ;;
      esac
      local d=$(( $(rej "$ns" "$r") - ${before[$ns.$r]} ))
      got="$got $r=+$d(want $want)"
      [ "$d" -eq "$want" ] || ok=0
    done
    if [ "$ok" = 1 ]; then pass "$name:$got"; else fail "$name" "$got"; fi
  done

  name="$a: no state change: roles, epochs, takeovers, addresses, bulk transfers, flow tables"
  local after_a after_b after_flows_a after_flows_b
  after_a=$(snapshot "$NS_PA")
  after_b=$(snapshot "$NS_PB")
  after_flows_a=$(flow_set "$NS_PA")
  after_flows_b=$(flow_set "$NS_PB")
  if [ "$after_a" = "$snap_a" ] && [ "$after_b" = "$snap_b" ] &&
      [ "$after_flows_a" = "$flows_a" ] && [ "$after_flows_b" = "$flows_b" ] &&
      ! grep -q "$CLIENT_IP:40000 " <<<"$after_flows_b"; then
    pass "$name (A: $after_a; B: $after_b)"
  else
    fail "$name" "A before: $snap_a" "A after:  $after_a" "B before: $snap_b" "B after:  $after_b" \
      "flow tables: A $(wc -l <<<"$after_flows_a") (was $(wc -l <<<"$flows_a")), B $(wc -l <<<"$after_flows_b") (was $(wc -l <<<"$flows_b"))" \
      "A's flows, before -> after: $(diff <(echo "$flows_a") <(echo "$after_flows_a") | grep '^[<>]' | tr '\n' ';')" \
      "B's flows, before -> after: $(diff <(echo "$flows_b") <(echo "$after_flows_b") | grep '^[<>]' | tr '\n' ';')"
  fi

  wait "$conns_pid"
  local conns_rc=$?
  wait "$stream_pid"
  local stream_rc=$?
  local c s
  c=$(grep '^tcpcheck: conns=' "$TDM_TMP/conns-$a.log")
  s=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream-$a.log")
  name="$a: the connections open during the attack verify every byte, zero resets"
  if [ "$conns_rc" -eq 0 ] && [ "$stream_rc" -eq 0 ] && echo "$c" | grep -q 'conns=20 ok=20 failed=0 ' &&
      echo "$s" | grep -q 'conns=1 ok=1 failed=0 ' && [ "$(summary_field "$c" reset)" = 0 ] &&
      [ "$(summary_field "$s" reset)" = 0 ]; then
    pass "$name"
  else
    fail "$name" "conns (exit $conns_rc): $c" "stream (exit $stream_rc): $s"
  fi
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-transparent}; do
  run_case "$addressing"
done
finish
