#!/usr/bin/env bash
# RSTs at high connection rates through a splice (or passthrough) service, captured on both legs
# of the proxy.
#
# tests/integration/lib.sh topology (client - proxy - backend), transparent addressing, one
# service VIP:8085 -> backend:8085 (tandemd from the build, NFQUEUE only unless FASTPATH=on), the
# client's sysctls as in system_bench.sh (tcp_tw_reuse=1, ports 10000-65000). tcpdump runs in the
# proxy namespace on `front` (the client leg, before tandem for client packets, after it for the
# proxy's) and on `back` (the backend leg, likewise), then one `tcpcheck --connect-rate` run.
# bench/rst_classify.py DIR reads the result: who sent each RST, what provoked it, and how the
# tracker judged it (docs/rst-after-close.md); with --order, how many connections the proxy sent
# out of order on either leg (docs/fastpath.md, "Reordering at install").
#
# Usage (root):  bench/rst_capture.sh
# Environment:   WORKERS=256 DURATION=3 OUT=bench/out/rst-<date>
#                MODE=splice (passthrough: the service's mode = passthrough; dnat: no tandemd,
#                an iptables DNAT rule of the VIP to the backend in the proxy, conntrack's
#                baseline, as system_bench.sh's dnat path)
#                FASTPATH=off (on: daemon.fastpath = on, the kernel fast path, docs/fastpath.md)
#                FP_SPLICE=off (on, with FASTPATH=on: daemon.fastpath_splice = on, the backend's
#                SYN-ACK answered in the kernel)
#                FP_BIND=off (on, with FASTPATH=on: daemon.fastpath_bind = on, the client's cookie
#                ACK turned into the backend SYN in the kernel)
#                FP_REDIRECT=off (on, with FASTPATH=on: daemon.fastpath_redirect = on, translated
#                packets sent straight out of the routed interface, past the IP stack)
#                RUNS=1 (more: that many tcpcheck runs in a row, each after the first with a
#                new tandemd, which meets the previous one's tuples in TIME_WAIT at the client;
#                metrics and /flows are the last tandemd's)
#                SYSCALLS=0 (1: perf stat counts tandemd's system calls during the run, into
#                syscalls.txt; needs perf; with RUNS, the first run's)
#                TANDEMD=... TCPCHECK=... (default: build/release binaries)
# Output in OUT: front.pcap back.pcap (128-byte snaps), metrics before and after (m0.prom,
# m1.prom), /flows after (flows.txt), the proxy's nfnetlink_queue line (nfq.txt), tcpcheck's
# line (cr.txt), load averages (load), the addresses (addrs) and tandemd's log.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-256}
DURATION=${DURATION:-3}
OUT=${OUT:-$ROOT/bench/out/rst-$(date +%Y%m%d-%H%M%S)}
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
FASTPATH=${FASTPATH:-off}
PORT=8085

