#!/usr/bin/env bash
# Idle-pair probe: does a tandem pair with no traffic change roles by itself? For each of
# TRIALS trials: the pair topology of tests/integration/pair_lib.sh, A started, then B, then
# SECONDS s of either nothing (quiet) or this benchmark's HTTP polling of /status and /metrics
# (poll); prints the "standby -> active" transitions beyond A's first one.
#
# Usage (root): bench/failover/idle_flap_probe.sh [--rt] [--hb MS] [--miss N] [--trials N]
#               [--seconds S] [--mode quiet|poll]
#   --rt  tandemd under chrt -r 50.   Defaults: --hb 10 --miss 3 --trials 4 --seconds 3 --mode quiet
# shellcheck disable=SC2034 # TDM_*, HB_* are read by lib.sh and pair_lib.sh
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RT=0 HB=10 MISS=3 TRIALS=4 SECS=3 MODE=quiet
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --rt) RT=1 ;;
    --hb) HB=$2; shift ;;
    --miss) MISS=$2; shift ;;
    --trials) TRIALS=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --mode) MODE=$2; shift ;;
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
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  start_node a "$NS_PA" "$TDM_TMP/a.conf"
  wait_for 5 is_role "$NS_PA" active
  start_node b "$NS_PB" "$TDM_TMP/b.conf"
  end=$(( $(date +%s) + SECS ))
  if [ "$MODE" = poll ]; then
    while [ "$(date +%s)" -lt "$end" ]; do
      role_of "$NS_PA" >/dev/null; role_of "$NS_PB" >/dev/null
      metric_in "$NS_PB" tandem_pair_ready >/dev/null
    done
  else
    sleep "$SECS"
  fi
  n=$(cat "$TDM_TMP/a.log" "$TDM_TMP/b.log" | grep -c 'standby -> active')
  n=$((n - 1))  # A's own first takeover ("no peer heard since start")
  total=$((total + n))
  echo "trial $t ($MODE, rt $RT, ${HB} ms x $MISS, load $(cut -d' ' -f1 /proc/loadavg)):" \
    "$n spurious takeovers"
  topo_down
done
echo "total: $total spurious takeovers in $TRIALS x $SECS s"
