#!/usr/bin/env bash
# The README's demo command: builds tandem, then, in network namespaces it creates (and removes
# on exit), pushes real kernel TCP with every byte verified through:
#   part 1: one proxy (tandemd, passthrough mode, transparent addressing): HTTP downloads, 200
#           concurrent connections, a stream and request/response traffic;
#   part 2: the proxy pair (tests/integration/pair_lib.sh): two tandemd, A active and B standby,
#           syncing every flow; while 100 connections and a stream run through them, a planned
#           switchover (tandemctl switchover) moves the VIP to B and back, then A is killed
#           (SIGKILL) and B takes over the VIP without the client reconnecting.
# It ends with a summary of what was measured.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: run as root (it creates network namespaces and runs tandemd)" >&2
  exit 1
fi
bash scripts/setup.sh release || exit 1

root=$(pwd)
export TANDEMD=$root/build/release/proxy/tandemd/tandemd
export TANDEMCTL=$root/build/release/proxy/tandemd/tandemctl
export TCPCHECK=$root/build/release/tests/tools/tcpcheck
export TCPINJECT=$root/build/release/tests/tools/tcpinject
export TDM_PREFIX=demo
# shellcheck source=../tests/integration/lib.sh
source tests/integration/lib.sh
# shellcheck source=../tests/integration/pair_lib.sh
source tests/integration/pair_lib.sh
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
problems=0
bad() { echo "   !! $*"; problems=$((problems + 1)); }

require_kernel
echo
echo "######## part 1: one proxy ########"
say "topology: client $CLIENT_IP -> VIP $VIP (proxy) -> backends $BE1_IP, $BE2_IP"
topo_up transparent || { echo "topology failed"; exit 1; }

# Backends: a tcpcheck server (port 8080) and a stock HTTP server (port 8000) on each.
tcpcheck_servers || { echo "tcpcheck servers did not start"; exit 1; }
mkdir -p "$TDM_TMP/www"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$TDM_TMP/www/file.bin"
want_sha=$(sha256sum "$TDM_TMP/www/file.bin" | cut -d' ' -f1)
for be in "$NS_BE1:$BE1_IP" "$NS_BE2:$BE2_IP"; do
  ns=${be%%:*} ip=${be#*:}
  bg_start "http-$ns" "$ns" python3 -m http.server 8000 --bind "$ip" --directory "$TDM_TMP/www"
done
wait_listen "$NS_BE1" "$BE1_IP:8000" && wait_listen "$NS_BE2" "$BE2_IP:8000" ||
  { echo "HTTP servers did not start"; exit 1; }

conf=$TDM_TMP/tandemd.conf
write_config "$conf" --extra "$(service_section http "$VIP:8000" "$BE1_IP:8000 $BE2_IP:8000")"
say "tandemd --config $conf"
sed 's/^/   | /' "$conf"
start_tandemd "$conf" || { echo "tandemd did not start"; cat "$TDM_TANDEMD_LOG"; exit 1; }
tandemd_pid=$TDM_TANDEMD_PID

say "HTTP: 4 x curl http://$VIP:8000/file.bin (8 MiB, stock curl and python http.server)"
http_ok=0
for i in 1 2 3 4; do
  got=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 30 "http://$VIP:8000/file.bin" |
        sha256sum | cut -d' ' -f1)
  if [ "$got" = "$want_sha" ]; then http_ok=$((http_ok + 1)); else bad "download $i: sha256 mismatch"; fi
done
echo "   $http_ok/4 downloads matched sha256 $want_sha"

say "200 concurrent connections, 256 KiB each way, every byte verified"
conc=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 200 --bytes 262144 2>&1 |
       tail -n 1)
echo "   $conc"
[ "$(summary_field "$conc" failed)" = 0 ] || bad "concurrent connections failed"

say "one verified stream both ways for 5 s"
stream=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 5 \
         --rate 0 2>&1 | tail -n 1)
echo "   $stream"
[ "$(summary_field "$stream" failed)" = 0 ] || bad "stream failed"