if [ $# -gt 0 ]; then
  sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
die() {
  echo "rst_capture: $*" >&2
  exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, iptables, NFQUEUE)"
command -v tcpdump >/dev/null || die "tcpdump not installed"
[[ $FASTPATH =~ ^(on|off)$ ]] || die "FASTPATH is on or off"
FP_SPLICE=${FP_SPLICE:-off}
MODE=${MODE:-splice}
[[ $MODE =~ ^(splice|passthrough|dnat)$ ]] || die "MODE is splice, passthrough or dnat"
[[ $FP_SPLICE =~ ^(on|off)$ ]] || die "FP_SPLICE is on or off"
FP_BIND=${FP_BIND:-off}
[[ $FP_BIND =~ ^(on|off)$ ]] || die "FP_BIND is on or off"
FP_REDIRECT=${FP_REDIRECT:-off}
[[ $FP_REDIRECT =~ ^(on|off)$ ]] || die "FP_REDIRECT is on or off"
SYSCALLS=${SYSCALLS:-0}
[[ $SYSCALLS =~ ^[01]$ ]] || die "SYSCALLS is 0 or 1"
[ "$SYSCALLS" -eq 0 ] || command -v perf >/dev/null || die "SYSCALLS=1 needs perf"
RUNS=${RUNS:-1}
[ "$MODE" != dnat ] || [ "$SYSCALLS$RUNS" = 01 ] || die "MODE=dnat has no tandemd: no SYSCALLS, no RUNS"
for v in WORKERS DURATION RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number"
done

TDM_PREFIX=${TDM_PREFIX:-tdmrst}
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
require_env TANDEMD TCPCHECK
on_exit() {
  local rc=$?
  [ -n "${TDM_TANDEMD_LOG:-}" ] && [ -f "$TDM_TANDEMD_LOG" ] && cp "$TDM_TANDEMD_LOG" "$OUT/"
  cleanup
  exit "$rc"
}
trap on_exit EXIT
mkdir -p "$OUT" || die "cannot create $OUT"
# The build tree is shared: run a copy.
cp "$TANDEMD" "$TDM_TMP/tandemd" || die "cannot copy tandemd"
TANDEMD=$TDM_TMP/tandemd

topo_up transparent || die "topology"
in_ns "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1 ||
  die "client sysctls"
bg_start tcpc "$NS_BE1" "$TCPCHECK" server --listen "$BE1_IP:$PORT"
wait_listen "$NS_BE1" "$BE1_IP:$PORT" || die "tcpcheck server"
conf=$OUT/tandemd.conf
{
  echo "[daemon]"
  echo "queue = 0"
  echo "rules = iptables"
  echo "metrics = $METRICS_ADDR"
  echo "max_flows = 1000000"
  [ "$FASTPATH" = on ] && echo "fastpath = on" && echo "fastpath_splice = $FP_SPLICE" &&
    echo "fastpath_bind = $FP_BIND" && echo "fastpath_redirect = $FP_REDIRECT"
  echo
  echo "[service.$MODE]"
  echo "vip = $VIP:$PORT"
  echo "backends = $BE1_IP:$PORT"
  echo "mode = $MODE"
  echo "addressing = transparent"
} >"$conf"
if [ "$MODE" = dnat ]; then
  in_ns "$NS_PRX" iptables -t nat -A PREROUTING -d "$VIP" -p tcp --dport "$PORT" \
    -j DNAT --to-destination "$BE1_IP:$PORT" || die "DNAT rule"
else
  start_tandemd "$conf" || die "tandemd did not start"
fi
echo "VIP=$VIP CLIENT=$CLIENT_IP BE1=$BE1_IP" >"$OUT/addrs"
chmod 777 "$OUT"  # tcpdump writes as its own user
for dev in front back; do
  bg_start "tcpdump-$dev" "$NS_PRX" tcpdump -i "$dev" -s 128 -B 65536 -U -w "$OUT/$dev.pcap" tcp
done
sleep 1

[ "$MODE" = dnat ] || http_get /metrics >"$OUT/m0.prom"
uptime >"$OUT/load"
perf_pid=""
if [ "$SYSCALLS" -eq 1 ]; then
  perf stat -e 'syscalls:sys_enter_bpf,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg' \
    -e 'syscalls:sys_enter_recvmmsg,syscalls:sys_enter_epoll_wait' -p "$TDM_TANDEMD_PID" \
    -o "$OUT/syscalls.txt" -- sleep "$DURATION" &
  perf_pid=$!
fi
: >"$OUT/cr.txt"
for ((run = 1; run <= RUNS; run++)); do
  if [ "$run" -gt 1 ]; then
    # A new tandemd meets the tuples the last one's connections left in TIME_WAIT at the client.
    stop_pid "$TDM_TANDEMD_PID" TERM
    cat "$TDM_TANDEMD_LOG" >>"$OUT/tandemd-earlier.log"
    start_tandemd "$conf" || die "tandemd did not start again (run $run)"
  fi
  in_ns "$NS_CLI" timeout $((DURATION + 60)) "$TCPCHECK" client --connect "$VIP:$PORT" \
    --connect-rate --duration "$DURATION" --conns "$WORKERS" --bytes 64 >>"$OUT/cr.txt" 2>&1
  echo "rc=$?" >>"$OUT/cr.txt"
done
[ -z "$perf_pid" ] || wait "$perf_pid"
uptime >>"$OUT/load"
sleep 1  # the last RSTs, and the captures flushed
if [ "$MODE" != dnat ]; then
  http_get /metrics >"$OUT/m1.prom"
  http_get '/flows?limit=1000000' >"$OUT/flows.txt"
fi
in_ns "$NS_PRX" cat /proc/net/netfilter/nfnetlink_queue >"$OUT/nfq.txt"

grep "conns=" "$OUT/cr.txt" | sed "s/^/# /"
echo "# load: $(head -n 1 "$OUT/load" | sed 's/.*load average: //') ->" \
  "$(tail -n 1 "$OUT/load" | sed 's/.*load average: //')"
[ "$MODE" = dnat ] && echo "# captures in $OUT; timeline: python3 $ROOT/bench/rst_classify.py $OUT --timeline" && exit 0
echo "# RST counters after the run:"
grep -E '^tandem_(rst_|drops_total\{reason="rst)|^tandem_flows_reopened' "$OUT/m1.prom" |
  sed 's/^/#   /'
echo "# flows left, by state: $(awk '!/^#/ {print $6}' "$OUT/flows.txt" | sort | uniq -c |
  awk '{printf "%s %s  ", $2, $1}')"
if [ "$SYSCALLS" -eq 1 ]; then
  conns=$(grep -o 'conns=[0-9]*' "$OUT/cr.txt" | head -n 1 | cut -d= -f2)
  echo "# tandemd system calls per connection ($conns connections; syscalls.txt):"
  awk -v n="$conns" '/syscalls:/ { gsub(/,/, "", $1); t += $1
      printf "#   %s %.2f\n", $2, $1 / n } END { printf "#   all %.2f\n", t / n }' \
    "$OUT/syscalls.txt"
fi
echo "# captures in $OUT; classify: python3 $ROOT/bench/rst_classify.py $OUT [--order|--paths|--timeline]"
