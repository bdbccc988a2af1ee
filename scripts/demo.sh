#!/usr/bin/env bash
# The README's demo command: builds tandem, a namespace topology (client, proxy, two backends),
# starts tandemd in the proxy namespace, pushes verified traffic through it and prints a summary
# of what the traffic saw and what tandemd counted. Removes everything it created on exit.
#
# What it shows today: one proxy in passthrough mode (transparent addressing). The proxy pair
# and its failover are not built yet; this demo will grow to show them.
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
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
problems=0
bad() { echo "   !! $*"; problems=$((problems + 1)); }

say "topology: client $CLIENT_IP -> VIP $VIP (proxy) -> backends $BE1_IP, $BE2_IP"
require_kernel
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

say "summary"
drops=$(metric tandem_drops_total)
printf '   %-34s %s\n' \
  "HTTP downloads verified" "$http_ok/4 (8 MiB each)" \
  "concurrent connections verified" "$(summary_field "$conc" ok)/200" \
  "bytes verified (tcpcheck)" "$(( $(summary_field "$conc" bytes_verified) + $(summary_field "$stream" bytes_verified) ))" \
  "stream largest gap" "$(summary_field "$stream" max_gap_ms) ms" \
  "request/response p50 / p99" "$(summary_field "$rr" p50_us) / $(summary_field "$rr" p99_us) us" \
  "flows created by tandemd" "$(metric tandem_flows_created_total)" \
  "packets translated" "$(metric tandem_packets_total)" \
  "packets dropped (all reasons)" "$drops"
stop_tandemd || bad "tandemd did not exit cleanly or left rules behind"
echo "   tandemd (pid $tandemd_pid) stopped with SIGTERM; its iptables rules are gone"
if [ "$problems" -eq 0 ]; then
  echo; echo "demo: OK"
else
  echo; echo "demo: $problems problem(s), see above"; exit 1
fi
