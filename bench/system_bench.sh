#!/usr/bin/env bash
# System benchmark of tandem's data path in network namespaces (tests/integration/lib.sh
# topology: client - proxy - backend), against the kernel on the same topology, in one run.
#
# Data paths, all set up at once on one topology and told apart by destination port, so every
# round can run each of them, in a rotated order:
#   kernel     client -> backend's own address, routed by the proxy namespace. The proxy's raw
#              table marks these packets NOTRACK (both directions): no conntrack lookup, no NAT.
#   dnat       client -> VIP; iptables -t nat DNAT to the backend in the proxy (conntrack, the
#              Linux NAT users compare with); replies un-NATed by conntrack.
#   tandem-tr  client -> VIP; tandemd passthrough, addressing transparent.
#   tandem-snat client -> VIP; tandemd passthrough, addressing snat.
#   tandem-splice client -> VIP; tandemd splice mode (SYN cookie, backend leg opened by the
#              proxy), addressing transparent.
#   tandem-splice-fp client -> VIP; the same with the kernel fast path (daemon.fastpath = on,
#              docs/fastpath.md): a second tandemd (queue 1, metrics 127.0.0.1:9101) that runs
#              only while this path is measured, so its tc ingress program (on the proxy's
#              front and back) is not in the way of the other paths.
#   tandem-tr-fp client -> VIP; passthrough, transparent, on that same fast-path tandemd: the
#              passthrough to compare tandem-splice-fp with (same data path, same daemon).
# One tandemd serves every tandem path (one service per port); its raw-table rules are NOTRACK
# too. Every path's packets pass the same raw-table chains (tandem's and this script's).
#
# Per path and round: iperf3 single stream client->backend and -R; tcpcheck --rr (64-byte
# request/response on one connection: p50/p99); tcpcheck --connect-rate (short connections, each
# one verified byte by byte). For tandem: counters (drops by reason, kernel queue drops, GSO) and
# tandemd CPU time (/proc/PID/stat utime+stime) around every phase.
#
# SYN flood (FLOOD=1, each round, after the paths; needs the tandem-splice path): tcpcheck
# --connect-rate on the splice path for CR_DURATION s without a flood, then again while the
# attacker namespace sends spoofed SYNs to the same VIP:port at full speed (tcpinject --flood,
# random sources in 10.N.128.0/17, which the proxy blackholes: its SYN-ACKs go nowhere).
# Reported: spoofed SYNs/s sent and absorbed (tandem_syncookies_sent_total delta per second),
# spoofed SYNs lost before tandem (NFQUEUE full), legitimate connections/s with and without.
#
# Usage (root):   bench/system_bench.sh
# Environment:    ROUNDS=5 DURATION=5 OMIT=1 RR_COUNT=5000 CR_DURATION=3 CR_CONNS=4
#                 QUIET_BUSY=25 QUIET_MAX=5 (before each path, wait up to QUIET_MAX s for the
#                 shared machine's CPU use to fall below QUIET_BUSY %; the level is reported)
#                 PATHS="kernel dnat tandem-tr tandem-snat tandem-splice" OUT=bench/out
#                 (tandem-splice-fp too, on request: PATHS="dnat tandem-splice tandem-splice-fp";
#                 and tandem-tr-fp: PATHS="tandem-tr tandem-splice tandem-tr-fp tandem-splice-fp")
#                 FLOOD=1 FLOOD_RATE=0 (spoofed SYNs per second; 0: as fast as the attacker can)
#                 FLOOD_PATH=tandem-splice (or tandem-splice-fp: the flood on the fast-path
#                 tandemd, whose SYNs the kernel answers with fastpath_syn on)
#                 FP_SYN=on|off (tandem-splice-fp: daemon.fastpath_syn, SYNs answered in the
#                 kernel; unset: tandemd's default, on)
#                 FP_SPLICE=on|off (tandem-splice-fp: daemon.fastpath_splice, zero-window
#                 splices' backend SYN-ACKs answered in the kernel; unset: tandemd's default, off)
#                 FP_BIND=on|off (tandem-splice-fp: daemon.fastpath_bind, the cookie ACK turned
#                 into the backend SYN in the kernel, no packet of a connection through
#                 NFQUEUE; unset: tandemd's default, off)
#                 FP_REDIRECT=on|off (tandem-splice-fp, tandem-tr-fp: daemon.fastpath_redirect,
#                 translated packets sent straight out of the routed interface, past the IP
#                 stack; unset: tandemd's default, off)
#                 HANDSHAKE_WINDOW=zero|open (both splice paths: the services'
#                 handshake_window, docs/splice.md; unset: tandemd's default, zero)
#                 TANDEMD=... TCPCHECK=... TCPINJECT=... (default: build/release binaries)
#                 PERF=1 (sweep only: perf record -a -g, the whole machine, around every sweep
#                 measurement, into $OUT/system-<date>/perf/ROUND-CONNS-PATH.data; the perf
#                 tool must be installed)
#                 CR_SWEEP="4 16 64 256" (after the rounds: a connection-rate sweep over these
#                 numbers of concurrent workers, every path at every N, interleaved in a rotated
#                 path order, CR_SWEEP_ROUNDS=3 rounds; medians, ratio to dnat and tandemd CPU per
#                 connection appended to the output. ROUNDS=0 with CR_SWEEP runs only the sweep.)
# Output: a markdown table on stdout and in $OUT/system-<date>.md; raw data (iperf3 JSON,
# tcpcheck lines, /metrics snapshots, tandemd log) in $OUT/system-<date>/.
# Re-render a table from raw data: python3 $OUT/system-<date>/analyze.py $OUT/system-<date>
set -u
BENCH_CMDLINE="$0${*:+ $*}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
OMIT=${OMIT:-1}
RR_COUNT=${RR_COUNT:-5000}
CR_DURATION=${CR_DURATION:-3}
CR_CONNS=${CR_CONNS:-4}
QUIET_BUSY=${QUIET_BUSY:-25}
QUIET_MAX=${QUIET_MAX:-5}
PATHS=${PATHS:-kernel dnat tandem-tr tandem-snat tandem-splice}
FLOOD=${FLOOD:-1}
PERF=${PERF:-0}
FLOOD_RATE=${FLOOD_RATE:-0}
FLOOD_PATH=${FLOOD_PATH:-tandem-splice}
OUT=${OUT:-$ROOT/bench/out}
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
TCPINJECT=${TCPINJECT:-$ROOT/build/release/tests/tools/tcpinject}
PY=/usr/bin/python3

if [ $# -gt 0 ]; then
  case "$1" in
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "system_bench.sh: no arguments (settings are environment variables, see --help)" >&2
       exit 2 ;;
  esac
fi

TDM_PREFIX=${TDM_PREFIX:-tdmbench}
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"

die() {
  echo "system_bench: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Preflight (a benchmark fails loudly instead of skipping)

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, iptables, NFQUEUE)"
for tool in iperf3 iptables ip curl timeout; do
  command -v "$tool" >/dev/null || die "$tool not installed (bash scripts/setup.sh installs it)"
done
[ -x "$PY" ] || die "$PY not installed"
require_env TANDEMD TCPCHECK
HANDSHAKE_WINDOW=${HANDSHAKE_WINDOW:-}
[[ $HANDSHAKE_WINDOW =~ ^(|zero|open)$ ]] || die "HANDSHAKE_WINDOW is zero or open"
[[ ${FP_SPLICE:-} =~ ^(|on|off)$ ]] || die "FP_SPLICE is on or off"
[[ ${FP_BIND:-} =~ ^(|on|off)$ ]] || die "FP_BIND is on or off"
[[ ${FP_REDIRECT:-} =~ ^(|on|off)$ ]] || die "FP_REDIRECT is on or off"
for v in ROUNDS DURATION OMIT RR_COUNT CR_DURATION CR_CONNS QUIET_BUSY QUIET_MAX FLOOD \
    FLOOD_RATE PERF; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
CR_SWEEP=${CR_SWEEP:-}
CR_SWEEP_ROUNDS=${CR_SWEEP_ROUNDS:-3}
for v in $CR_SWEEP $CR_SWEEP_ROUNDS; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "CR_SWEEP and CR_SWEEP_ROUNDS take positive whole numbers"
done
if [ -z "$CR_SWEEP" ]; then
  [ "$ROUNDS" -ge 1 ] || die "ROUNDS must be at least 1"
fi
read -r -a PATH_LIST <<<"$PATHS"
for p in "${PATH_LIST[@]}"; do
  case "$p" in
    kernel|dnat|tandem-tr|tandem-snat|tandem-splice|tandem-splice-fp|tandem-tr-fp) ;;
    *) die "unknown path '$p' in PATHS" ;;
  esac
done
if [ "$PERF" -ne 0 ]; then
  command -v perf >/dev/null || die "PERF=1 needs perf (apt-get install linux-perf)"
fi
if [ "$FLOOD" -ne 0 ]; then
  case "$FLOOD_PATH" in tandem-splice|tandem-splice-fp) ;; *) die "FLOOD_PATH: tandem-splice or tandem-splice-fp" ;; esac
  [[ " ${PATH_LIST[*]} " == *" $FLOOD_PATH "* ]] || die "FLOOD=1 needs $FLOOD_PATH in PATHS"
  require_env TCPINJECT
fi

STAMP=$(date +%Y%m%d-%H%M%S)
RUN_DIR=$OUT/system-$STAMP
RESULT_MD=$OUT/system-$STAMP.md
mkdir -p "$RUN_DIR"/{iperf,tcpcheck,snap,flood} || die "cannot create $RUN_DIR"

