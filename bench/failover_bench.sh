#!/usr/bin/env bash
# Failover benchmark: tandem's proxy pair side by side with keepalived + conntrackd + Linux DNAT,
# on the same namespace topology (tests/integration/pair_lib.sh), in one run, interleaved per
# round.
#
#   client 10.N.1.2 --+-- brf --+-- A front 10.N.1.11   A back 10.N.2.11 --+-- brb --+-- be1 10.N.2.2
#                                +-- B front 10.N.1.12   B back 10.N.2.12 --+         +-- be2 10.N.2.3
#   The group that moves: VIP 10.N.1.100/32 (front) and the backends' gateway 10.N.2.1/32 (back);
#   addressing transparent, a pool of two backends chosen per flow.
#
# Systems (one fresh topology per trial):
#   tandem-HB   two tandemd with [sync], heartbeat_interval HB ms (10, 50, 100), miss_count
#               HB_MISS (default 3, like VRRP's 3 adverts + skew); tandem-HBxM: miss_count M.
#               Heartbeats on both paths: the sync link (back network) and, unless
#               FRONT_HB=0, the front network (sync.front_bind / front_peer).
#               Suffix rt (tandem-10rt, tandem-10x5rt): tandemd under chrt -r 50, like
#               keepalived's realtime VRRP process. Crash: SIGKILL of the active tandemd, then
#               its links down. Suffix vmac after it (tandem-10x3rtvmac): sync.takeover = vmac
#               (docs/vmac.md: a shared virtual MAC, zero-loss replay) instead of GARP.
#   ka-strict   keepalived (VRRPv3, advert_int 0.01, vrrp_rt_priority + vrrp_rlimit_rttime),
#   ka-loose    conntrackd FTFW (notify_master: conntrackd -c, -f, -R, -B), iptables DNAT of
#               VIP:80 to be1/be2 alternately (statistic nth, so the mapping is per flow).
#               strict: nf_conntrack_tcp_loose=0 (a flow is only picked up from committed
#               state); loose: the kernel default 1. Both drop ctstate INVALID. Crash: SIGKILL
#               of the master's keepalived (parent and VRRP child) and conntrackd, then its
#               links down.
# Per trial, through the VIP: a verified stream (tcpcheck --stream, STREAM_RATE B/s each way,
# 10 ms trace), a request/response client (tcpcheck --rr, 64 B each way, back to back, one
# connection), and HELD idle verified connections (64 KiB each way, closed after the crash). The
# crash comes CRASH_AT s after all of them are established (the node active at that moment is
# crashed). Reported per system: the largest gap between two receptions by the stream and by the
# rr client that overlaps the 1.5 s after the crash (median and worst over the rounds; from the
# clients' --trace), connections survived, bytes verified, resets, spurious role changes.
#
# Then (once per run, tandem at 100 ms heartbeats):
#   sync cost   SYNC_SECONDS of short verified connections (tcpcheck --connect-rate) through
#               the pair; per connection: sync updates (tandem_sync_updates_sent_total) and UDP
#               packets/bytes on the sync port (iptables counters in A), the heartbeats' share
#               (measured over an idle interval of the same length) subtracted. The same for
#               conntrackd's channel (ka-loose setup).
#   bulk resync A's flow table filled with BULK_SIZES flows (tcpinject --flood: one SYN from a
#               random source per flow, dropped by the backends, timeouts.syn_sent 900 s) while B
#               runs; then B stopped and started again (BULK_REPEAT times): the time from B's
#               start until its tandem_pair_ready is 1 (polled every 20 ms). Variant "absent"
#               (BULK_ABSENT_SIZES): B not running during the fill, started once afterwards.
#
# Usage (root):   bench/failover_bench.sh [--rounds N] [--quick] [--skip-bulk] [--skip-sync]
#                 [--systems "tandem-10 tandem-50 tandem-100 ka-strict ka-loose"] (default)
#   also: tandem-10x5 (miss_count 5), tandem-10rt (realtime), any tandem-HB[xM][rt]
#   --quick       2 rounds, bulk 100000 only
# Environment:    HB_MISS=3 HELD=20 STREAM_RATE=4194304 CRASH_AT=1.5 AFTER=2.5 SYNC_SECONDS=3
#                 BULK_SIZES="100000 1000000" BULK_REPEAT=3 BULK_ABSENT_SIZES=100000
#                 PERF=0 (1: perf record both daemons during each bulk) OUT=bench/out
#                 SEND_WINDOW= (bulk: sync.send_window of both nodes; empty: the default)
#                 HB_THREAD=on|off (sync.heartbeat_thread; unset: the daemon default, on)
#                 TANDEMD=... TCPCHECK=... TCPINJECT=... (default: build/release binaries)
# Installs keepalived, conntrackd and gnuplot-nox with apt-get if missing (bench only).
# Output: a markdown report on stdout and in $OUT/failover-<date>.md; raw data (client lines,
# traces, logs, trials.tsv) in $OUT/failover-<date>/; the figure's CSV and PNG there too.
set -u
BENCH_CMDLINE="$0${*:+ $*}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ROUNDS=5
QUICK=0
SKIP_BULK=0
SKIP_SYNC=0
SYSTEMS="tandem-10 tandem-50 tandem-100 ka-strict ka-loose"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --quick) QUICK=1 ;;
    --skip-bulk) SKIP_BULK=1 ;;
    --skip-sync) SKIP_SYNC=1 ;;
    --systems) SYSTEMS=$2; shift ;;
    *) echo "failover_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" -eq 1 ]; then
  ROUNDS=2
  BULK_SIZES=${BULK_SIZES:-100000}
  BULK_REPEAT=${BULK_REPEAT:-1}
