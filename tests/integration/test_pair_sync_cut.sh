#!/usr/bin/env bash
# Heartbeats on two paths (issue 4): the sync link and the front network (sync.front_bind /
# front_peer). Topology: pair_lib.sh (passthrough, SNAT, two backends); the sync link runs over
# the back bridge, the front heartbeats over the client's bridge.
#
#   - A active, B a ready standby, both paths alive on both nodes; the active's GARP refresh;
#     forged front heartbeats from the client's namespace are counted and change nothing;
#   - the sync link cut while both live (UDP to and from the sync port dropped in B's
#     namespace, for 1.5 s = 7 dead intervals): no takeover, B stays standby without
#     addresses, both nodes count the loss of the sync path, A stops deferring (the acks cannot
#     come), held connections and a stream keep going through A, new connections complete;
#   - the link restored: the sync path is alive again, B catches up (holds A's flows), every
#     connection verifies every byte;
#   - both paths cut: B takes over too (two actives); restored: one deterministic winner (the
#     newer epoch: B's) and the loser withdraws its addresses at once.
TDM_PREFIX=${TDM_PREFIX:-tpsc}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# A 200 ms dead interval: a loop stalled by a busy machine is not taken for a dead peer.
HB_MISS=10
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
command -v iptables >/dev/null || skip_all "iptables not installed"