# The build tree is shared with engineers rebuilding it: run copies, so every round measures the
# same binaries, and record which build they are.
BINARIES="tandemd built $(date -u -r "$TANDEMD" '+%Y-%m-%d %H:%M:%S UTC') sha256 \
$(sha256sum "$TANDEMD" | cut -c1-12); tcpcheck built $(date -u -r "$TCPCHECK" '+%H:%M:%S UTC') \
sha256 $(sha256sum "$TCPCHECK" | cut -c1-12)"
if [ "$FLOOD" -ne 0 ]; then
  BINARIES+="; tcpinject sha256 $(sha256sum "$TCPINJECT" | cut -c1-12)"
fi
if ! cp "$TANDEMD" "$TDM_TMP/tandemd" || ! cp "$TCPCHECK" "$TDM_TMP/tcpcheck"; then
  die "cannot copy the binaries to $TDM_TMP"
fi
TANDEMD=$TDM_TMP/tandemd
TCPCHECK=$TDM_TMP/tcpcheck
if [ "$FLOOD" -ne 0 ]; then
  cp "$TCPINJECT" "$TDM_TMP/tcpinject" || die "cannot copy tcpinject to $TDM_TMP"
  TCPINJECT=$TDM_TMP/tcpinject
fi

on_exit() {
  local rc=$?
  # Keep the daemon's log with the raw data before lib.sh's cleanup removes $TDM_TMP.
  if [ -n "${TDM_TANDEMD_LOG:-}" ] && [ -f "$TDM_TANDEMD_LOG" ]; then
    cp "$TDM_TANDEMD_LOG" "$RUN_DIR/tandemd.log"
  fi
  cleanup
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Paths: destination and backend port of each (the backend port tells the paths apart in the
# proxy's rules, in both directions).

IPERF_BASE=5200
TCPC_BASE=8080
path_index() {
  case "$1" in
    kernel) echo 1 ;; dnat) echo 2 ;; tandem-tr) echo 3 ;; tandem-snat) echo 4 ;;
    tandem-splice) echo 5 ;; tandem-splice-fp) echo 6 ;; tandem-tr-fp) echo 7 ;;
  esac
}
# is_fp PATH: served by the fast-path tandemd.
is_fp() { [ "$1" = tandem-splice-fp ] || [ "$1" = tandem-tr-fp ]; }

# The fast-path tandemd (tandem-splice-fp, tandem-tr-fp): started for its paths only, see fp_up.
FP_METRICS=127.0.0.1:9101
FP_PID=
FP_LOG=
# fp_up: starts the fast-path tandemd (its own queue, chain and metrics port); lib.sh's
# start_tandemd keeps describing the main tandemd afterwards.
fp_up() {
  local main_pid=$TDM_TANDEMD_PID main_log=$TDM_TANDEMD_LOG rc=0
  METRICS_ADDR=$FP_METRICS start_tandemd "$RUN_DIR/tandemd-fp.conf" || rc=1
  FP_PID=$TDM_TANDEMD_PID
  FP_LOG=$TDM_TANDEMD_LOG
  TDM_TANDEMD_PID=$main_pid
  TDM_TANDEMD_LOG=$main_log
  return "$rc"
}
fp_down() {
  [ -n "$FP_PID" ] || return 0
  stop_pid "$FP_PID" TERM
  [ -n "$FP_LOG" ] && cat "$FP_LOG" >>"$RUN_DIR/tandemd-fp.log"
  FP_PID=
}
# path_pid PATH / path_metrics PATH: the tandemd serving PATH, and its /metrics.
path_pid() {
  if is_fp "$1"; then echo "$FP_PID"; else echo "$TDM_TANDEMD_PID"; fi
}
path_metrics() {
  if is_fp "$1"; then METRICS_ADDR=$FP_METRICS http_get /metrics
  else http_get /metrics; fi
}
# path_dst PATH KIND(iperf|tcpc): ADDR PORT the client connects to.
path_dst() {
  local i base
  i=$(path_index "$1")
  base=$IPERF_BASE
  [ "$2" = tcpc ] && base=$TCPC_BASE
  if [ "$1" = kernel ]; then echo "$BE1_IP $((base + i))"; else echo "$VIP $((base + i))"; fi
}

# Spoofed sources of the SYN flood: a range of this run's own 10.N/16 that no interface has. The
# proxy's SYN-ACKs to it meet a blackhole route, so they never reach a wire.
SPOOF_NET=10.$TDM_NET.128.0/17

setup_paths() {
  # backends route via the proxy (kernel, dnat, tandem-tr, tandem-splice)
  topo_up transparent || return 1
  ip -n "$NS_PRX" addr add "$SNAT_IP/32" dev back || return 1  # tandem-snat's source address
  ip -n "$NS_PRX" route add blackhole "$SPOOF_NET" || return 1
  # Short connections: room for tens of thousands per destination, and TIME_WAIT tuples reused
  # (RFC 7323 timestamps) instead of exhausting the client's ports across rounds.
  in_ns "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" \
    net.ipv4.tcp_tw_reuse=1 || return 1
  # tandem-snat allocates source ports on the proxy: keep the proxy's own ephemeral ports out
  # of the SNAT ranges below.
  in_ns "$NS_PRX" sysctl -qw net.ipv4.ip_local_port_range="61000 65000" || return 1

  local k=$((IPERF_BASE + 1)) kc=$((TCPC_BASE + 1)) d=$((IPERF_BASE + 2)) dc=$((TCPC_BASE + 2))
  # (a) kernel forwarding without conntrack: NOTRACK both directions in the proxy's raw table.
  local port
  for port in "$k" "$kc"; do
    in_ns "$NS_PRX" iptables -t raw -A PREROUTING -d "$BE1_IP/32" -p tcp --dport "$port" \
      -j CT --notrack || return 1
    in_ns "$NS_PRX" iptables -t raw -A PREROUTING -s "$BE1_IP/32" -p tcp --sport "$port" \
      -j CT --notrack || return 1
  done
  # (b) conntrack DNAT of the VIP to the backend.
  for port in "$d" "$dc"; do
    in_ns "$NS_PRX" iptables -t nat -A PREROUTING -d "$VIP/32" -p tcp --dport "$port" \
      -j DNAT --to-destination "$BE1_IP:$port" || return 1
  done

  # Servers: one iperf3 and one tcpcheck server per path on the backend.
  local i
  for i in 1 2 3 4 5 6 7; do
    bg_start "iperf3-$i" "$NS_BE1" iperf3 -s -B "$BE1_IP" -p $((IPERF_BASE + i))
    bg_start "tcpc-$i" "$NS_BE1" "$TCPCHECK" server --listen "$BE1_IP:$((TCPC_BASE + i))"
  done
  for i in 1 2 3 4 5 6 7; do
    wait_listen "$NS_BE1" "$BE1_IP:$((IPERF_BASE + i))" || return 1
    wait_listen "$NS_BE1" "$BE1_IP:$((TCPC_BASE + i))" || return 1
  done

  # (c), (d), (e): one tandemd, one service per path and port.
  local conf=$RUN_DIR/tandemd.conf svc addressing mode p
  {
    echo "[daemon]"
    echo "queue = 0"
    echo "rules = iptables"
    echo "metrics = $METRICS_ADDR"
    echo "max_flows = 1000000"
    for svc in tr:3:transparent:passthrough snat:4:snat:passthrough \
        splice:5:transparent:splice; do
      IFS=: read -r name i addressing mode <<<"$svc"
      for p in "$((IPERF_BASE + i))" "$((TCPC_BASE + i))"; do
        echo
        echo "[service.$name-$p]"
        echo "vip = $VIP:$p"
        echo "backends = $BE1_IP:$p"
        echo "mode = $mode"
        [ "$mode" = splice ] && [ -n "$HANDSHAKE_WINDOW" ] &&
          echo "handshake_window = $HANDSHAKE_WINDOW"
        echo "addressing = $addressing"
        if [ "$addressing" = snat ]; then
          echo "snat_address = $SNAT_IP"
          # Disjoint ranges per service, below the proxy's own ephemeral ports (61000-65000).
          # A SNAT port stays taken while its flow lingers in TIME_WAIT (timeouts.time_wait,
          # 120 s): the short-connection service gets the large range.
          if [ "$p" -lt "$TCPC_BASE" ]; then
            echo "snat_ports = 1024-9999"
          else
            echo "snat_ports = 10000-60999"
          fi
        fi
      done
    done
  } >"$conf"
  # (f) the fast-path tandemd, queue 1: one splice service per port of path 6, one passthrough
  # service per port of path 7.
  {
    echo "[daemon]"
    echo "queue = 1"
    echo "rules = iptables"
    echo "metrics = $FP_METRICS"
    echo "max_flows = 1000000"
    echo "fastpath = on"
    [ -n "${FP_SYN:-}" ] && echo "fastpath_syn = $FP_SYN"
    [ -n "${FP_SPLICE:-}" ] && echo "fastpath_splice = $FP_SPLICE"
    [ -n "${FP_BIND:-}" ] && echo "fastpath_bind = $FP_BIND"
    [ -n "${FP_REDIRECT:-}" ] && echo "fastpath_redirect = $FP_REDIRECT"
    for p in "$((IPERF_BASE + 6))" "$((TCPC_BASE + 6))"; do
      echo
      echo "[service.splicefp-$p]"
      echo "vip = $VIP:$p"
      echo "backends = $BE1_IP:$p"
      echo "mode = splice"
      [ -n "$HANDSHAKE_WINDOW" ] && echo "handshake_window = $HANDSHAKE_WINDOW"
      echo "addressing = transparent"
    done
    for p in "$((IPERF_BASE + 7))" "$((TCPC_BASE + 7))"; do
      echo
      echo "[service.trfp-$p]"
      echo "vip = $VIP:$p"
      echo "backends = $BE1_IP:$p"
      echo "mode = passthrough"
      echo "addressing = transparent"
    done
  } >"$RUN_DIR/tandemd-fp.conf"
  start_tandemd "$conf" || return 1
}

# ---------------------------------------------------------------------------------------------
# Measurements