fi
HB_MISS=${HB_MISS:-3}
FRONT_HB=${FRONT_HB:-1}
HELD=${HELD:-20}
STREAM_RATE=${STREAM_RATE:-4194304}
CRASH_AT=${CRASH_AT:-1.5}
AFTER=${AFTER:-2.5}
SYNC_SECONDS=${SYNC_SECONDS:-3}
BULK_SIZES=${BULK_SIZES:-100000 1000000}
BULK_REPEAT=${BULK_REPEAT:-3}
BULK_ABSENT_SIZES=${BULK_ABSENT_SIZES-100000}
OUT=${OUT:-$ROOT/bench/out}
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
TCPINJECT=${TCPINJECT:-$ROOT/build/release/tests/tools/tcpinject}

TDM_PREFIX=${TDM_PREFIX:-tfobench}
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/integration/pair_lib.sh
source "$ROOT/tests/integration/pair_lib.sh"

pair_init

die() {
  echo "failover_bench: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Preflight

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, iptables, NFQUEUE)"
[[ $ROUNDS =~ ^[0-9]+$ ]] || die "--rounds must be a whole number (0: sync cost and bulk only)"
for s in $SYSTEMS; do
  case "$s" in tandem-[0-9]*|ka-strict|ka-loose) ;; *) die "unknown system '$s'" ;; esac
done
need_pkgs=()
command -v keepalived >/dev/null || need_pkgs+=(keepalived)
command -v conntrackd >/dev/null || need_pkgs+=(conntrackd)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "# installing ${need_pkgs[*]} (bench only)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${need_pkgs[@]}") >&2 || echo "# apt-get failed" >&2
fi
for tool in keepalived conntrackd iptables ip curl python3; do
  command -v "$tool" >/dev/null || die "$tool not installed"
done
require_env TANDEMD TCPCHECK TCPINJECT

STAMP=$(date -u +%Y%m%d-%H%M%S)
RUN_DIR=$OUT/failover-$STAMP
RESULT_MD=$OUT/failover-$STAMP.md
mkdir -p "$RUN_DIR"/{trials,traces,logs} || die "cannot create $RUN_DIR"
BINARIES="tandemd sha256 $(sha256sum "$TANDEMD" | cut -c1-12) built \
$(date -u -r "$TANDEMD" '+%Y-%m-%d %H:%M UTC'); tcpcheck sha256 $(sha256sum "$TCPCHECK" | cut -c1-12)"
if ! cp "$TANDEMD" "$TDM_TMP/tandemd" || ! cp "$TCPCHECK" "$TDM_TMP/tcpcheck" ||
    ! cp "$TCPINJECT" "$TDM_TMP/tcpinject"; then
  die "cannot copy the binaries"