# cut NS PORT / heal NS PORT: drop (or stop dropping) UDP to and from PORT in NS.
cut() {
  in_ns "$1" iptables -I INPUT -p udp --dport "$2" -j DROP &&
    in_ns "$1" iptables -I OUTPUT -p udp --dport "$2" -j DROP
}
heal() {
  in_ns "$1" iptables -D INPUT -p udp --dport "$2" -j DROP &&
    in_ns "$1" iptables -D OUTPUT -p udp --dport "$2" -j DROP
}
path_alive() { metric_in "$1" tandem_pair_path_alive "path=\"$2\""; }
both_paths() { [ "$(path_alive "$1" sync)" = 1 ] && [ "$(path_alive "$1" front)" = 1 ]; }
flows_of() { http_in "$1" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:"; }
same_flows() { [ "$(flows_of "$NS_PA")" -eq "$(flows_of "$NS_PB")" ]; }
holds_vip() { has_addr "$1" front "$VIP"; }

TDM_ADDRESSING=snat
pair_topo || { fail "topology set up"; finish; }
tcpcheck_servers || { fail "tcpcheck servers listen"; finish; }
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK" "$A_FRONT" "$B_FRONT"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK" "$B_FRONT" "$A_FRONT"
for f in a b; do printf 'garp_refresh_ms = 100\n' >>"$TDM_TMP/$f.conf"; done  # [sync] is last
start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
A_PID=$NODE_PID
wait_for 5 is_role "$NS_PA" active
start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
B_PID=$NODE_PID

name="A active, B ready standby; both nodes hear each other on both paths"
if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby && is_role "$NS_PA" active &&
    wait_for 2 both_paths "$NS_PA" && both_paths "$NS_PB"; then
  pass "$name"
else
  fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")"
fi

name="GARP refresh (100 ms): the active sends refresh rounds, 2 frames each; the standby none"
r0=$(metric_in "$NS_PA" tandem_pair_garp_refresh_rounds_total)
refreshed() { [ "$(metric_in "$NS_PA" tandem_pair_garp_refresh_rounds_total)" -ge $((r0 + 3)) ]; }
# One scrape: rounds and frames from the same moment (two addresses in the group).
snap=$(http_in "$NS_PA" /metrics)
rounds=$(echo "$snap" | awk '$1 == "tandem_pair_garp_rounds_total" {print $2}')
frames=$(echo "$snap" | awk '$1 == "tandem_pair_garp_frames_sent_total" {print $2}')
if wait_for 3 refreshed && [ -n "$rounds" ] && [ "$frames" = $((2 * rounds)) ] &&
    [ "$(metric_in "$NS_PB" tandem_pair_garp_rounds_total)" = 0 ]; then
  pass "$name ($rounds rounds, $frames frames so far)"
else
  fail "$name" "A: refresh rounds $r0 -> $(metric_in "$NS_PA" tandem_pair_garp_refresh_rounds_total), $rounds rounds, $frames frames; B: $(metric_in "$NS_PB" tandem_pair_garp_rounds_total) rounds"
fi

name="forged front heartbeats (garbage, bad MAC claiming node 1 active, unknown key): counted, no effect"
rej0=$(metric_in "$NS_PB" tandem_front_rejected_total)
epoch0=$(metric_in "$NS_PB" tandem_pair_epoch)
in_ns "$NS_CLI" python3 - "$B_FRONT" "$FRONT_PORT" <<'PYEOF'
import socket, struct, sys
dst = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"\xde\xad" * 30, dst)
hb = struct.pack(">BBBBIII", 1, 255, 1, 0, 100000, 0, 20)
sec = struct.pack(">BBH", 1, len(hb) // 4, 1) + hb
for key_id in (7, 99):
    hdr = struct.pack(">HBBHHQII", 0x5453, 1, 0, key_id, len(sec), 2**62, 1, 100000)
    s.sendto(hdr + sec + b"\x00" * 16, dst)
PYEOF
front_rejected() { [ "$(metric_in "$NS_PB" tandem_front_rejected_total)" -ge $((rej0 + 3)) ]; }
if wait_for 2 front_rejected && is_role "$NS_PB" standby && is_role "$NS_PA" active &&
    [ "$(metric_in "$NS_PB" tandem_pair_epoch)" = "$epoch0" ] &&
    [ "$(metric_in "$NS_PB" tandem_front_rejected_total 'bad_mac')" -ge 1 ]; then
  pass "$name"
else
  fail "$name" "front rejects $rej0 -> $(metric_in "$NS_PB" tandem_front_rejected_total)"
fi

bg_start conns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 30 --bytes 65536 \
  --hold-ms 5000 --timeout 20
CONNS_PID=$BG_PID
bg_start stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 6 \
  --rate 1048576 --timeout 20
STREAM_PID=$BG_PID
sleep 1

log "cutting the sync link (UDP port $SYNC_PORT dropped in B's namespace) for 1.5 s"
losses_b=$(metric_in "$NS_PB" tandem_pair_path_losses_total 'path="sync"')
changes_b=$(metric_in "$NS_PB" tandem_pair_role_changes_total)
cut "$NS_PB" "$SYNC_PORT"
sleep 1.5

name="sync link cut: no takeover, B standby without the VIP, sync-path loss counted on both"
if is_role "$NS_PB" standby && is_role "$NS_PA" active && ! holds_vip "$NS_PB" &&
    [ "$(metric_in "$NS_PB" tandem_pair_role_changes_total)" = "$changes_b" ] &&
    [ "$(path_alive "$NS_PB" sync)" = 0 ] && [ "$(path_alive "$NS_PB" front)" = 1 ] &&
    [ "$(path_alive "$NS_PA" sync)" = 0 ] && [ "$(path_alive "$NS_PA" front)" = 1 ] &&
    [ "$(metric_in "$NS_PB" tandem_pair_path_losses_total 'path="sync"')" -gt "$losses_b" ] &&
    [ "$(metric_in "$NS_PA" tandem_pair_path_losses_total 'path="sync"')" -ge 1 ]; then
  pass "$name"
else
  fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")" \
    "B paths sync $(path_alive "$NS_PB" sync) front $(path_alive "$NS_PB" front)"
fi

name="sync link cut: A does not defer (no acks can come); 10 new connections complete"
tmo0=$(metric_in "$NS_PA" tandem_pair_deferred_timeouts_total)
out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 10 --bytes 4096 \
      --timeout 10 2>&1 | tail -n 1)
tmo=$(( $(metric_in "$NS_PA" tandem_pair_deferred_timeouts_total) - tmo0 ))
if [ "$(metric_in "$NS_PA" tandem_pair_deferral)" = 0 ] && [ "$tmo" -eq 0 ] &&
    [ "$(summary_field "$out" ok)" = 10 ]; then
  pass "$name"