say "request/response: 2000 round trips of 64 bytes"
rr=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --count 2000 --size 64 2>&1 |
     tail -n 1)
echo "   $rr"

say "what tandemd saw (tandemctl counters, non-zero)"
in_ns "$NS_PRX" "$TANDEMCTL" --metrics "$METRICS_ADDR" counters 2>&1 | awk 'NF && $NF != 0' |
  sed 's/^/   /'

# Part 1's numbers, read while tandemd still runs.
p1_conc_ok=$(summary_field "$conc" ok)
p1_bytes=$(( $(summary_field "$conc" bytes_verified) + $(summary_field "$stream" bytes_verified) ))
p1_gap=$(summary_field "$stream" max_gap_ms)
p1_rr="$(summary_field "$rr" p50_us) / $(summary_field "$rr" p99_us) us"
p1_flows=$(metric tandem_flows_created_total)
p1_packets=$(metric tandem_packets_total)
p1_drops=$(metric tandem_drops_total)
if stop_tandemd; then
  echo "   tandemd (pid $tandemd_pid) stopped with SIGTERM; its iptables rules are gone"
else
  bad "tandemd did not exit cleanly or left rules behind"
fi
topo_down

# ---------------------------------------------------------------------------------------------
echo
echo "######## part 2: the proxy pair and a failover ########"
# Both nodes under SCHED_FIFO (daemon.realtime_priority), as docs/pair_sync.md advises for
# 20 ms heartbeats: on a busy machine a normal-priority node can miss five in a row.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
TDM_ADDRESSING=transparent
back=$(pair_group_back)
say "topology: two proxies, A and B, between the same client and backends"
cat <<EOF
                                  front bridge | back bridge
   client $(printf '%-15s' "$CLIENT_IP") --+-- A $(printf '%-12s' "$A_FRONT") | $(printf '%-12s' "$A_BACK") --+-- backend  $BE1_IP
                            +-- B $(printf '%-12s' "$B_FRONT") | $(printf '%-12s' "$B_BACK") --+-- backend  $BE2_IP
                                                                +-- attacker $ATTACKER_IP
   The active node holds the group: VIP $VIP (front) and, on the back, the backends'
   gateway $back.
   A sends B heartbeats and a copy of every flow over the back link (UDP $SYNC_PORT, HMAC-SHA256);
   when the heartbeats stop, B takes the group over (netlink, then gratuitous ARP).
EOF
pair_topo || { echo "pair topology failed"; exit 1; }
tcpcheck_servers || { echo "tcpcheck servers did not start"; exit 1; }
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
say "node A's [sync] section (B's differs in node_id, priority, bind and peer; same services)"
sed -n '/^\[sync\]/,$p' "$TDM_TMP/a.conf" | sed 's/^/   | /'
grep '^realtime_priority' "$TDM_TMP/a.conf" | sed 's/^/   | ([daemon]) /'

say "A starts alone: it hears no peer, becomes active and takes the group"
start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
a_pid=$NODE_PID
if wait_for 5 is_role "$NS_PA" active && has_addr "$NS_PA" front "$VIP" &&
    has_addr "$NS_PA" back "$back"; then
  echo "   A (pid $a_pid): role active, holds $VIP and $back"
else
  echo "A did not become active (role '$(role_of "$NS_PA")')"
  tail -n 20 "$TDM_TMP/tandemd-a.log"
  exit 1
fi

say "B starts: it hears A, stays standby, pulls A's flow table (bulk resync) and reports ready"
start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
b_pid=$NODE_PID
if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby && ! has_addr "$NS_PB" front "$VIP"
then
  echo "   B (pid $b_pid): role standby, ready, holds no address"
else
  echo "B did not become a ready standby (role '$(role_of "$NS_PB")')"
  tail -n 20 "$TDM_TMP/tandemd-b.log"
  exit 1
fi