fi
TANDEMD=$TDM_TMP/tandemd
TCPCHECK=$TDM_TMP/tcpcheck
# The rt variants: tandemd with the round-robin realtime policy, as keepalived's VRRP process
# runs with vrrp_rt_priority (exec keeps the PID, so the crash still kills tandemd itself).
TANDEMD_RT=$TDM_TMP/tandemd-rt
printf '#!/bin/sh\nexec chrt -r 50 %s "$@"\n' "$TANDEMD" >"$TANDEMD_RT" && chmod 755 "$TANDEMD_RT"
TCPINJECT=$TDM_TMP/tcpinject

on_exit() {
  local rc=$?
  cleanup
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dump_state (lib.sh's fail() calls it; this script reports instead of failing)
dump_state() { :; }

TRIALS_TSV=$RUN_DIR/trials.tsv
printf 'round\tsystem\ttrial\tcrash_unix_ms\ttakeover\tvictim\tspurious\test_ms\tsetup_changes\n' >"$TRIALS_TSV"

# save_logs TAG: the trial's daemon logs into the run directory.
save_logs() {
  local f
  for f in "$TDM_TMP"/*.log; do
    [ -f "$f" ] && cp "$f" "$RUN_DIR/logs/$1-$(basename "$f")"
  done
  rm -f "$TDM_TMP"/*.log
}

# topo: a fresh pair topology with tcpcheck servers on both backends.
topo() {
  TDM_ADDRESSING=transparent
  pair_topo && tcpcheck_servers
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---------------------------------------------------------------------------------------------
# tandem

# tandem_pair HB_MS [EXTRA_TIMEOUTS]: A active, B standby and ready. Sets PID_A PID_B.
tandem_pair() {
  HB_INTERVAL=$(awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }')
  local timeouts=${2:-}
  local f
  for f in a b; do
    local node=1 prio=200 bind=$A_BACK peer=$B_BACK
    [ "$f" = b ] && node=2 prio=100 bind=$B_BACK peer=$A_BACK
    if [ "$FRONT_HB" = 1 ]; then
      local fb=$A_FRONT fp=$B_FRONT
      [ "$f" = b ] && fb=$B_FRONT fp=$A_FRONT
      pair_config "$TDM_TMP/$f.conf" "$node" "$prio" "$bind" "$peer" "$fb" "$fp"
    else
      pair_config "$TDM_TMP/$f.conf" "$node" "$prio" "$bind" "$peer"
    fi
    if [ -n "$timeouts" ]; then
      sed -i "s/^established = .*/&\n$timeouts/" "$TDM_TMP/$f.conf"
    fi
    sed -i 's/^max_flows = .*/max_flows = 1100000/' "$TDM_TMP/$f.conf"
    # [sync] is the config's last section (pair_config): vmac mode as in zeroloss_bench.sh.
    if [ "${TAKEOVER:-garp}" = vmac ]; then
      printf 'takeover = vmac\nvmac = 02:54:44:4d:00:01\n' >>"$TDM_TMP/$f.conf"
    fi
    if [ -n "${HB_THREAD:-}" ]; then  # sync.heartbeat_thread = on|off (default: the daemon's)
      printf 'heartbeat_thread = %s\n' "$HB_THREAD" >>"$TDM_TMP/$f.conf"
    fi
  done
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf" || return 1
  PID_A=$NODE_PID
  wait_for 5 is_role "$NS_PA" active || return 1
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf" || return 1
  PID_B=$NODE_PID
  chrt -p "$PID_A" >"$TDM_TMP/sched.log" 2>&1
  chrt -p "$PID_B" >>"$TDM_TMP/sched.log" 2>&1
  # One active, the other a ready standby. At short heartbeat intervals B sometimes takes over
  # at its start (counted: the trial's setup_changes); the crash then hits B, the active one.
  wait_for 5 pair_settled
}

pair_settled() {
  { is_role "$NS_PA" active && is_role "$NS_PB" standby && is_ready "$NS_PB"; } ||
    { is_role "$NS_PB" active && is_role "$NS_PA" standby && is_ready "$NS_PA"; }
}

# ---------------------------------------------------------------------------------------------
# keepalived + conntrackd + DNAT: ka_node, ka_pair, ka_crash, CTD_PORT
# shellcheck source-path=SCRIPTDIR source=failover/ka_lib.sh
source "$ROOT/bench/failover/ka_lib.sh"

# ---------------------------------------------------------------------------------------------
# One failover trial

# clients TAG: starts the stream, rr and held clients; sets CL_PIDS. They run CLIENT_S seconds:
# up to 3 s to get established, CRASH_AT before the crash, AFTER after it.
clients() {
  local tag=$1
  CLIENT_S=$(awk -v a="$CRASH_AT" -v b="$AFTER" 'BEGIN { print a + b + 3 }')
  bg_start "stream" "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream \
    --duration "$CLIENT_S" --rate "$STREAM_RATE" --timeout 5 \
    --trace "$RUN_DIR/traces/$tag-stream.csv"
  CL_PIDS=("$BG_PID")
  bg_start "rr" "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --duration "$CLIENT_S" \
    --size 64 --timeout 5 --trace "$RUN_DIR/traces/$tag-rr.csv"
  CL_PIDS+=("$BG_PID")
  bg_start "held" "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$HELD" \
    --bytes 65536 --hold-ms "$(awk -v t="$CLIENT_S" 'BEGIN { print int(t * 1000) }')" --timeout 5
  CL_PIDS+=("$BG_PID")
}

# established: the client's established connections to the VIP.
established() {
  in_ns "$NS_CLI" ss -Htn state established "dst $VIP:80" 2>/dev/null | wc -l
}
all_established() { [ "$(established)" -ge $((HELD + 2)) ]; }

# role_changes SYSTEM: role changes so far on both nodes (tandem: the metric; keepalived: the
# "Entering ... STATE" lines of both logs).
role_changes() {
  case "$1" in
    tandem-*) echo $(( $(metric_in "$NS_PA" tandem_pair_role_changes_total) + \
                       $(metric_in "$NS_PB" tandem_pair_role_changes_total) )) ;;
    ka-*) cat "$TDM_TMP"/keepalived-[ab].log 2>/dev/null | grep -c 'Entering .* STATE' ;;
  esac
}