RUNS_TSV=$RUN_DIR/runs.tsv  # round slot path phase rc file
CPU_TSV=$RUN_DIR/cpu.tsv    # round path snapshot utime stime (clock ticks)

# snapshot ROUND PATH K: tandemd's /metrics and CPU time, and the interface counters of every
# namespace on the path (packet sizes seen by the receivers, drops on the veths).
snapshot() {
  local f=$RUN_DIR/snap/$1-$2-$3 stat ns mp=$2
  [ "$2" = flood ] && mp=$FLOOD_PATH
  # The metrics describe a moment between the request and the answer (tandemd answers from its
  # packet loop, late when busy): record both times.
  date +%s.%N >"$f.time"
  path_metrics "$mp" >"$f.prom"
  date +%s.%N >>"$f.time"
  for ns in cli prx be1 sw atk; do
    case "$ns" in
      cli) ip -n "$NS_CLI" -s -j link show >"$f.$ns.json" ;;
      atk) ip -n "$NS_ATK" -s -j link show >"$f.$ns.json" ;;
      prx) ip -n "$NS_PRX" -s -j link show >"$f.$ns.json" ;;
      be1) ip -n "$NS_BE1" -s -j link show >"$f.$ns.json" ;;
      sw) ip -n "$NS_SW" -s -j link show >"$f.$ns.json" ;;
    esac
  done
  # Fields 14 and 15 of /proc/PID/stat (the command name, field 2, has no blanks: "tandemd").
  read -r -a stat <"/proc/$(path_pid "$mp")/stat"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${stat[13]}" "${stat[14]}" >>"$CPU_TSV"
}

# record ROUND SLOT PATH PHASE RC FILE
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6#"$RUN_DIR"/}" >>"$RUNS_TSV"
}