say "an attacker on the back link sends B 3 forged sync frames"
echo "   (garbage; a heartbeat claiming to be A, active, huge epoch, bad MAC; an unknown key id)"
rej0=$(rejected "$NS_PB")
forge "$NS_ATK" "$B_BACK"
sleep 0.3
rej1=$(rejected "$NS_PB")
echo "   B rejected $((rej1 - rej0)) of 3 (bad_magic" \
  "$(metric_in "$NS_PB" tandem_sync_rejected_total bad_magic), bad_mac" \
  "$(metric_in "$NS_PB" tandem_sync_rejected_total bad_mac), unknown_key" \
  "$(metric_in "$NS_PB" tandem_sync_rejected_total unknown_key));" \
  "roles unchanged: A $(role_of "$NS_PA"), B $(role_of "$NS_PB")"
{ [ $((rej1 - rej0)) -eq 3 ] && is_role "$NS_PB" standby; } ||
  bad "the forged frames were not all rejected, or B's role changed"

CONNS=100
say "traffic through A: $CONNS connections and one stream, every byte verified"
echo "   each connection sends and checks 64 KiB each way, stays open 9 s, then closes;"
echo "   the stream runs both ways at 1 MiB/s for 11 s"
bg_start pair-conns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$CONNS" \
  --bytes 65536 --hold-ms 9000 --timeout 20
conns_pid=$BG_PID
bg_start pair-stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 11 \
  --rate 1048576 --timeout 20
