#!/usr/bin/env bash
# Zero-loss takeover, the issue's comparison (issue 6): the gap a keep-alive HTTP client and a
# Redis client see across a crash of the active, with tandem in vmac mode, tandem in garp mode and
# keepalived + conntrackd + DNAT, in one run, rounds interleaved (the order rotated per round).
#
# Topology: tests/integration/pair_lib.sh's pair, addressing transparent (the group: VIP and the
# backends' gateway), rebuilt per trial. Servers on be1 and be2, port 8080: nginx (HTTP/1.1
# keep-alive, a 64-byte /index.html; python3 -m http.server's HTTP/1.1 handler if nginx is
# missing) or redis-server (no persistence). The client (bench/zeroloss/rrclient.py, python3, in
# the client namespace) holds one connection to VIP:80 and sends a request INTERVAL_MS after each
# response (http.client GET, or RESP INCR whose answers must count up by one); it reports the
# largest gap between two responses, errors and reconnects. CRASH_AT s after it starts, the
# active is crashed: tandem, SIGKILL of tandemd; keepalived, SIGKILL of keepalived (parent and
# VRRP child) and conntrackd (bench/failover/ka_lib.sh, the setup of bench/failover_bench.sh);
# then the node's links go down. Also counted: TCP loss probes + retransmissions of the client's
# and the backends' namespaces (nstat).
# tandem: heartbeat HB_MS ms x HB_MISS on the back link and on the front network (front_bind /
# front_peer); keepalived: advert_int 0.01 (its minimum; master down after 3 adverts + skew).
# A trial in which the roles moved before the crash (a spurious takeover) is reported and run
# again, at most 3 x ROUNDS times in all per system and client.
#
# Usage (root): bench/zeroloss_bench.sh     Environment: ROUNDS=5 HB_MS=10 HB_MISS=3 RT=0
#               (1: tandemd under chrt -r 50, as keepalived's VRRP process) CRASH_AT=2 AFTER=2
#               INTERVAL_MS=2 SYSTEMS="vmac garp ka" CLIENTS="http redis" OUT=bench/out
#               PCAP=0 (1: tcpdump of the client and the backends per trial, in the run directory)
# Installs redis-server, nginx-light, keepalived and conntrackd with apt-get if missing (bench
# only). Prints a markdown table; raw lines in $OUT/zeroloss-<date>/. Asserts nothing.
set -u
BENCH_CMDLINE="$0${*:+ $*}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
HB_MS=${HB_MS:-10}
HB_MISS=${HB_MISS:-3}
RT=${RT:-0}
CRASH_AT=${CRASH_AT:-2}
AFTER=${AFTER:-2}
INTERVAL_MS=${INTERVAL_MS:-2}
SYSTEMS=${SYSTEMS:-vmac garp ka}
CLIENTS=${CLIENTS:-http redis}
OUT=${OUT:-$ROOT/bench/out}
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
export TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
VMAC=02:54:44:4d:00:01
TDM_PREFIX=bzloss
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/integration/pair_lib.sh
source "$ROOT/tests/integration/pair_lib.sh"
# shellcheck source-path=SCRIPTDIR source=failover/ka_lib.sh
source "$ROOT/bench/failover/ka_lib.sh"
HB_INTERVAL=$(awk -v ms="$HB_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
pair_init
TDM_ADDRESSING=transparent
trap cleanup EXIT
dump_state() { :; }
die() { echo "zeroloss_bench: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root"
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || need+=(nginx-light)
command -v keepalived >/dev/null || need+=(keepalived)
command -v conntrackd >/dev/null || need+=(conntrackd)
if [ ${#need[@]} -gt 0 ]; then
  echo "# installing ${need[*]} (bench only)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${need[@]}") >&2 || echo "# apt-get failed" >&2
fi
for t in redis-server keepalived conntrackd python3 nstat; do
  command -v "$t" >/dev/null || die "$t not installed"
done
[ -x "$TANDEMD" ] || die "no tandemd at $TANDEMD"
cp "$TANDEMD" "$TDM_TMP/tandemd" || die "cannot copy tandemd"
TANDEMD_SHA=$(sha256sum "$TANDEMD" | cut -c1-12)
TANDEMD=$TDM_TMP/tandemd
if [ "$RT" = 1 ]; then
  printf '#!/bin/sh\nexec chrt -r 50 %s "$@"\n' "$TDM_TMP/tandemd" >"$TDM_TMP/tandemd-rt"
  chmod 755 "$TDM_TMP/tandemd-rt"
  TANDEMD=$TDM_TMP/tandemd-rt
fi
STAMP=$(date -u +%Y%m%d-%H%M%S)
RUN_DIR=$OUT/zeroloss-$STAMP
mkdir -p "$RUN_DIR" || die "cannot create $RUN_DIR"
RESULTS=$RUN_DIR/trials.tsv
printf 'round\tclient\tsystem\tgap_ms\terrors\treconnects\tprobes\tvictim\ttakeover_log\tcrash_ms\n' >"$RESULTS"

tcp_counter() {
  in_ns "$1" nstat -azs "$2" | awk -v n="$2" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
probes_and_retrans() {
  local ns sum=0
  for ns in "$@"; do
    sum=$(( sum + $(tcp_counter "$ns" TcpExtTCPLossProbes) + $(tcp_counter "$ns" TcpRetransSegs) ))
  done
  echo "$sum"
}

# servers KIND: nginx (python3 http.server without it) or redis-server on be1 and be2, port 8080.
servers() {
  local kind=$1 ns ip d
  for ns in "$NS_BE1" "$NS_BE2"; do
    ip=$BE1_IP
    [ "$ns" = "$NS_BE2" ] && ip=$BE2_IP
    d=$TDM_TMP/srv-${ns##*-}
    mkdir -p "$d/www"
    head -c 63 /dev/zero | tr '\0' 'z' >"$d/www/index.html"
    echo >>"$d/www/index.html"
    if [ "$kind" = redis ]; then
      bg_start "redis-${ns##*-}" "$ns" redis-server --bind "$ip" --port 8080 --save '' \
        --appendonly no --dir "$d" --protected-mode no
    elif command -v nginx >/dev/null; then
      cat >"$d/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 256; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d;
  uwsgi_temp_path $d; scgi_temp_path $d;
  server { listen $ip:8080; root $d/www; }
}
EOF
      bg_start "nginx-${ns##*-}" "$ns" nginx -c "$d/nginx.conf" -p "$d"
    else
      bg_start "http-${ns##*-}" "$ns" python3 -c "
import http.server, functools
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('$ip', 8080), functools.partial(H, directory='$d/www')).serve_forever()"
    fi
    wait_listen "$ns" "$ip:8080" || return 1
  done
}

# tandem_up MODE: A active, B a ready standby (heartbeats on both networks). Sets PID_A PID_B.
tandem_up() {
  local mode=$1 f
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK" "$A_FRONT" "$B_FRONT"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK" "$B_FRONT" "$A_FRONT"
  for f in a b; do
    printf 'takeover = %s\nvmac = %s\n' "$mode" "$VMAC" >>"$TDM_TMP/$f.conf"
  done
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf" || return 1
  PID_A=$NODE_PID
  wait_for 5 is_role "$NS_PA" active || return 1
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf" || return 1
  PID_B=$NODE_PID
  wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby
}

role_changes() {  # role_changes SYSTEM: so far, both nodes
  case "$1" in
    ka) cat "$TDM_TMP"/keepalived-[ab].log 2>/dev/null | grep -c 'Entering .* STATE' ;;
    *) echo $(( $(metric_in "$NS_PA" tandem_pair_role_changes_total) + \
                $(metric_in "$NS_PB" tandem_pair_role_changes_total) )) ;;
  esac
}

# trial ROUND CLIENT SYSTEM: 0 done, 2 discarded (spurious takeover or set-up failure).
trial() {
  local r=$1 cl=$2 sys=$3 tag="$1-$2-$3" rc0 rc1 before after line takeover_log=-
  if ! pair_topo || ! servers "$cl"; then
    echo "# $tag: set-up failed" >&2
    topo_down
    return 2
  fi
  case "$sys" in
    ka) ka_pair strict ;;
    *) tandem_up "$sys" ;;
  esac || { echo "# $tag: the pair did not come up" >&2; cp "$TDM_TMP"/*.log "$RUN_DIR/" 2>/dev/null
            rm -rf "$TDM_TMP"/ka-*; topo_down; return 2; }
  rc0=$(role_changes "$sys")
  # PCAP=1: tcpdump in the client's and the backends' namespaces, into the run directory.
  if [ "${PCAP:-0}" = 1 ]; then
    local pns
    for pns in "$NS_CLI" "$NS_BE1" "$NS_BE2"; do
      bg_start "pcap-${pns##*-}" "$pns" tcpdump -i eth0 -n -U -w "$RUN_DIR/$tag-${pns##*-}.pcap" tcp
    done
    sleep 0.5
  fi
  before=$(probes_and_retrans "$NS_CLI" "$NS_BE1" "$NS_BE2")
  bg_start "client-$tag" "$NS_CLI" python3 "$ROOT/bench/zeroloss/rrclient.py" --proto "$cl" \
    --host "$VIP" --port 80 --interval-ms "$INTERVAL_MS" \
    --duration "$(awk -v a="$CRASH_AT" -v b="$AFTER" 'BEGIN { print a + b }')"
  local cpid=$BG_PID
  sleep "$CRASH_AT"
  rc1=$(role_changes "$sys")
  local holder=1
  case "$sys" in
    ka) has_addr "$NS_PA" front "$VIP" || holder=0 ;;
    *) is_role "$NS_PA" active && is_role "$NS_PB" standby || holder=0 ;;
  esac
  local crash_ms
  crash_ms=$(date +%s%3N)
  case "$sys" in
    ka) ka_crash a ;;
    *) crash_node "$PID_A" "$NS_PA" ;;
  esac
  wait "$cpid"
  after=$(probes_and_retrans "$NS_CLI" "$NS_BE1" "$NS_BE2")
  line=$(grep '^rrclient:' "$TDM_TMP/client-$tag.log")
  cp "$TDM_TMP/client-$tag.log" "$RUN_DIR/"
  if [ "$sys" != ka ]; then
    # B's own account of the takeover (the log lines with the timing), for the record.
    takeover_log=$(grep -E 'role standby -> active|vmac: replayed|takeover timing' \
      "$TDM_TMP/tandemd-b.log" | cut -c12-23,38- | tr '\n\t' '  ')
    cp "$TDM_TMP/tandemd-b.log" "$RUN_DIR/$tag-tandemd-b.log"
  fi
  rm -rf "$TDM_TMP"/ka-*
  rm -f "$TDM_TMP"/*.log
  topo_down
  if [ "$rc1" != "$rc0" ] || [ "$holder" = 0 ]; then
    echo "# $tag: the roles moved before the crash ($rc0 -> $rc1 role changes); discarded" >&2
    return 2
  fi
  local gap errors reconnects end_s
  gap=$(sed -n 's/.* max_gap_ms=\([0-9.]*\) .*/\1/p' <<<"$line")
  errors=$(sed -n 's/.* errors=\([0-9]*\) .*/\1/p' <<<"$line")
  reconnects=$(sed -n 's/.* reconnects=\([0-9]*\) .*/\1/p' <<<"$line")
  end_s=$(sed -n 's/.* max_gap_end=\([0-9.]*\) .*/\1/p' <<<"$line")
  [ -n "$gap" ] || { gap=failed; errors=${errors:-?}; reconnects=${reconnects:-?}; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$cl" "$sys" "$gap" "$errors" \
    "$reconnects" "$((after - before))" \
    "$(awk -v e="${end_s:-0}" -v c="$crash_ms" 'BEGIN { printf "gap ends %+.0f ms after the crash", e * 1000 - c }')" \
    "$takeover_log" "$crash_ms" >>"$RESULTS"
  echo "# $tag: gap ${gap} ms, errors $errors, reconnects $reconnects, probes+retrans $((after - before))" >&2
  return 0
}

T0=$(date +%s)
read -r -a SYS_LIST <<<"$SYSTEMS"
n=${#SYS_LIST[@]}
echo "# zeroloss_bench: $BENCH_CMDLINE; run dir $RUN_DIR; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
declare -A tries=()
for ((r = 1; r <= ROUNDS; r++)); do
  for cl in $CLIENTS; do
    for ((k = 0; k < n; k++)); do
      sys=${SYS_LIST[$(( (k + r - 1) % n ))]}
      # A discarded trial is run again at once (same round), within the budget.
      while [ "${tries[$cl-$sys]:-0}" -lt $((3 * ROUNDS)) ]; do
        tries[$cl-$sys]=$(( ${tries[$cl-$sys]:-0} + 1 ))
        trial "$r" "$cl" "$sys" && break
      done
    done
  done
done
T1=$(date +%s)

{
  echo "Command: \`$BENCH_CMDLINE\` (ROUNDS=$ROUNDS HB_MS=$HB_MS HB_MISS=$HB_MISS RT=$RT CRASH_AT=$CRASH_AT AFTER=$AFTER INTERVAL_MS=$INTERVAL_MS), $(date -u -d "@$T0" '+%Y-%m-%d %H:%M UTC'), $((T1 - T0)) s;"
  echo "kernel $(uname -r), $(nproc) vCPU, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); tandemd sha256 $TANDEMD_SHA; $(redis-server --version | cut -d' ' -f1-3); $(nginx -v 2>&1); $(keepalived -v 2>&1 | head -n 1)."
  echo
  python3 "$ROOT/bench/zeroloss/summary.py" "$RUN_DIR" "$HB_MS" "$HB_MISS"
} | tee "$RUN_DIR/result.md"