# active_node SYSTEM: a or b, the node active (tandem) or holding the VIP (keepalived) now.
active_node() {
  case "$1" in
    tandem-*) if is_role "$NS_PB" active; then echo b; else echo a; fi ;;
    ka-*) if has_addr "$NS_PB" front "$VIP"; then echo b; else echo a; fi ;;
  esac
}

collect() {  # collect TAG
  local tag=$1 pid k
  for pid in "${CL_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for k in stream rr held; do
    cp "$TDM_TMP/$k.log" "$RUN_DIR/trials/$tag-$k.txt"
  done
}

trial() {  # trial ROUND SYSTEM
  local r=$1 sys=$2 tag="$1-$2" takeover=0 crash_ms est_ms t0 rc0 rc1 victim setup_changes
  topo || { echo "# $tag: topology failed" >&2; topo_down; return 1; }
  case "$sys" in
    tandem-*)
      # tandem-HB, tandem-HBxMISS, either with the suffix rt (tandemd under chrt -r 50)
      local hb=${sys#tandem-} miss=$HB_MISS bin=$TANDEMD tk_mode=garp
      if [[ $hb == *vmac ]]; then hb=${hb%vmac}; tk_mode=vmac; fi
      if [[ $hb == *rt ]]; then hb=${hb%rt}; bin=$TANDEMD_RT; fi
      if [[ $hb == *x* ]]; then miss=${hb#*x}; hb=${hb%x*}; fi
      if ! TANDEMD=$bin HB_MISS=$miss TAKEOVER=$tk_mode tandem_pair "$hb"; then
        echo "# $tag: the pair did not come up" >&2
        save_logs "$tag"; topo_down; return 1
      fi
      ;;
    ka-*)
      if ! ka_pair "${sys#ka-}"; then
        echo "# $tag: keepalived pair did not come up" >&2
        save_logs "$tag"; cp -r "$TDM_TMP"/ka-* "$RUN_DIR/logs/" 2>/dev/null; topo_down; return 1
      fi
      ;;
  esac
  rc0=$(role_changes "$sys")
  setup_changes=$rc0
  printf '%s\t%s\n' "$tag" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN_DIR/loadavg.tsv"
  t0=$(now_ms)
  clients "$tag"
  wait_for 3 all_established
  est_ms=$(( $(now_ms) - t0 ))
  sleep "$CRASH_AT"
  # Crash the node that is active now (a spurious failover before the crash may have moved it).
  victim=$(active_node "$sys")
  rc1=$(role_changes "$sys")
  crash_ms=$(now_ms)
  local survivor=$NS_PB
  [ "$victim" = b ] && survivor=$NS_PA
  case "$sys" in
    tandem-*)
      if [ "$victim" = a ]; then crash_node "$PID_A" "$NS_PA"; else crash_node "$PID_B" "$NS_PB"; fi
      wait_for 3 is_role "$survivor" active && takeover=1 ;;
    ka-*) ka_crash "$victim"
      wait_for 3 has_addr "$survivor" front "$VIP" && takeover=1 ;;
  esac
  collect "$tag"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$sys" "$tag" "$crash_ms" "$takeover" \
    "$victim" "$((rc1 - rc0))" "$est_ms" "$setup_changes" >>"$TRIALS_TSV"
  case "$sys" in
    tandem-*) http_in "$survivor" /metrics >"$RUN_DIR/logs/$tag-survivor.prom" ;;
    ka-*) for x in a b; do
            cp "$TDM_TMP/ka-$x/notify.log" "$RUN_DIR/logs/$tag-notify-$x.log" 2>/dev/null
            cp "$TDM_TMP/ka-$x/conntrackd.log" "$RUN_DIR/logs/$tag-conntrackd-$x.log" 2>/dev/null
          done
          rm -rf "$TDM_TMP"/ka-* ;;
  esac
  save_logs "$tag"
  topo_down
  python3 "$ROOT/bench/failover/analyze.py" --progress "$RUN_DIR" "$tag" >&2
}