stream_pid=$BG_PID
sleep 2.5
a_flows=$(http_in "$NS_PA" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
b_flows=$(http_in "$NS_PB" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:")
echo "   client flows in A's table: $a_flows; synced copies in B's: $b_flows"
[ "$b_flows" -ge $((CONNS + 1)) ] || bad "B does not hold all the client flows before the crash"

ctl() { local ns=$1; shift; in_ns "$ns" "$TANDEMCTL" --metrics "$METRICS_ADDR" "$@"; }
peer_ready_in() { ctl "$1" peer 2>/dev/null | grep -qE '^ready +yes$'; }
say "planned switchover: 'tandemctl peer' then 'tandemctl switchover' on A, later back from B"
ctl "$NS_PA" peer | sed 's/^/   A> tandemctl peer | /'
switchovers_ok=0
switch_holds=""
for hop in "$NS_PA:A:$NS_PB:B" "$NS_PB:B:$NS_PA:A"; do
  IFS=: read -r from_ns from to_ns to <<<"$hop"
  wait_for 10 is_ready "$to_ns" && wait_for 2 peer_ready_in "$from_ns"
  out=$(ctl "$from_ns" switchover 2>&1)
  echo "   $from> tandemctl switchover"
  echo "$out" | sed 's/^/   | /'
  if echo "$out" | grep -q '^switchover complete' && is_role "$to_ns" active &&
      has_addr "$to_ns" front "$VIP" && ! has_addr "$from_ns" front "$VIP"; then
    switchovers_ok=$((switchovers_ok + 1))
    switch_holds="$switch_holds $(echo "$out" | sed -n 's/.*data path held \([0-9.]*\) ms.*/\1/p') ms"
    echo "   $to now holds $VIP; $from is a standby and resyncs from $to"
  else
    bad "switchover $from -> $to did not complete"
  fi
done
wait_for 10 is_ready "$NS_PB"

detect_ms=$(awk -v i="$HB_INTERVAL" -v m="$HB_MISS" 'BEGIN { printf "%.0f", i * m * 1000 }')
say "crash: SIGKILL to A (pid $a_pid) mid-traffic, then A's links go down"
t0=$(date +%s%N)
crash_node "$a_pid" "$NS_PA"
takeover_ms=
if wait_for 5 has_addr "$NS_PB" front "$VIP"; then
  t1=$(date +%s%N)
  takeover_ms=$(( (t1 - t0) / 1000000 ))
fi
if [ -n "$takeover_ms" ] && wait_for 5 is_role "$NS_PB" active && has_addr "$NS_PB" back "$back"
then
  echo "   B is active and holds $VIP and $back, seen $takeover_ms ms after the SIGKILL"
  echo "   (B declares A dead once it has heard nothing for $HB_MISS heartbeat intervals = $detect_ms ms"
  echo "   since A's last heartbeat, which can precede the SIGKILL; polled every 50 ms)"
else
  bad "B did not take over (role '$(role_of "$NS_PB")')"
fi

say "the same connections finish through B (the client never reconnects)"
wait "$conns_pid"; conns_rc=$?
wait "$stream_pid"; stream_rc=$?
pconns=$(grep '^tcpcheck: conns=' "$TDM_TMP/pair-conns.log")
pstream=$(grep '^tcpcheck: conns=' "$TDM_TMP/pair-stream.log")
echo "   connections: $pconns"
echo "   stream:      $pstream"
if [ "$conns_rc" -ne 0 ] || [ "$(summary_field "$pconns" failed)" != 0 ]; then
  bad "held connections failed (exit $conns_rc)"
  tail -n 5 "$TDM_TMP/pair-conns.log" | sed 's/^/   | /'
fi
if [ "$stream_rc" -ne 0 ] || [ "$(summary_field "$pstream" failed)" != 0 ]; then
  bad "stream failed (exit $stream_rc)"
  tail -n 5 "$TDM_TMP/pair-stream.log" | sed 's/^/   | /'
fi

say "what B counted (pair and sync counters, non-zero)"
http_in "$NS_PB" /metrics | grep -E '^tandem_(pair|sync)_[a-z_]*_total' | awk '$NF != 0' |
  sed 's/^/   /'
echo "   (flows_installed: flows B received from A and installed, ready for the takeover;"
echo "    updates_sent/resent: B, now active, checkpoints to its peer, which is gone)"
b_installed=$(metric_in "$NS_PB" tandem_pair_flows_installed_total)
b_install_failures=$(metric_in "$NS_PB" tandem_pair_install_failures_total)
b_rejected=$(rejected "$NS_PB")
if stop_node "$b_pid" "$NS_PB"; then
  echo "   B (pid $b_pid) stopped with SIGTERM; its iptables rules are gone"
else
  bad "B did not exit cleanly or left rules behind"
fi

# ---------------------------------------------------------------------------------------------
say "summary"
row() { printf '     %-38s %s\n' "$@"; }
echo "   part 1: one proxy"
row "HTTP downloads verified (sha256)" "$http_ok/4 (8 MiB each)" \
  "concurrent connections verified" "$p1_conc_ok/200" \
  "bytes verified (tcpcheck)" "$p1_bytes" \
  "stream largest gap" "$p1_gap ms" \
  "request/response p50 / p99" "$p1_rr" \
  "flows created by tandemd" "$p1_flows" \
  "packets translated" "$p1_packets" \
  "packets dropped (all reasons)" "$p1_drops"
echo "   part 2: the proxy pair, a planned switchover there and back, then A killed mid-traffic"
row "planned switchovers (A->B, B->A)" "$switchovers_ok/2, data path held${switch_holds:- -}" \
  "connections reset (whole of part 2)" "$(( $(summary_field "$pconns" reset) + $(summary_field "$pstream" reset) ))" \
  "connections that survived the crash" "$(summary_field "$pconns" ok)/$CONNS" \
  "stream survived the crash" "$(summary_field "$pstream" ok)/1" \
  "bytes verified (tcpcheck)" "$(( $(summary_field "$pconns" bytes_verified) + $(summary_field "$pstream" bytes_verified) ))" \
  "stream largest gap (max_gap_ms)" "$(summary_field "$pstream" max_gap_ms) ms" \
  "time until B held the VIP" "${takeover_ms:-never} ms after the SIGKILL" \
  "B: flows installed from sync" "$b_installed (install failures: $b_install_failures)" \
  "B: sync frames rejected" "$b_rejected (the attacker forged 3)"
if [ "$problems" -eq 0 ]; then
  echo; echo "demo: OK"
else
  echo; echo "demo: $problems problem(s), see above"; exit 1
fi