else
  fail "$name" "$out" "deferral $(metric_in "$NS_PA" tandem_pair_deferral), timeouts $tmo"
fi

log "restoring the sync link"
heal "$NS_PB" "$SYNC_PORT"
name="sync link restored: both paths alive, B standby and holding A's flows again"
if wait_for 3 both_paths "$NS_PB" && wait_for 5 same_flows && is_role "$NS_PB" standby &&
    wait_for 5 is_ready "$NS_PB"; then
  pass "$name (A $(flows_of "$NS_PA") flows, B $(flows_of "$NS_PB"))"
else
  fail "$name" "A $(flows_of "$NS_PA") flows, B $(flows_of "$NS_PB"), B $(role_of "$NS_PB")"
fi

wait "$CONNS_PID"
conns_rc=$?
wait "$STREAM_PID"
stream_rc=$?
conns_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/conns.log")
stream_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream.log")
name="the 30 held connections and the stream lived through the cut, every byte verified"
if [ "$conns_rc" -eq 0 ] && echo "$conns_out" | grep -q 'conns=30 ok=30 failed=0 ' &&
    [ "$stream_rc" -eq 0 ] && echo "$stream_out" | grep -q 'conns=1 ok=1 failed=0 '; then
  pass "$name (stream max_gap_ms=$(summary_field "$stream_out" max_gap_ms))"
else
  fail "$name" "$conns_out" "$stream_out"
fi

log "cutting both paths: B takes over as well (two actives)"
cut "$NS_PB" "$SYNC_PORT"
cut "$NS_PB" "$FRONT_PORT"
name="both paths cut: B takes over, both active"
if wait_for 3 is_role "$NS_PB" active && is_role "$NS_PA" active && wait_for 2 holds_vip "$NS_PB"
then
  pass "$name"
else
  fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")"
fi
heal "$NS_PB" "$SYNC_PORT"
heal "$NS_PB" "$FRONT_PORT"
name="paths restored: one winner (the newer epoch), the loser withdraws its addresses at once"
one_active() {
  local ra rb
  ra=$(role_of "$NS_PA")
  rb=$(role_of "$NS_PB")
  [ "$ra" = active ] && [ "$rb" = standby ] && return 0
  [ "$ra" = standby ] && [ "$rb" = active ]
}
if wait_for 3 one_active; then
  if is_role "$NS_PB" active; then win=$NS_PB lose=$NS_PA loser=a; else win=$NS_PA lose=$NS_PB loser=b; fi
  if holds_vip "$win" && ! holds_vip "$lose" && ! has_addr "$lose" back "$(pair_group_back)" &&
      grep -q "two actives" "$TDM_TMP/tandemd-$loser.log" &&
      [ $(( $(metric_in "$win" tandem_pair_active_conflicts_total) +
            $(metric_in "$lose" tandem_pair_active_conflicts_total) )) -ge 1 ]; then
    # B took over last and has the newer epoch, unless A's loop stalled past the dead interval
    # after stepping down and A took over once more (then A's epoch is newer): both are right.
    # The conflict is counted by whichever node saw the other's active heartbeat first: when the
    # loser steps down before its own active heartbeat reaches the winner, only the loser counts it.
    pass "$name (winner ${win##*-}, epoch $(metric_in "$win" tandem_pair_epoch))"
  else
    fail "$name" "winner ${win##*-} holds VIP: $(holds_vip "$win" && echo yes || echo no)" \
      "loser ${lose##*-} holds VIP: $(holds_vip "$lose" && echo yes || echo no)"
  fi
else
  fail "$name" "A: $(role_of "$NS_PA"), B: $(role_of "$NS_PB")"
fi
name="after the conflict: the loser resyncs and becomes a ready standby; new connections work"
out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 10 --bytes 4096 \
      --timeout 10 2>&1 | tail -n 1)
if [ -n "${lose:-}" ] && wait_for 5 is_ready "$lose" && is_role "$lose" standby &&
    [ "$(summary_field "$out" ok)" = 10 ]; then
  pass "$name"
else
  fail "$name" "$out" "loser ${lose:-none}: $(role_of "${lose:-$NS_PA}")"
fi
topo_down
finish