# ---------------------------------------------------------------------------------------------
# Sync cost

# udp_counter NS PORT: "packets bytes" of the OUTPUT rule counting the sync port in NS.
udp_counter() {
  in_ns "$1" iptables -t filter -nvxL OUTPUT | awk -v p="dpt:$2" '$0 ~ p { print $1, $2; exit }'
}

# sync_cost SYSTEM: idle interval, then SYNC_SECONDS of short connections, then a wait for the
# deletions; writes $RUN_DIR/sync-SYSTEM.txt (key=value lines).
sync_cost() {
  local sys=$1 f=$RUN_DIR/sync-$1.txt port
  topo || return 1
  # Short connections: the client's ports are reused; deletions come 1 s after the close.
  in_ns "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
  case "$sys" in
    tandem)
      tandem_pair 100 "time_wait = 1\nclose = 1\nfin_wait = 1\nclose_wait = 1\nlast_ack = 1" ||
        return 1
      port=$SYNC_PORT ;;
    conntrackd)
      ka_pair loose || return 1
      # conntrack's own TIME_WAIT timeout: 1 s like tandem's above.
      in_ns "$NS_PA" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1
      port=$CTD_PORT ;;
  esac
  in_ns "$NS_PA" iptables -I OUTPUT -o back -p udp --dport "$port" || return 1
  sleep 1
  local p0 b0 p1 b1 p2 b2 u1 u2 u0 s0 s1 s2
  read -r p0 b0 <<<"$(udp_counter "$NS_PA" "$port")"
  [ "$sys" = tandem ] && u0=$(metric_in "$NS_PA" tandem_sync_updates_sent_total) &&
    s0=$(metric_in "$NS_PA" tandem_sync_frames_sent_total)
  sleep "$SYNC_SECONDS"
  read -r p1 b1 <<<"$(udp_counter "$NS_PA" "$port")"
  [ "$sys" = tandem ] && u1=$(metric_in "$NS_PA" tandem_sync_updates_sent_total) &&
    s1=$(metric_in "$NS_PA" tandem_sync_frames_sent_total)
  in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --connect-rate --duration "$SYNC_SECONDS" \
    --conns 2 --bytes 64 >"$RUN_DIR/trials/sync-$sys-cr.txt" 2>&1
  sleep 3  # the deletions (1 s timeouts) and their acknowledgements
  read -r p2 b2 <<<"$(udp_counter "$NS_PA" "$port")"
  [ "$sys" = tandem ] && u2=$(metric_in "$NS_PA" tandem_sync_updates_sent_total) &&
    s2=$(metric_in "$NS_PA" tandem_sync_frames_sent_total)
  {
    echo "idle_seconds=$SYNC_SECONDS"
    echo "idle_packets=$((p1 - p0))"
    echo "idle_bytes=$((b1 - b0))"
    echo "busy_seconds=$((SYNC_SECONDS + 3))"
    echo "busy_packets=$((p2 - p1))"
    echo "busy_bytes=$((b2 - b1))"
    if [ "$sys" = tandem ]; then
      echo "idle_frames=$((s1 - s0))"
      echo "busy_frames=$((s2 - s1))"
      echo "idle_updates=$((u1 - u0))"
      echo "busy_updates=$((u2 - u1))"
      echo "b_flows_active=$(metric_in "$NS_PB" tandem_flows_active)"
      echo "a_flows_created=$(metric_in "$NS_PA" tandem_flows_created_total)"
    else
      in_ns "$NS_PA" conntrackd -C "$TDM_TMP/ka-a/conntrackd.conf" -s network 2>&1 |
        sed 's/^/# /'
    fi
    grep '^tcpcheck:' "$RUN_DIR/trials/sync-$sys-cr.txt"
  } >"$f"
  save_logs "sync-$sys"
  rm -rf "$TDM_TMP"/ka-*
  topo_down
}

