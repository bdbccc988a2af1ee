#!/usr/bin/env bash
# Idle-pair probe: does a tandem pair with no traffic change roles by itself? For each of
# TRIALS trials: the pair topology of tests/integration/pair_lib.sh, A started, then B, then
# SECONDS s of either nothing (quiet), this benchmark's HTTP polling of /status and /metrics
# (poll), or full load (load: a verified stream at STREAM_RATE B/s each way, a back-to-back
# request/response client and 20 held connections through the VIP, plus short connections
# back to back on one worker, i.e. checkpoints); prints the "standby -> active" transitions
# beyond A's first one and, per trial, both nodes' worst heartbeat gaps and loop timing.
#
# Usage (root): bench/failover/idle_flap_probe.sh [--rt] [--hb MS] [--miss N] [--trials N]
#               [--seconds S] [--mode quiet|poll|load] [--front] [--vmac]
#   --rt  tandemd under chrt -r 50.   --front: heartbeats on the front network too.
#   --vmac: sync.takeover = vmac (docs/vmac.md) instead of GARP.
#   Defaults: --hb 10 --miss 3 --trials 4 --seconds 3 --mode quiet
#   Environment: HB_THREAD=on|off (sync.heartbeat_thread; unset: the daemon default, on).
# shellcheck disable=SC2034 # TDM_*, HB_* are read by lib.sh and pair_lib.sh
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RT=0 HB=10 MISS=3 TRIALS=4 SECS=3 MODE=quiet FRONT=0 VMAC=0
STREAM_RATE=${STREAM_RATE:-4194304}
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --rt) RT=1 ;;
    --hb) HB=$2; shift ;;
    --miss) MISS=$2; shift ;;
    --trials) TRIALS=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --mode) MODE=$2; shift ;;
    --front) FRONT=1 ;;
    --vmac) VMAC=1 ;;
    *) echo "idle_flap_probe.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
TDM_PREFIX=tfoidle
# shellcheck source=tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
# shellcheck source=tests/integration/pair_lib.sh
source "$ROOT/tests/integration/pair_lib.sh"
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
require_env TANDEMD TCPCHECK
if [ "$RT" -eq 1 ]; then
  printf '#!/bin/sh\nexec chrt -r 50 %s "$@"\n' "$TANDEMD" >"$TDM_TMP/tandemd-rt"
  chmod 755 "$TDM_TMP/tandemd-rt"
  TANDEMD=$TDM_TMP/tandemd-rt
fi
HB_INTERVAL=$(awk -v ms="$HB" 'BEGIN { printf "%.3f", ms / 1000 }')
HB_MISS=$MISS
pair_init
total=0
for ((t = 1; t <= TRIALS; t++)); do
  TDM_ADDRESSING=transparent
  if ! pair_topo || ! tcpcheck_servers; then echo "topology failed" >&2; exit 1; fi
  if [ "$FRONT" = 1 ]; then
    pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK" "$A_FRONT" "$B_FRONT"
    pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK" "$B_FRONT" "$A_FRONT"
  else
    pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
    pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  fi
  if [ "$VMAC" = 1 ]; then  # [sync] is the last section (pair_config)
    printf 'takeover = vmac\nvmac = 02:54:44:4d:00:01\n' | tee -a "$TDM_TMP/a.conf" >>"$TDM_TMP/b.conf"
  fi
  if [ -n "${HB_THREAD:-}" ]; then  # sync.heartbeat_thread = on|off (default: the daemon's)
    printf 'heartbeat_thread = %s\n' "$HB_THREAD" | tee -a "$TDM_TMP/a.conf" >>"$TDM_TMP/b.conf"
  fi
  start_node a "$NS_PA" "$TDM_TMP/a.conf"
  wait_for 5 is_role "$NS_PA" active
  start_node b "$NS_PB" "$TDM_TMP/b.conf"
  end=$(( $(date +%s) + SECS ))
  if [ "$MODE" = poll ]; then
    while [ "$(date +%s)" -lt "$end" ]; do
      role_of "$NS_PA" >/dev/null; role_of "$NS_PB" >/dev/null
      metric_in "$NS_PB" tandem_pair_ready >/dev/null
    done
  elif [ "$MODE" = load ]; then
    wait_for 10 is_ready "$NS_PB"
    load_pids=()
    bg_start stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream \
      --duration "$SECS" --rate "$STREAM_RATE" --timeout 5
    load_pids+=("$BG_PID")
    bg_start rr "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --duration "$SECS" \
      --size 64 --timeout 5
    load_pids+=("$BG_PID")
    bg_start held "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 20 \
      --bytes 65536 --hold-ms "$((SECS * 1000))" --timeout 5
    load_pids+=("$BG_PID")
    bg_start churn "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --connect-rate \
      --duration "$SECS" --conns 1 --timeout 5
    load_pids+=("$BG_PID")
    for p in "${load_pids[@]}"; do wait "$p" 2>/dev/null; done
  else
    sleep "$SECS"
  fi
  for ns in "$NS_PA" "$NS_PB"; do
    http_in "$ns" /metrics | grep -E '^tandem_pair_(heartbeat_(rx_gap_max|tx_gap_max|rx_late|rx_kernel_delay_max|rx_loop_delay_max|rx_delayed|thread)|heartbeats_(withheld|sent)|loop_lateness|callback_max|verdict_reads|rx_barrier|own_stalls)' |
      sed "s/^/  $( [ "$ns" = "$NS_PA" ] && echo A || echo B): /"
  done
  n=$(cat "$TDM_TMP/a.log" "$TDM_TMP/b.log" | grep -c 'standby -> active')
  n=$((n - 1))  # A's own first takeover ("no peer heard since start")
  total=$((total + n))
  echo "trial $t ($MODE, rt $RT, vmac $VMAC, ${HB} ms x $MISS, load $(cut -d' ' -f1 /proc/loadavg)):" \
    "$n spurious takeovers"
  topo_down
done
echo "total: $total spurious takeovers in $TRIALS x $SECS s"