# run_path ROUND SLOT PATH: every measurement of one path, snapshots between phases.
# cpu_busy SECONDS: percentage of the machine's CPU time not idle over SECONDS.
cpu_busy() {
  local a b
  read -r -a a < <(head -n 1 /proc/stat)
  sleep "$1"
  read -r -a b < <(head -n 1 /proc/stat)
  local i total=0 idle
  for ((i = 1; i < ${#a[@]}; i++)); do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  [ "$total" -gt 0 ] || { echo 0; return; }
  echo $(((total - idle) * 100 / total))
}

# wait_quiet: the VM is shared; before a path runs, wait up to QUIET_MAX seconds for the other
# tenants' load (this script's own processes are idle then) to fall below QUIET_BUSY percent.
# Prints the last sample, which is recorded with the run.
wait_quiet() {
  local busy waited=0
  while :; do
    busy=$(cpu_busy 0.5)
    [ "$busy" -lt "$QUIET_BUSY" ] && break
    [ "$waited" -ge $((QUIET_MAX * 2)) ] && break
    waited=$((waited + 1))
  done
  echo "$busy"
}

run_path() {
  local r=$1 slot=$2 path=$3 addr port f rc
  record "$r" "$slot" "$path" bg "$(wait_quiet)" -
  if is_fp "$path" && ! fp_up; then
    echo "system_bench: the fast-path tandemd did not start (round $r)" >&2
    return
  fi
  snapshot "$r" "$path" 0
  read -r addr port <<<"$(path_dst "$path" iperf)"
  for dir in fwd rev; do
    f=$RUN_DIR/iperf/$r-$path-$dir.json
    local rflag=()
    [ "$dir" = rev ] && rflag=(-R)
    in_ns "$NS_CLI" timeout $((DURATION + OMIT + 30)) iperf3 -c "$addr" -p "$port" \
      -t "$DURATION" -O "$OMIT" -J "${rflag[@]}" >"$f" 2>&1
    rc=$?
    record "$r" "$slot" "$path" "$dir" "$rc" "$f"
    if [ "$dir" = fwd ]; then snapshot "$r" "$path" 1; else snapshot "$r" "$path" 2; fi
  done
  read -r addr port <<<"$(path_dst "$path" tcpc)"
  f=$RUN_DIR/tcpcheck/$r-$path-rr.txt
  in_ns "$NS_CLI" timeout 120 "$TCPCHECK" client --connect "$addr:$port" --rr --count "$RR_COUNT" \
    --size 64 >"$f" 2>&1
  rc=$?
  record "$r" "$slot" "$path" rr "$rc" "$f"
  snapshot "$r" "$path" 3
  f=$RUN_DIR/tcpcheck/$r-$path-cr.txt
  in_ns "$NS_CLI" timeout $((CR_DURATION + 60)) "$TCPCHECK" client --connect "$addr:$port" \
    --connect-rate --duration "$CR_DURATION" --conns "$CR_CONNS" --bytes 64 >"$f" 2>&1
  rc=$?
  record "$r" "$slot" "$path" cr "$rc" "$f"
  snapshot "$r" "$path" 4
  is_fp "$path" && fp_down
  "$PY" "$RUN_DIR/analyze.py" --progress "$RUN_DIR" "$r" "$path" >&2
}

FLOOD_TSV=$RUN_DIR/flood.tsv  # round phase rc file
SWEEP_TSV=$RUN_DIR/sweep.tsv  # round conns path rc file utime0 stime0 utime1 stime1 drops0 drops1
# (and FILE.0.stat, FILE.1.stat: the machine's cpu line of /proc/stat just before and after)

# tandem_cpu_drops FILE: tandemd's utime, stime (clock ticks) and its drop total, on one line;
# the /metrics snapshot is kept in FILE (drops by reason).
tandem_cpu_drops() {
  local stat drops
  read -r -a stat <"/proc/$(path_pid "$2")/stat"
  path_metrics "$2" >"$1"
  drops=$(awk '/^tandem_drops_total[{ ]/ { s += $NF } END { printf "%d", s }' "$1")
  printf '%s\t%s\t%s' "${stat[13]}" "${stat[14]}" "${drops:-0}"
}

# tcp_mibs PREFIX: the TCP counters (retransmissions, timeouts, loss probes...) of the client's
# and the backend's namespace, in PREFIX.cli.mib and PREFIX.be1.mib.
tcp_mibs() {
  in_ns "$NS_CLI" cat /proc/net/snmp /proc/net/netstat >"$1.cli.mib"
  in_ns "$NS_BE1" cat /proc/net/snmp /proc/net/netstat >"$1.be1.mib"
}

# run_sweep_one ROUND CONNS PATH: tcpcheck --connect-rate with CONNS concurrent workers, the
# same command for every path; tandemd's CPU time and drops around it.
run_sweep_one() {
  local r=$1 n=$2 path=$3 addr port f rc a b
  read -r addr port <<<"$(path_dst "$path" tcpc)"
  f=$RUN_DIR/sweep/$r-$n-$path.txt
  wait_quiet >/dev/null
  if is_fp "$path" && ! fp_up; then
    echo "system_bench: the fast-path tandemd did not start (sweep round $r)" >&2
    return
  fi
  tcp_mibs "$f.0"
  a=$(tandem_cpu_drops "$f.0.prom" "$path")
  local perf=()
  if [ "$PERF" -ne 0 ]; then
    mkdir -p "$RUN_DIR/perf"
    perf=(perf record -q -a -g -F 1999 -o "$RUN_DIR/perf/$r-$n-$path.data" --)
  fi
  head -1 /proc/stat >"$f.0.stat"
  "${perf[@]}" ip netns exec "$NS_CLI" timeout $((CR_DURATION + 60)) "$TCPCHECK" client \
    --connect "$addr:$port" --connect-rate --duration "$CR_DURATION" --conns "$n" --bytes 64 \
    >"$f" 2>&1
  rc=$?
  head -1 /proc/stat >"$f.1.stat"
  b=$(tandem_cpu_drops "$f.1.prom" "$path")
  tcp_mibs "$f.1"
  is_fp "$path" && fp_down
  IFS=$'\t' read -r -a a <<<"$a"
  IFS=$'\t' read -r -a b <<<"$b"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$n" "$path" "$rc" \
    "${f#"$RUN_DIR"/}" "${a[0]}" "${a[1]}" "${b[0]}" "${b[1]}" "${a[2]}" "${b[2]}" >>"$SWEEP_TSV"
  log "sweep round $r conns $n $path: $(grep -o 'conn_rate_per_s=[^ ]*' "$f" || echo "rc $rc")"
}

# write_sweep_analyzer: renders sweep.tsv (python3 RUN_DIR/sweep.py RUN_DIR).
write_sweep_analyzer() {
  cat >"$RUN_DIR/sweep.py" <<'PYEOF'
import re, statistics, sys, os
run = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(run, "sweep.tsv")) if l.strip()]
res, cpu, drops, bad, rate, mcpu, idle = {}, {}, {}, [], {}, {}, {}
rounds = sorted({row[0] for row in rows})
for r, n, p, rc, f, u0, s0, u1, s1, d0, d1 in rows:
    text = open(os.path.join(run, f)).read()
    m = re.search(r"^tcpcheck: (conns=.*)$", text, re.M)
    kv = dict(x.split("=", 1) for x in m.group(1).split() if "=" in x) if m else {}
    if rc != "0" or "conn_rate_per_s" not in kv:
        bad.append(f"round {r} conns {n} {p}: rc {rc}")
        continue
    x = float(kv["conn_rate_per_s"])
    res.setdefault((int(n), p), []).append(x)
    rate[(r, int(n), p)] = x
    ok = int(kv.get("ok", "0"))
    # The whole machine (both vCPUs: clients, backends, tandemd, the kernel's forwarding), from
    # /proc/stat's cpu line around the run: busy = all but idle and iowait.
    try:
        c0 = [int(x) for x in open(os.path.join(run, f + ".0.stat")).read().split()[1:]]
        c1 = [int(x) for x in open(os.path.join(run, f + ".1.stat")).read().split()[1:]]
        d = [b - a for a, b in zip(c0, c1)]
        busy, total = sum(d) - d[3] - d[4], sum(d)
        if ok and total > 0:
            mcpu.setdefault((int(n), p), []).append(busy / hz * 1e6 / ok)
            idle.setdefault((int(n), p), []).append(100.0 * (d[3] + d[4]) / total)
    except (OSError, ValueError, IndexError):
        pass
    if p.startswith("tandem") and ok:
        cpu.setdefault((int(n), p), []).append(
            (int(u1) - int(u0) + int(s1) - int(s0)) / hz * 1e6 / ok)
        drops.setdefault((int(n), p), []).append(int(d1) - int(d0))
ns = sorted({k[0] for k in res})
paths = [p for p in ["kernel", "dnat", "tandem-tr", "tandem-snat", "tandem-splice",
                     "tandem-tr-fp", "tandem-splice-fp"]
         if any(k[1] == p for k in res)]
med = lambda v: statistics.median(v) if v else None
print(f"### Connection-rate sweep (tcpcheck --connect-rate --bytes 64, medians of rounds)\n")
print("| concurrent workers | " + " | ".join(f"{p} conn/s" for p in paths) +
      (" | " + " | ".join(f"{p} ÷ dnat (median of rounds)" for p in paths if p != "dnat") if "dnat" in paths else "") +
      " | " + " | ".join(f"{p} CPU µs/conn" for p in paths if p.startswith("tandem")) + " |")
ncols = len(paths) + (len(paths) - 1 if "dnat" in paths else 0) + \
    sum(p.startswith("tandem") for p in paths)
print("|---:" * (ncols + 1) + "|")
for n in ns:
    cells = [f"{med(res.get((n, p), [])):.0f}" if res.get((n, p)) else "–" for p in paths]
    if "dnat" in paths:
        for p in paths:
            if p == "dnat":
                continue
            # within each round (the shared machine's load moves between rounds), then the median
            ratios = [rate[(r, n, p)] / rate[(r, n, "dnat")] for r in rounds
                      if (r, n, p) in rate and (r, n, "dnat") in rate]
            cells.append(f"{med(ratios):.2f}" if ratios else "–")
    for p in paths:
        if p.startswith("tandem"):
            c = cpu.get((n, p))
            cells.append(f"{med(c):.0f}" if c else "–")
    print(f"| {n} | " + " | ".join(cells) + " |")
print()
if mcpu:
    print("Machine CPU per connection (both vCPUs, /proc/stat around each run; medians of rounds), "
          "and the share of the machine left idle:\n")
    print("| concurrent workers | " + " | ".join(f"{p} µs/conn" for p in paths) + " | " +
          " | ".join(f"{p} idle %" for p in paths) + " |")
    print("|---:" * (2 * len(paths) + 1) + "|")
    for n in ns:
        cells = [f"{med(mcpu[(n, p)]):.0f}" if mcpu.get((n, p)) else "–" for p in paths]
        cells += [f"{med(idle[(n, p)]):.0f}" if idle.get((n, p)) else "–" for p in paths]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()
if "dnat" in paths and len(ns) > 1:
    # The setup rate as a capacity: each path at its best concurrency of the round, compared
    # within the round (bench/README.md, "Connection-rate sweep").
    for p in paths:
        if p == "dnat":
            continue
        ratios, at = [], []
        for r in rounds:
            pk = {q: max(((rate[(r, n, q)], n) for n in ns if (r, n, q) in rate), default=None)
                  for q in (p, "dnat")}
            if pk[p] and pk["dnat"]:
                ratios.append(pk[p][0] / pk["dnat"][0])
                at.append(f"{pk[p][1]}/{pk['dnat'][1]}")
        if ratios:
            print(f"- Peak connection rate, {p} ÷ dnat (each at its best concurrency of the round; "
                  f"per round: " + ", ".join(f"{x:.2f} (at {a} workers)" for x, a in zip(ratios, at)) +
                  f"): median **{med(ratios):.2f}**")
    print()
def reasons(f):
    out = {}
    try:
        for line in open(os.path.join(run, f)):
            m = re.match(r'tandem_drops_total\{reason="([^"]+)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
    except OSError:
        pass
    return out
why = {}
for r, n, p, rc, f, *_ in rows:
    a, b = reasons(f + ".0.prom"), reasons(f + ".1.prom")
    for k, v in b.items():
        if v - a.get(k, 0) > 0:
            why.setdefault((int(n), p), {}).setdefault(k, 0)
            why[(int(n), p)][k] += int(v - a.get(k, 0))
for (n, p), v in sorted(res.items()):
    w = ", ".join(f"{k} {c}" for k, c in sorted(why.get((n, p), {}).items()))
    print(f"- {p} at {n} workers, per round: " + ", ".join(f"{x:.0f}" for x in v) +
          (f"; tandem drops {sum(drops.get((n, p), []))}" if p.startswith("tandem") else "") +
          (f" ({w})" if w else ""))
# The endpoints' TCP counters around each measurement (tcp_mibs): what a path costs them in
# retransmissions and reordering, per 1000 connections, summed over rounds.
def mib(path):
    out = {}
    try:
        lines = open(os.path.join(run, path)).read().split("\n")
    except OSError:
        return None
    for head, vals in zip(lines[0::2], lines[1::2]):
        h, v = head.split(), vals.split()
        if h and v and h[0] == v[0]:
            for k, x in zip(h[1:], v[1:]):
                if x.lstrip("-").isdigit():
                    out[h[0] + k] = int(x)
    return out
MIBS = [("client retransmitted segments", "cli", "Tcp:RetransSegs"),
        ("client loss probes", "cli", "TcpExt:TCPLossProbes"),
        ("backend segments queued out of order", "be1", "TcpExt:TCPOFOQueue"),
        ("backend duplicate segments (DSACK sent)", "be1", "TcpExt:TCPDSACKOldSent"),
        ("backend RSTs sent", "be1", "Tcp:OutRsts")]
tcp, conns = {}, {}
for r, n, p, rc, f, *_ in rows:
    if (r, int(n), p) not in rate:
        continue
    text = open(os.path.join(run, f)).read()
    m = re.search(r"\bok=(\d+)", text)
    conns[(int(n), p)] = conns.get((int(n), p), 0) + (int(m.group(1)) if m else 0)
    for label, ns_, key in MIBS:
        a, b = mib(f + ".0." + ns_ + ".mib"), mib(f + ".1." + ns_ + ".mib")
        if a is None or b is None or key not in a or key not in b:
            continue
        tcp.setdefault((int(n), p), {}).setdefault(label, 0)
        tcp[(int(n), p)][label] += b[key] - a[key]
if tcp:
    print()
    print("TCP counters of the client and backend namespaces, per 1000 connections (all rounds):\n")
    print("| workers | path | " + " | ".join(label for label, _, _ in MIBS) + " |")
    print("|---:|---|" + "---:|" * len(MIBS))
    for (n, p) in sorted(tcp, key=lambda k: (k[0], paths.index(k[1]) if k[1] in paths else 9)):
        c = conns.get((n, p), 0)
        cells = [f"{1000 * tcp[(n, p)].get(label, 0) / c:.1f}" if c else "–" for label, _, _ in MIBS]
        print(f"| {n} | {p} | " + " | ".join(cells) + " |")
for b in bad:
    print(f"- FAILED: {b}")
PYEOF
}

# run_flood ROUND: legitimate connections/s on the splice path without, then with, a SYN flood
# from the attacker namespace at full speed. Snapshots: 0 before, 1 after the legitimate-only run,
# 2 once the flood runs, 3 after the legitimate run under the flood, 4 after the flood.
run_flood() {
  local r=$1 addr port f rc
  read -r addr port <<<"$(path_dst "$FLOOD_PATH" tcpc)"
  if [ "$FLOOD_PATH" = tandem-splice-fp ] && ! fp_up; then
    echo "system_bench: the fast-path tandemd did not start (flood round $r)" >&2
    return
  fi
  printf '%s\t%s\t%s\t%s\n' "$r" bg "$(wait_quiet)" - >>"$FLOOD_TSV"
  snapshot "$r" flood 0
  f=$RUN_DIR/tcpcheck/$r-flood-base.txt
  in_ns "$NS_CLI" timeout $((CR_DURATION + 60)) "$TCPCHECK" client --connect "$addr:$port" \
    --connect-rate --duration "$CR_DURATION" --conns "$CR_CONNS" --bytes 64 >"$f" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$r" base "$rc" "${f#"$RUN_DIR"/}" >>"$FLOOD_TSV"
  snapshot "$r" flood 1
  # The flood outlasts the legitimate run by a second at each end.
  bg_start "flood-$r" "$NS_ATK" "$TCPINJECT" --flood --src-net "$SPOOF_NET" --dst "$addr:$port" \
    --duration $((CR_DURATION + 2)) --rate "$FLOOD_RATE"
  local flood_pid=$BG_PID
  sleep 1
  snapshot "$r" flood 2
  f=$RUN_DIR/tcpcheck/$r-flood-cr.txt
  in_ns "$NS_CLI" timeout $((CR_DURATION + 60)) "$TCPCHECK" client --connect "$addr:$port" \
    --connect-rate --duration "$CR_DURATION" --conns "$CR_CONNS" --bytes 64 >"$f" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$r" cr "$rc" "${f#"$RUN_DIR"/}" >>"$FLOOD_TSV"
  snapshot "$r" flood 3
  wait "$flood_pid"
  rc=$?
  f=$RUN_DIR/flood/$r-inject.txt
  cp "$TDM_TMP/flood-$r.log" "$f"
  printf '%s\t%s\t%s\t%s\n' "$r" inject "$rc" "${f#"$RUN_DIR"/}" >>"$FLOOD_TSV"
  # Let the queue drain and the SYN-ACKs die before the next snapshot.
  sleep 0.5
  snapshot "$r" flood 4
  [ "$FLOOD_PATH" = tandem-splice-fp ] && fp_down
  "$PY" "$RUN_DIR/analyze.py" --progress-flood "$RUN_DIR" "$r" >&2
}

# ---------------------------------------------------------------------------------------------
# Analysis (a file in the run directory, so a run can be re-rendered from its raw data)

write_analyzer() {
  cat >"$RUN_DIR/analyze.py" <<'PYEOF'
"""Renders a system_bench.sh run directory as markdown (stdout)."""
import json, os, re, statistics, sys

PATH_NAMES = {"kernel": "kernel fwd (NOTRACK)", "dnat": "conntrack DNAT",
              "tandem-tr": "tandem transparent", "tandem-snat": "tandem snat",
              "tandem-splice": "tandem splice", "tandem-splice-fp": "tandem splice + fast path",
              "tandem-tr-fp": "tandem transparent + fast path"}
TANDEM = ("tandem-tr", "tandem-snat", "tandem-splice", "tandem-tr-fp", "tandem-splice-fp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Drops that a clean benchmark run may legitimately cause, per path. Splice mode drops client
# data that arrives before the backend leg is up (the client resends it; counted, reported).
EXPECTED_DROPS = {"tandem-splice": {"splice_pending"}, "tandem-splice-fp": {"splice_pending"}}
PENDING = 'tandem_drops_total{reason="splice_pending"}'


def iperf(path):
    try:
        d = json.load(open(path))
        e = d["end"]
        return {"gbps": e["sum_received"]["bits_per_second"] / 1e9,
                "bytes": e["sum_received"]["bytes"],
                "retrans": e["sum_sent"].get("retransmits", 0)}
    except Exception:
        return None


def tcpcheck(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    m = re.search(r"^tcpcheck: (conns=.*)$", text, re.M)
    if not m:
        return None
    return dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)


def prom(path):
    out = {}
    try:
        for line in open(path):
            if line.startswith("#") or not line.strip():
                continue
            series, value = line.rsplit(None, 1)
            out[series] = float(value)
    except (OSError, ValueError):
        pass
    return out


def links(run, r, p, k, ns):
    """{ifname: (rx_bytes, rx_packets, rx_dropped, tx_bytes, tx_packets, tx_dropped)}"""
    try:
        data = json.load(open(os.path.join(run, "snap", f"{r}-{p}-{k}.{ns}.json")))
    except (OSError, ValueError):
        return {}
    out = {}
    for l in data:
        st = l.get("stats64", {})
        rx, tx = st.get("rx", {}), st.get("tx", {})
        out[l["ifname"]] = (rx.get("bytes", 0), rx.get("packets", 0), rx.get("dropped", 0),
                            tx.get("bytes", 0), tx.get("packets", 0), tx.get("dropped", 0))
    return out


def link_delta(run, r, p, a, b, ns):
    x, y = links(run, r, p, a, ns), links(run, r, p, b, ns)
    return {i: tuple(v - w for v, w in zip(y[i], x.get(i, (0,) * 6))) for i in y}


def load(run):
    meta = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(run, "meta.txt")))
    runs = [l.rstrip("\n").split("\t") for l in open(os.path.join(run, "runs.tsv"))]
    runs = [x[:5] + [os.path.join(run, x[5])] for x in runs]
    cpu = {}
    for l in open(os.path.join(run, "cpu.tsv")):
        r, p, k, u, s = l.split()
        cpu[(r, p, k)] = (int(u), int(s))
    return meta, runs, cpu


def delta(run, r, p, a, b):
    x = prom(os.path.join(run, "snap", f"{r}-{p}-{a}.prom"))
    y = prom(os.path.join(run, "snap", f"{r}-{p}-{b}.prom"))
    return {k: y[k] - x.get(k, 0) for k in y if not k.startswith("tandem_flows_active")
            and not k.startswith("tandem_uptime") and not k.startswith("tandem_nfq_kernel_queued")
            and not k.startswith("tandem_flows_max") and not k.startswith("tandem_info")}


def collect(run):
    """Per (path) lists of per-round values, and failures."""
    meta, runs, cpu = load(run)
    vals, fails = {}, []
    by_round = {}  # (path, key) -> {round: value}, for ratios within a round
    def add(p, k, v, r=None):
        vals.setdefault(p, {}).setdefault(k, []).append(v)
        if r is not None:
            by_round.setdefault((p, k), {})[r] = v
    for r, slot, p, phase, rc, f in runs:
        if phase == "bg":
            add(p, "bg_busy", int(rc), r)
            continue
        if phase in ("fwd", "rev"):
            # What the receiver's interface got: the kernel forwards 64 KiB GSO packets as they
            # are; a smaller mean means the proxy (or something else) segmented them.
            a, b, ns, dev = (0, 1, "be1", "eth0") if phase == "fwd" else (1, 2, "cli", "eth0")
            d = link_delta(run, r, p, a, b, ns).get(dev)
            if d and d[1]:
                add(p, f"rxsize_{phase}", d[0] / d[1])
            drops = sum(v[2] + v[5] for n in ("cli", "prx", "be1", "sw")
                        for v in link_delta(run, r, p, a, b, n).values())
            add(p, f"ifdrops_{phase}", drops)
            res = iperf(f)
            if rc != "0" or res is None:
                fails.append(f"round {r} {p} iperf3 {phase}: exit {rc} ({os.path.basename(f)})")
                continue
            add(p, f"gbps_{phase}", res["gbps"], r)
            add(p, f"retrans_{phase}", res["retrans"])
        else:
            res = tcpcheck(f)
            if rc != "0" or res is None or res.get("failed") != "0":
                fails.append(f"round {r} {p} tcpcheck {phase}: exit {rc}, "
                             f"{(res or {}).get('failed', '?')} failed connections "
                             f"({os.path.basename(f)})")
                continue
            if phase == "rr":
                add(p, "p50", float(res["p50_us"]), r)
                add(p, "p99", float(res["p99_us"]), r)
            else:
                add(p, "cps", float(res["conn_rate_per_s"]), r)
                add(p, "conns", int(res["ok"]))
    # tandemd counters and CPU per phase.
    counters = {}
    for r, slot, p, phase, rc, f in runs:
        if phase != "cr":
            continue
        for a, b, ph in ((0, 2, "bulk"), (2, 3, "rr"), (3, 4, "cr")):
            d = delta(run, r, p, a, b)
            u0, s0 = cpu.get((r, p, str(a)), (0, 0))
            u1, s1 = cpu.get((r, p, str(b)), (0, 0))
            d["cpu_user_s"] = (u1 - u0) / CLK_TCK
            d["cpu_sys_s"] = (s1 - s0) / CLK_TCK
            c = counters.setdefault(p, {}).setdefault(ph, {})
            for k, v in d.items():
                c[k] = c.get(k, 0) + v
            if p in TANDEM and ph == "bulk":
                # Bytes tandemd forwarded plus those its fast path translated in the kernel.
                gb = sum(v for k, v in d.items()
                         if k.startswith(("tandem_bytes_total", "tandem_fastpath_bytes_total"))) / 1e9
                if gb > 0:
                    add(p, "cpu_per_gb", (d["cpu_user_s"] + d["cpu_sys_s"]) / gb)
            if p in TANDEM and ph == "cr":
                n = d.get("tandem_flows_created_total", 0)
                if n > 0:
                    add(p, "cpu_us_per_conn", (d["cpu_user_s"] + d["cpu_sys_s"]) * 1e6 / n)
    return meta, vals, fails, counters, by_round


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"


def render(run):
    meta, vals, fails, counters, by_round = collect(run)
    paths = meta["paths"].split()
    rows = [("Throughput client→backend, Gbit/s", "gbps_fwd", 2, True),
            ("Throughput backend→client (-R), Gbit/s", "gbps_rev", 2, True),
            ("RR 64 B latency p50, µs", "p50", 1, False),
            ("RR 64 B latency p99, µs", "p99", 1, False),
            ("New connections/s (verified)", "cps", 0, True),
            ("iperf3 retransmits per run (c→b)", "retrans_fwd", 0, None),
            ("iperf3 retransmits per run (-R)", "retrans_rev", 0, None),
            ("Mean packet size received by the backend (c→b), B", "rxsize_fwd", 0, None),
            ("Mean packet size received by the client (-R), B", "rxsize_rev", 0, None),
            ("Packets dropped on the veths per run (c→b / -R)", "ifdrops", 0, None),
            ("tandemd CPU s per GB forwarded (bulk)", "cpu_per_gb", 2, None),
            ("tandemd CPU µs per connection", "cpu_us_per_conn", 0, None)]
    base = vals.get("kernel", {})
    out = []
    out.append("| Median of %s rounds | %s |" % (meta["rounds"],
               " | ".join(PATH_NAMES[p] for p in paths)))
    out.append("|---|" + "---:|" * len(paths))
    for label, key, digits, _ in rows:
        cells = []
        if key == "ifdrops":
            for p in paths:
                f_ = med(vals.get(p, {}).get("ifdrops_fwd", []))
                r_ = med(vals.get(p, {}).get("ifdrops_rev", []))
                cells.append(f"{fmt(f_, 0)} / {fmt(r_, 0)}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
            continue
        for p in paths:
            xs = vals.get(p, {}).get(key, [])
            m = med(xs)
            cell = fmt(m, digits)
            b = med(base.get(key, []))
            if m is not None and b and p != "kernel" and key in (
                    "gbps_fwd", "gbps_rev", "p50", "p99", "cps"):
                cell += f" ({m / b:.2f}×)"
            if xs and len(xs) < int(meta["rounds"]):
                cell += f" [{len(xs)}/{meta['rounds']} runs]"
            if key.startswith("cpu") and p not in TANDEM:
                cell = "–"
            cells.append(cell)
        if all(c in ("–", "n/a") for c in cells):
            continue
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Ratios in parentheses: path ÷ kernel forwarding, medians of this run "
               "(throughput and connections/s: higher is better; latency: lower is better).")
    out.append("")
    out.append("Spread (min – max over rounds):")
    out.append("")
    out.append("| Metric | " + " | ".join(PATH_NAMES[p] for p in paths) + " |")
    out.append("|---|" + "---:|" * len(paths))
    for label, key, digits, _ in rows[:5]:
        cells = []
        for p in paths:
            xs = vals.get(p, {}).get(key, [])
            cells.append(f"{fmt(min(xs), digits)} – {fmt(max(xs), digits)}" if xs else "n/a")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    # Ratios within each round: drift of the shared machine between rounds cancels out.
    others = [p for p in paths if p != "kernel"]
    if "kernel" in paths and others:
        out.append("Ratio to kernel forwarding within each round (round 1, 2, ...; median last), "
                   "and the other tenants' CPU use sampled just before the path ran:")
        out.append("")
        out.append("| Metric | " + " | ".join(PATH_NAMES[p] for p in others) + " |")
        out.append("|---|" + "---|" * len(others))
        for label, key in (("Throughput c→b", "gbps_fwd"), ("Throughput -R", "gbps_rev"),
                           ("RR p50", "p50"), ("Connections/s", "cps")):
            cells = []
            k = by_round.get(("kernel", key), {})
            for p in others:
                x = by_round.get((p, key), {})
                rs = [x[r] / k[r] for r in sorted(x, key=int) if r in k and k[r]]
                cells.append(" ".join(f"{v:.2f}" for v in rs) +
                             (f" (median **{med(rs):.2f}**)" if rs else "n/a"))
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        cells = []
        for p in others:
            x = by_round.get((p, "bg_busy"), {})
            cells.append(" ".join(f"{x[r]}%" for r in sorted(x, key=int)))
        out.append("| Other tenants' CPU before the path | " + " | ".join(cells) + " |")
        k = by_round.get(("kernel", "bg_busy"), {})
        out.append("")
        out.append("Other tenants' CPU before the kernel path, per round: " +
                   " ".join(f"{k[r]}%" for r in sorted(k, key=int)))
        out.append("")
    # tandem counters, summed over all rounds.
    tpaths = [p for p in paths if p in TANDEM]
    if tpaths:
        out.append("tandemd counters, summed over all rounds (deltas while the path ran):")
        out.append("")
        out.append("| Counter | " + " | ".join(PATH_NAMES[p] for p in tpaths) + " |")
        out.append("|---|" + "---:|" * len(tpaths))
        def total(p, pred, phases=("bulk", "rr", "cr")):
            return sum(v for ph in phases for k, v in counters.get(p, {}).get(ph, {}).items()
                       if pred(k))
        def row(label, vs):
            out.append(f"| {label} | " + " | ".join(vs) + " |")
        def count(name, phases=("bulk", "rr", "cr")):
            return [f"{total(p, lambda k: k == name, phases):.0f}" for p in tpaths]
        row("packets queued (bulk phases)", count("tandem_nfq_packets_total", ("bulk",)))
        row("GSO super-packets among them", count("tandem_gso_packets_total", ("bulk",)))
        def avg(p):
            n = total(p, lambda k: k == "tandem_nfq_packets_total", ("bulk",))
            b = total(p, lambda k: k.startswith("tandem_bytes_total"), ("bulk",))
            return f"{b / n:.0f}" if n else "n/a"
        row("mean IP bytes per queued packet (bulk)", [avg(p) for p in tpaths])
        def reads(p):
            n = total(p, lambda k: k == "tandem_nfq_packets_total", ("bulk",))
            r = total(p, lambda k: k == "tandem_nfq_reads_total", ("bulk",))
            s = total(p, lambda k: k == "tandem_nfq_sends_total", ("bulk",))
            return f"{n / r:.1f} / {n / s:.1f}" if r and s else "n/a"
        row("packets per recvmmsg / per verdict sendmsg (bulk)", [reads(p) for p in tpaths])
        row("full checksums computed (bulk)", count("tandem_full_checksums_total", ("bulk",)))
        def cpu_split(p):
            u = total(p, lambda k: k == "cpu_user_s", ("bulk",))
            s = total(p, lambda k: k == "cpu_sys_s", ("bulk",))
            return f"{u:.1f} / {s:.1f}"
        row("tandemd CPU user / sys s (bulk)", [cpu_split(p) for p in tpaths])
        row("flows created", count("tandem_flows_created_total"))
        if "tandem-splice" in tpaths:
            row("SYN cookies sent", count("tandem_syncookies_sent_total"))
            def per_conn(p):
                n = total(p, lambda k: k == "tandem_flows_created_total", ("cr",))
                h = total(p, lambda k: k == "tandem_nfq_held_total", ("cr",))
                d = total(p, lambda k: k == PENDING, ("cr",))
                return f"{h / n:.2f} / {d / n:.2f}" if n else "n/a"
            row("client segments before the backend leg was up, per connection: held / "
                "dropped as splice_pending (connect-rate)", [per_conn(p) for p in tpaths])
        def queued_per_conn(p):
            n = total(p, lambda k: k == "tandem_flows_created_total", ("cr",))
            q = total(p, lambda k: k == "tandem_nfq_packets_total", ("cr",))
            return f"{q / n:.2f}" if n else "n/a"
        row("packets through NFQUEUE per connection (connect-rate)",
            [queued_per_conn(p) for p in tpaths])
        if any(p.endswith("-fp") for p in tpaths):
            def fast(p, phase):
                return f"{total(p, lambda k: k == 'tandem_fastpath_packets_total', (phase,)):.0f}"
            row("packets translated by the kernel fast path (bulk / rr / connect-rate)",
                [" / ".join(fast(p, ph) for ph in ("bulk", "rr", "cr")) for p in tpaths])
            for k in ('tandem_fastpath_passed_total{reason="failed"}',
                      "tandem_fastpath_events_full_total"):
                row(f"`{k}`", [f"{total(p, lambda x, k=k: x == k):.0f}" for p in tpaths])
        # Everything that signals a loss or an error.
        keys = set()
        for p in tpaths:
            for ph in counters.get(p, {}).values():
                keys.update(k for k, v in ph.items() if v != 0 and (
                    k.startswith("tandem_drops_total") or k.startswith("tandem_nfq_kernel_dropped")
                    or k.startswith("tandem_nfq_errors") or k in (
                        "tandem_nfq_enobufs_total", "tandem_nfq_truncated_total",
                        "tandem_nfq_foreign_total", "tandem_seq_out_of_window_total",
                        "tandem_rst_challenged_total", "tandem_syn_in_established_total",
                        "tandem_flows_reopened_total", "tandem_flows_expired_total")
                    or k.startswith("tandem_nfq_verdicts_total{verdict=\"drop\"")))
        for k in sorted(keys):
            row(f"`{k}`", [f"{total(p, lambda x, k=k: x == k):.0f}" for p in tpaths])
        unexpected = [k for k in keys if k.startswith("tandem_drops_total") and any(
                      total(p, lambda x, k=k: x == k) and
                      re.search(r'reason="([^"]+)"', k).group(1) not in
                      EXPECTED_DROPS.get(p, set()) for p in tpaths)]
        unexpected += [k for k in keys if k.startswith("tandem_nfq_kernel_dropped") or
                       k.startswith("tandem_nfq_errors") or k == "tandem_nfq_enobufs_total"]
        out.append("")
        out.append("Drops and losses: " + ("none (every drop-reason, kernel-queue-drop and "
                   "I/O-error counter stayed at zero, but the expected `splice_pending` of the "
                   "splice path)." if not unexpected else
                   "**non-zero: " + ", ".join(f"`{k}`" for k in sorted(unexpected)) + "**."))
        # Idle paths: tandem must not have seen the other paths' packets.
        stray = []
        for p in paths:
            if p in TANDEM:
                continue
            n = total(p, lambda k: k == "tandem_nfq_packets_total")
            if n:
                stray.append(f"{p}: {n:.0f}")
        if stray:
            out.append("**tandemd queued packets while a non-tandem path ran: "
                       f"{', '.join(stray)}**")
        out.append("")
    if "tandem-splice" in paths or "tandem-splice-fp" in paths:
        out.extend(render_targets(paths, by_round))
    ftext, ffails = render_flood(run)
    out.extend(ftext)
    fails = fails + ffails
    if fails:
        out.append("**Failed runs (excluded from the medians):**")
        out.append("")
        out.extend(f"- {f}" for f in fails)
    else:
        out.append("Every run completed; every tcpcheck connection was verified "
                   f"({sum(sum(v.get('conns', [])) for v in vals.values())} short connections, "
                   "plus the RR connections).")
    out.append("")
    return "\n".join(out)


def render_targets(paths, by_round):
    """The issue's splice-mode targets, as ratios within each round."""
    out = ["Splice-mode targets: ratios **within each round** (round 1, 2, ...; median last):", "",
           "| Ratio | Target | Per round | Median |", "|---|---|---|---:|"]
    def ratio(label, target, key, num, den):
        if num not in paths or den not in paths:
            return
        x, y = by_round.get((num, key), {}), by_round.get((den, key), {})
        rs = [x[r] / y[r] for r in sorted(x, key=int) if r in y and y[r]]
        out.append(f"| {label} | {target} | " + " ".join(f"{v:.2f}" for v in rs) +
                   f" | {fmt(med(rs), 2)} |")
    ratio("Throughput c→b: splice ÷ passthrough (transparent)", "≥ 0.95", "gbps_fwd",
          "tandem-splice", "tandem-tr")
    ratio("Throughput -R: splice ÷ passthrough (transparent)", "≥ 0.95", "gbps_rev",
          "tandem-splice", "tandem-tr")
    ratio("Connections/s: splice ÷ conntrack DNAT", "≥ 1.00", "cps", "tandem-splice", "dnat")
    ratio("Connections/s: splice ÷ passthrough (transparent)", "–", "cps", "tandem-splice",
          "tandem-tr")
    ratio("RR p50: splice ÷ passthrough (transparent)", "–", "p50", "tandem-splice", "tandem-tr")
    ratio("Throughput c→b: splice ÷ passthrough, both on the fast path", "≥ 0.95", "gbps_fwd",
          "tandem-splice-fp", "tandem-tr-fp")
    ratio("Throughput -R: splice ÷ passthrough, both on the fast path", "≥ 0.95", "gbps_rev",
          "tandem-splice-fp", "tandem-tr-fp")
    ratio("Connections/s: splice ÷ passthrough, both on the fast path", "–", "cps",
          "tandem-splice-fp", "tandem-tr-fp")
    ratio("RR p50: splice ÷ passthrough, both on the fast path", "–", "p50", "tandem-splice-fp",
          "tandem-tr-fp")
    if "tandem-splice-fp" in paths:
        ratio("Connections/s: splice + fast path ÷ conntrack DNAT", "≥ 1.00", "cps",
              "tandem-splice-fp", "dnat")
        ratio("Connections/s: splice + fast path ÷ splice", "–", "cps", "tandem-splice-fp",
              "tandem-splice")
        ratio("Throughput c→b: splice + fast path ÷ splice", "–", "gbps_fwd", "tandem-splice-fp",
              "tandem-splice")
        ratio("Throughput -R: splice + fast path ÷ splice", "–", "gbps_rev", "tandem-splice-fp",
              "tandem-splice")
        ratio("RR p50: splice + fast path ÷ splice", "–", "p50", "tandem-splice-fp",
              "tandem-splice")
    out.append("")
    return out


def flood_runs(run):
    """{round: {phase: (rc, file)}} from flood.tsv (absent when FLOOD=0)."""
    rounds = {}
    try:
        lines = open(os.path.join(run, "flood.tsv")).read().splitlines()
    except OSError:
        return rounds
    for l in lines:
        r, phase, rc, f = l.split("\t")
        rounds.setdefault(r, {})[phase] = (rc, os.path.join(run, f) if f != "-" else None)
    return rounds


def snap_time(run, r, k):
    """Midpoint of the /metrics request of a flood snapshot."""
    try:
        text = open(os.path.join(run, "snap", f"{r}-flood-{k}.time")).read()
        ts = [float(x) for x in text.split()]
        return sum(ts) / len(ts) if ts else None
    except (OSError, ValueError):
        return None


def flood_round(run, r, ph):
    """Numbers of one round's SYN-flood phase (None where missing)."""
    res = {"bg": int(ph["bg"][0]) if "bg" in ph else None}
    fails = []
    for name in ("base", "cr"):
        rc, f = ph.get(name, ("?", None))
        t = tcpcheck(f) if f else None
        if rc != "0" or t is None or t.get("failed") != "0":
            fails.append(f"round {r} SYN flood, legitimate connect-rate "
                         f"{'without' if name == 'base' else 'during'} the flood: exit {rc}, "
                         f"{(t or {}).get('failed', '?')} failed connections")
            res[name] = None
        else:
            res[name] = float(t["conn_rate_per_s"])
    rc, f = ph.get("inject", ("?", None))
    m = None
    if f:
        try:
            m = re.search(r"sent=(\d+) elapsed_ms=([\d.]+) rate_pps=([\d.]+)", open(f).read())
        except OSError:
            pass
    if rc != "0" or not m:
        fails.append(f"round {r} SYN flood: tcpinject exit {rc}")
    res["sent"] = int(m.group(1)) if m else None
    res["sent_pps"] = float(m.group(3)) if m else None
    t2, t3 = snap_time(run, r, 2), snap_time(run, r, 3)
    d = delta(run, r, "flood", 2, 3)
    legit = d.get("tandem_flows_created_total", 0)
    if t2 and t3 and t3 > t2:
        # What the attacker put on its wire in the same window (its veth's tx counter).
        atk = link_delta(run, r, "flood", 2, 3, "atk").get("eth0")
        res["wire_pps"] = atk[4] / (t3 - t2) if atk else None
        res["absorbed_pps"] = (d.get("tandem_syncookies_sent_total", 0) +
                               d.get("tandem_fastpath_syn_answered_total", 0) +
                               d.get("tandem_fastpath_syn_unroutable_total", 0) - legit) / (t3 - t2)
        res["qdrop_pps"] = sum(v for k, v in d.items()
                               if k.startswith("tandem_nfq_kernel_dropped")) / (t3 - t2)
        u0, s0 = load(run)[2].get((r, "flood", "2"), (0, 0))
        u1, s1 = load(run)[2].get((r, "flood", "3"), (0, 0))
        res["cpu_pct"] = 100 * ((u1 - u0) + (s1 - s0)) / CLK_TCK / (t3 - t2)
    res["pending_per_conn"] = d.get(PENDING, 0) / legit if legit else None
    res["held_per_conn"] = d.get("tandem_nfq_held_total", 0) / legit if legit else None
    # Over the whole flood: cookies for spoofed SYNs ÷ SYNs sent; state held for them.
    d14 = delta(run, r, "flood", 1, 4)
    spoofed = (d14.get("tandem_syncookies_sent_total", 0) +
               d14.get("tandem_fastpath_syn_answered_total", 0) +
               d14.get("tandem_fastpath_syn_unroutable_total", 0) -
               d14.get("tandem_flows_created_total", 0))
    res["answered"] = spoofed / res["sent"] if res["sent"] else None
    res["unanswered"] = res["sent"] - spoofed if res["sent"] else None
    a1 = prom(os.path.join(run, "snap", f"{r}-flood-1.prom"))
    a4 = prom(os.path.join(run, "snap", f"{r}-flood-4.prom"))
    res["flows_growth"] = (a4.get("tandem_flows_active", 0) - a1.get("tandem_flows_active", 0))
    res["flows_created"] = d14.get("tandem_flows_created_total", 0)
    res["veth_drops"] = sum(v[2] + v[5] for n in ("atk", "prx", "sw")
                            for v in link_delta(run, r, "flood", 1, 4, n).values())
    return res, fails


def render_flood(run):
    rounds = flood_runs(run)
    if not rounds:
        return [], []
    meta = load(run)[0]
    rate = int(meta.get("flood_rate", "0"))
    speed = f"paced at {rate} per second" if rate else "at full speed"
    fp = meta.get("flood_path", "tandem-splice") == "tandem-splice-fp"
    where = ("tandem splice + fast path, transparent; SYNs answered by tandemd or, with "
             "fastpath_syn, by the kernel" if fp else "tandem splice, transparent")
    out = [f"SYN flood on the splice path ({where}): the attacker namespace "
           f"sends spoofed SYNs {speed} (`tcpinject --flood`, random sources) while "
           "legitimate clients run `tcpcheck --connect-rate`; the same measurement without the "
           "flood just before:", "",
           "| Round | Spoofed SYN/s sent (whole flood / during the legit run) | Absorbed by tandem "
           "(cookies/s) | Lost before tandem "
           "(queue full)/s | tandemd CPU | Legit conn/s without flood | Legit conn/s during "
           "flood | Ratio | Held / splice_pending per conn (flood) | Spoofed SYNs answered | "
           "Flows created / flows_active growth | Veth drops | Other tenants' CPU |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    allres, fails = [], []
    for r in sorted(rounds, key=int):
        res, f = flood_round(run, r, rounds[r])
        fails += f
        allres.append(res)
        ratio = res["cr"] / res["base"] if res.get("cr") and res.get("base") else None
        res["ratio"] = ratio
        out.append(f"| {int(r) + 1} | {fmt(res['sent_pps'], 0)} / {fmt(res.get('wire_pps'), 0)}"
                   f" | {fmt(res.get('absorbed_pps'), 0)}"
                   f" | {fmt(res.get('qdrop_pps'), 0)} | {fmt(res.get('cpu_pct'), 0)} %"
                   f" | {fmt(res['base'], 0)} | {fmt(res['cr'], 0)} | {fmt(ratio, 2)}"
                   f" | {fmt(res['held_per_conn'], 2)} / {fmt(res['pending_per_conn'], 2)}"
                   f" | {fmt(res['answered'] * 100 if res['answered'] is not None else None, 1)} %"
                   f" | {res['flows_created']:.0f} / {res['flows_growth']:+.0f}"
                   f" | {res['veth_drops']} | {res['bg']}% |")
    def m(k):
        return med([x[k] for x in allres if x.get(k) is not None])
    out.append(f"| **median** | {fmt(m('sent_pps'), 0)} / **{fmt(m('wire_pps'), 0)}** | "
               f"**{fmt(m('absorbed_pps'), 0)}** | "
               f"{fmt(m('qdrop_pps'), 0)} | {fmt(m('cpu_pct'), 0)} % | **{fmt(m('base'), 0)}** | "
               f"**{fmt(m('cr'), 0)}** | **{fmt(m('ratio'), 2)}** | "
               f"{fmt(m('held_per_conn'), 2)} / {fmt(m('pending_per_conn'), 2)} | | | | |")
    out.append("")
    out.append("Absorbed: `tandem_syncookies_sent_total` (plus the kernel's answers and "
               "its drops of blackholed sources, `tandem_fastpath_syn_answered_total` and "
               "`tandem_fastpath_syn_unroutable_total`) minus the flows "
               "created (the legitimate connections' SYNs), per second, while the legitimate clients ran. Lost before "
               "tandem: `tandem_nfq_kernel_dropped_total` (NFQUEUE full) per second. Spoofed SYNs "
               "answered: cookies for spoofed SYNs ÷ SYNs the attacker sent, over the whole "
               "flood. Flows: the flood creates none; growth of `tandem_flows_active` is the "
               "legitimate connections (TIME_WAIT), not the flood.")
    out.append("")
    return out, fails


def progress_flood(run, r):
    ph = flood_runs(run).get(r)
    if not ph:
        return f"# round {int(r) + 1} SYN flood: no data"
    res, fails = flood_round(run, r, ph)
    return (f"# round {int(r) + 1} SYN flood: sent {fmt(res['sent_pps'], 0)} SYN/s "
            f"({fmt(res.get('wire_pps'), 0)}/s during the legit run), absorbed "
            f"{fmt(res.get('absorbed_pps'), 0)}/s, lost before tandem "
            f"{fmt(res.get('qdrop_pps'), 0)}/s; legit {fmt(res['base'], 0)} conn/s without, "
            f"{fmt(res['cr'], 0)} during; flows created {res['flows_created']:.0f}"
            + (f"; FAILED: {'; '.join(fails)}" if fails else ""))


def header(run):
    meta, runs, _ = load(run)
    bg = sorted(int(x[4]) for x in runs if x[3] == "bg")
    bg_text = (f"median {statistics.median(bg):.0f}%, max {bg[-1]}% over {len(bg)} samples"
               if bg else "not sampled")
    h = [f"# tandem system benchmark {meta['date']}", "",
         f"- Command: `{meta['command']}`",
         f"- Settings: ROUNDS={meta['rounds']} DURATION={meta['duration']} OMIT={meta['omit']} "
         f"RR_COUNT={meta['rr_count']} CR_DURATION={meta['cr_duration']} "
         f"CR_CONNS={meta['cr_conns']}; path order rotated each round",
         f"- Other tenants' CPU use just before each path ran (0.5 s sample, this run's own "
         f"processes idle): {bg_text}",
         f"- Kernel: {meta['kernel']}; CPU: {meta['cpu']} × {meta['nproc']}; "
         f"load average at start {meta['load_start']}, at end {meta.get('load_end', '?')}",
         f"- tandemd: {meta['tandemd']}; {meta['iperf3']}",
         f"- Binaries: {meta.get('binaries', 'not recorded')}",
         f"- Offloads on the proxy's interfaces: {meta['offloads']}",
         f"- Duration: {meta.get('elapsed', '?')} s; raw data: `{meta['run_dir']}`", "", ""]
    return "\n".join(h)


def progress(run, r, p):
    _, runs, _ = load(run)
    parts = []
    for rr, slot, pp, phase, rc, f in runs:
        if rr != r or pp != p:
            continue
        if phase == "bg":
            parts.append(f"background CPU {rc}%")
            continue
        if phase in ("fwd", "rev"):
            res = iperf(f)
            parts.append(f"{phase} " + (f"{res['gbps']:.2f} Gbit/s ({res['retrans']} retr)"
                                        if rc == "0" and res else f"FAILED (exit {rc})"))
        else:
            res = tcpcheck(f) or {}
            ok = rc == "0" and res.get("failed") == "0"
            if phase == "rr":
                parts.append(f"rr p50 {res.get('p50_us')} p99 {res.get('p99_us')} us"
                             if ok else f"rr FAILED (exit {rc})")
            else:
                parts.append(f"{res.get('conn_rate_per_s')} conn/s ({res.get('ok')} ok)"
                             if ok else f"cr FAILED (exit {rc}, {res.get('failed')} failed)")
    if p in TANDEM:
        d = delta(run, r, p, 0, 4)
        bad = {k: v for k, v in d.items() if v and (k.startswith("tandem_drops_total")
               or k.startswith("tandem_nfq_kernel_dropped") or k.startswith("tandem_nfq_errors"))}
        parts.append("tandem drops: " + (", ".join(f"{k}={v:.0f}" for k, v in bad.items())
                                         if bad else "none"))
    return f"# round {int(r) + 1} {p}: " + "; ".join(parts)


if __name__ == "__main__":
    if sys.argv[1] == "--progress":
        print(progress(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif sys.argv[1] == "--progress-flood":
        print(progress_flood(sys.argv[2], sys.argv[3]))
    else:
        print(header(sys.argv[1]) + render(sys.argv[1]))
PYEOF
}

# ---------------------------------------------------------------------------------------------
# Main

offloads() {
  in_ns "$NS_PRX" ethtool -k front 2>/dev/null |
    awk -F': ' '
      /^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload):/ {
        sub(/ \[fixed\]/, "", $2); printf "%s%s=%s", sep, $1, $2; sep=", " }'
}

write_meta() {
  {
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'command=ROUNDS=%s DURATION=%s OMIT=%s RR_COUNT=%s CR_DURATION=%s CR_CONNS=%s' \
      "$ROUNDS" "$DURATION" "$OMIT" "$RR_COUNT" "$CR_DURATION" "$CR_CONNS"
    printf ' FLOOD=%s FLOOD_RATE=%s' "$FLOOD" "$FLOOD_RATE"
    [ -n "$CR_SWEEP" ] && printf ' CR_SWEEP="%s" CR_SWEEP_ROUNDS=%s' "$CR_SWEEP" "$CR_SWEEP_ROUNDS"
    [ -n "${FP_SYN:-}" ] && printf ' FP_SYN=%s' "$FP_SYN"
    [ -n "${FP_SPLICE:-}" ] && printf ' FP_SPLICE=%s' "$FP_SPLICE"
    [ -n "${FP_BIND:-}" ] && printf ' FP_BIND=%s' "$FP_BIND"
    [ -n "${FP_REDIRECT:-}" ] && printf ' FP_REDIRECT=%s' "$FP_REDIRECT"
    [ -n "$HANDSHAKE_WINDOW" ] && printf ' HANDSHAKE_WINDOW=%s' "$HANDSHAKE_WINDOW"
    printf ' QUIET_BUSY=%s QUIET_MAX=%s PATHS="%s" %s\n' "$QUIET_BUSY" "$QUIET_MAX" "$PATHS" \
      "$BENCH_CMDLINE"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "omit=$OMIT"
    echo "rr_count=$RR_COUNT"
    echo "cr_duration=$CR_DURATION"
    echo "cr_conns=$CR_CONNS"
    echo "cr_sweep=$CR_SWEEP"
    echo "cr_sweep_rounds=$CR_SWEEP_ROUNDS"
    echo "paths=${PATH_LIST[*]}"
    echo "flood=$FLOOD"
    echo "flood_rate=$FLOOD_RATE"
    echo "flood_path=$FLOOD_PATH"
    echo "spoof_net=$SPOOF_NET"
    echo "kernel=$(uname -r)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "nproc=$(nproc)"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tandemd=$("$TANDEMD" --version 2>&1 | head -n 1)"
    echo "binaries=$BINARIES"
    echo "iperf3=$(iperf3 --version | head -n 1)"
    echo "offloads=$(offloads)"
    echo "run_dir=${RUN_DIR#"$ROOT"/}"
  } >"$RUN_DIR/meta.txt"
}

log "system benchmark: ${#PATH_LIST[@]} paths x $ROUNDS rounds, iperf3 -t $DURATION (-O $OMIT)," \
  "rr $RR_COUNT round trips, connect-rate ${CR_DURATION}s x $CR_CONNS; raw data in $RUN_DIR"
START_S=$(date +%s)
if ! setup_paths; then
  dump_state >&2
  die "setting up the topology failed"
fi
write_analyzer
write_sweep_analyzer
write_meta
: >"$RUNS_TSV"
: >"$CPU_TSV"
: >"$FLOOD_TSV"

# Every path must carry one verified connection before anything is measured.
for p in "${PATH_LIST[@]}"; do
  read -r addr port <<<"$(path_dst "$p" tcpc)"
  if is_fp "$p" && ! fp_up; then
    die "the fast-path tandemd does not start: $(tail -n 5 "$FP_LOG" 2>/dev/null)"
  fi
  if ! out=$(in_ns "$NS_CLI" timeout 20 "$TCPCHECK" client --connect "$addr:$port" \
      --bytes 100000 2>&1); then
    dump_state >&2
    die "path $p ($addr:$port) does not carry a verified connection: $out"
  fi
  is_fp "$p" && fp_down
done

n=${#PATH_LIST[@]}
for ((r = 0; r < ROUNDS; r++)); do
  for ((s = 0; s < n; s++)); do
    run_path "$r" "$s" "${PATH_LIST[$(((s + r) % n))]}"
  done
  [ "$FLOOD" -ne 0 ] && run_flood "$r"
done

if [ -n "$CR_SWEEP" ]; then
  mkdir -p "$RUN_DIR/sweep"
  : >"$SWEEP_TSV"
  read -r -a SWEEP_LIST <<<"$CR_SWEEP"
  for ((r = 0; r < CR_SWEEP_ROUNDS; r++)); do
    for cn in "${SWEEP_LIST[@]}"; do
      for ((s = 0; s < n; s++)); do
        run_sweep_one "$r" "$cn" "${PATH_LIST[$(((s + r) % n))]}"
      done
    done
  done
fi

if ! kill -0 "$TDM_TANDEMD_PID" 2>/dev/null; then
  echo "system_bench: tandemd died during the run (log: $RUN_DIR/tandemd.log)" >&2
fi
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN_DIR/meta.txt"
echo "elapsed=$(($(date +%s) - START_S))" >>"$RUN_DIR/meta.txt"
if [ "$ROUNDS" -ge 1 ]; then
  "$PY" "$RUN_DIR/analyze.py" "$RUN_DIR" >"$RESULT_MD" || die "analysis failed"
else
  echo "# Connection-rate sweep ($(date -u '+%Y-%m-%d %H:%M UTC'))" >"$RESULT_MD"
  sed -n 's/^command=/Command: /p; s/^binaries=/Binaries: /p' "$RUN_DIR/meta.txt" >>"$RESULT_MD"
  echo >>"$RESULT_MD"
fi
if [ -n "$CR_SWEEP" ]; then
  "$PY" "$RUN_DIR/sweep.py" "$RUN_DIR" >>"$RESULT_MD" || die "sweep analysis failed"
fi
cat "$RESULT_MD"
log "results: $RESULT_MD"