# ---------------------------------------------------------------------------------------------
# Bulk resync

SPOOF_NET=
# measure_b FILE: starts B and times it until tandem_pair_ready is 1 (polled every 20 ms); writes
# key=value lines to FILE.
measure_b() {
  local f=$1 s0 s1 s_status ready=0 m tries=0 perf_a='' perf_b='' a_cpu0 load0
  a_cpu0=$(awk '{ print $14 + $15 }' "/proc/$PID_A/stat")
  load0=$(cut -d' ' -f1 /proc/loadavg)
  local b_udp0
  # shellcheck disable=SC2016 # an awk program
  b_udp0=$(in_ns "$NS_PB" awk '/^Udp:/ { if (h) print; else h = $0 }' /proc/net/snmp)
  for m in updates_sent updates_resent updates_overflow frames_sent send_errors \
      updates_lost_resent resend_timeouts window_full; do
    eval "local a0_$m=\$(metric_in \"\$NS_PA\" tandem_sync_${m}_total)"
  done
  if [ "${PERF:-0}" = 1 ]; then
    bg_start perf-a "$NS_PA" perf record -q -F 499 -g -p "$PID_A" -o "$f.perf-a.data"
    perf_a=$BG_PID
    sleep 0.5
  fi
  s0=$(date +%s%N)
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  PID_B=$NODE_PID
  s_status=$(date +%s%N)
  if [ "${PERF:-0}" = 1 ]; then
    bg_start perf-b "$NS_PB" perf record -q -F 499 -g -p "$PID_B" -o "$f.perf-b.data"
    perf_b=$BG_PID
  fi
  while [ $tries -lt 3000 ]; do
    if [ "$(metric_in "$NS_PB" tandem_pair_ready)" = 1 ]; then ready=1; break; fi
    sleep 0.02
    tries=$((tries + 1))
  done
  s1=$(date +%s%N)
  {
    echo "ready=$ready"
    echo "start_to_status_ms=$(( (s_status - s0) / 1000000 ))"
    echo "start_to_ready_ms=$(( (s1 - s0) / 1000000 ))"
    echo "a_flows_active=$(metric_in "$NS_PA" tandem_flows_active)"
    echo "b_flows_active=$(metric_in "$NS_PB" tandem_flows_active)"
    echo "b_role_after=$(role_of "$NS_PB")"
    echo "a_role_after=$(role_of "$NS_PA")"
    echo "b_installed=$(metric_in "$NS_PB" tandem_pair_flows_installed_total)"
    echo "b_cpu_ticks=$(awk '{ print $14 + $15 }' "/proc/$PID_B/stat")"
    echo "a_cpu_ticks=$(( $(awk '{ print $14 + $15 }' "/proc/$PID_A/stat") - a_cpu0 ))"
    echo "loadavg_before=$load0"
    echo "a_pump_max_us=$(metric_in "$NS_PA" tandem_pair_callback_max_microseconds pump)"
    echo "b_sync_read_max_us=$(metric_in "$NS_PB" tandem_pair_callback_max_microseconds sync_read)"
    for m in updates_sent updates_resent updates_overflow frames_sent send_errors \
      updates_lost_resent resend_timeouts window_full; do
      echo "a_$m=$(( $(metric_in "$NS_PA" tandem_sync_${m}_total) - $(eval echo "\$a0_$m") ))"
    done
    echo "b_udp_fields: $(in_ns "$NS_PB" awk '/^Udp:/ { print; exit }' /proc/net/snmp)"
    # shellcheck disable=SC2016 # an awk program
    echo "b_udp_before: $b_udp0"
    echo "b_udp: $(in_ns "$NS_PB" awk '/^Udp:/ { if (h) print; else h = $0 }' /proc/net/snmp)"
  } >"$f"
  for m in $perf_a $perf_b; do kill -INT "$m"; wait "$m"; done
  sed 's/^/#   /' "$f" >&2
}

# bulk N VARIANT: A's table filled with N flows, then B's bulk resync timed.
#   restart  B runs during the fill (it gets every flow incrementally), then is stopped
#            (SIGTERM) and started again, BULK_REPEAT times: the bulk on a clean sync queue.
#   absent   B is not running during the fill, then starts once.
bulk() {
  local n=$1 variant=$2 f=$RUN_DIR/bulk-$2-$1
  SPOOF_NET=10.$TDM_NET.128.0/17
  topo || return 1
  # The flood's SYNs reach the backends, which drop them: the flows stay in SYN_SENT.
  local ns
  for ns in "$NS_BE1" "$NS_BE2"; do
    in_ns "$ns" iptables -A INPUT -s "$SPOOF_NET" -j DROP || return 1
  done
  ip -n "$NS_PA" route add blackhole "$SPOOF_NET"
  HB_INTERVAL=0.1
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  local c
  for c in a b; do
    sed -i 's/^max_flows = .*/max_flows = 1100000/; s/^queue = 0/&\nqueue_maxlen = 65536/' \
      "$TDM_TMP/$c.conf"
    sed -i 's/^established = .*/&\nsyn_sent = 900/' "$TDM_TMP/$c.conf"
    if [ -n "${SEND_WINDOW:-}" ]; then
      sed -i "s/^\[sync\]/&\nsend_window = $SEND_WINDOW/" "$TDM_TMP/$c.conf"
    fi
  done
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf" || return 1
  PID_A=$NODE_PID
  wait_for 5 is_role "$NS_PA" active || return 1
  if [ "$variant" = restart ]; then
    start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf" || return 1
    PID_B=$NODE_PID
    wait_for 5 is_ready "$NS_PB" || return 1
  fi
  local t0 t1 have rounds=0
  t0=$(now_ms)
  # Paced, so the queue keeps up; repeated until the table holds n flows.
  while :; do
    have=$(metric_in "$NS_PA" tandem_flows_active)
    [ "$have" -ge "$n" ] && break
    rounds=$((rounds + 1))
    [ "$rounds" -gt 20 ] && { echo "bulk $n: only $have flows after 20 floods" >&2; break; }
    in_ns "$NS_CLI" "$TCPINJECT" --flood --src-net "$SPOOF_NET" --dst "$VIP:80" \
      --count $((n - have + 1000)) --rate 150000 --seed "$rounds" >>"$f.flood" 2>&1
    # Until the queue is drained (the count stops growing).
    local prev=-1
    while :; do
      sleep 0.3
      have=$(metric_in "$NS_PA" tandem_flows_active)
      [ "$have" = "$prev" ] && break
      prev=$have
    done
  done
  t1=$(now_ms)
  {
    echo "flows_requested=$n"
    echo "variant=$variant"
    echo "fill_seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')"
    echo "a_flows_after_fill=$have"
  } >"$f.fill"
  if [ "$variant" = absent ]; then
    measure_b "$f-1.txt"
  else
    local k synced
    for ((k = 1; k <= BULK_REPEAT; k++)); do
      for _ in $(seq 1 100); do
        synced=$(metric_in "$NS_PB" tandem_flows_active)
        [ "$synced" -ge "$have" ] && break
        sleep 0.2
      done
      echo "b_flows_before_stop=$synced b_role_before_stop=$(role_of "$NS_PB")" >>"$f.fill"
      stop_pid "$PID_B" TERM
      sleep 1
      measure_b "$f-$k.txt"
    done
  fi
  save_logs "bulk-$variant-$n"
  topo_down
}

# ---------------------------------------------------------------------------------------------
# Run

T_START=$(date +%s)
echo "# failover_bench: $BENCH_CMDLINE; rounds $ROUNDS; systems $SYSTEMS; run dir $RUN_DIR" >&2
read -r -a SYS_LIST <<<"$SYSTEMS"
for ((r = 1; r <= ROUNDS; r++)); do
  # Rotate the order each round, so no system always runs first (or after the same one).
  n=${#SYS_LIST[@]}
  for ((k = 0; k < n; k++)); do
    trial "$r" "${SYS_LIST[$(( (k + r - 1) % n ))]}"
  done
done
if [ "$SKIP_SYNC" -eq 0 ]; then
  sync_cost tandem || echo "# sync cost (tandem) failed" >&2
  sync_cost conntrackd || echo "# sync cost (conntrackd) failed" >&2
fi
if [ "$SKIP_BULK" -eq 0 ]; then
  for n in $BULK_SIZES; do
    bulk "$n" restart || echo "# bulk $n (restart) failed" >&2
  done
  for n in $BULK_ABSENT_SIZES; do
    bulk "$n" absent || echo "# bulk $n (absent) failed" >&2
  done
fi
T_END=$(date +%s)

{
  echo "Command: \`$BENCH_CMDLINE\` ($(date -u -d "@$T_START" '+%Y-%m-%d %H:%M UTC'), $((T_END - T_START)) s)."
  echo "Settings: rounds $ROUNDS, HB_MISS=$HB_MISS FRONT_HB=$FRONT_HB HELD=$HELD STREAM_RATE=$STREAM_RATE CRASH_AT=$CRASH_AT AFTER=$AFTER SYNC_SECONDS=$SYNC_SECONDS."
  echo "Kernel $(uname -r), $(nproc) vCPU; $(keepalived -v 2>&1 | head -n 1); $(conntrackd -v 2>&1 | head -n 1); $BINARIES."
  echo
  python3 "$ROOT/bench/failover/analyze.py" "$RUN_DIR"
} | tee "$RESULT_MD"
if command -v gnuplot >/dev/null; then
  gnuplot -e "dir='$RUN_DIR'" "$ROOT/bench/failover/plot.gp" 2>"$RUN_DIR/gnuplot.err" &&
    echo "figure: $RUN_DIR/failover-throughput.png" >&2
fi
