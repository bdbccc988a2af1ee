#!/usr/bin/env bash
# What deferral costs a new connection (issue 4): short verified connections through the proxy
# pair (pair_lib.sh topology, passthrough, SNAT) with A active and B a ready standby, with
# sync.defer on and off, in rotated order, ROUNDS rounds. Reported per setting: connections/s of
# tcpcheck --connect-rate on CR_CONNS workers, A's deferral counters (acked, timed out), and the
# sync messages (upserts + deletes queued) per connection, counted until the flows expired.
#
# Usage (root):   bench/pair_defer.sh
# Environment:    ROUNDS=5 CR_DURATION=3 CR_CONNS=1 TANDEMD=... TCPCHECK=... (default: build/release)
# Output: a markdown table on stdout.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEMD=${TANDEMD:-$ROOT/build/release/proxy/tandemd/tandemd}
TCPCHECK=${TCPCHECK:-$ROOT/build/release/tests/tools/tcpcheck}
ROUNDS=${ROUNDS:-5}
CR_DURATION=${CR_DURATION:-3}
CR_CONNS=${CR_CONNS:-1}
TDM_PREFIX=bdef
# shellcheck source-path=SCRIPTDIR source=../tests/integration/lib.sh
source "$ROOT/tests/integration/lib.sh"
# shellcheck source=../tests/integration/pair_lib.sh
source "$ROOT/tests/integration/pair_lib.sh"
trap cleanup EXIT
require_kernel
pair_init
TDM_ADDRESSING=snat

run_setting() {  # run_setting on|off: prints "conns_per_s acked timeouts msgs_per_flow"
  local defer=$1
  pair_topo >/dev/null 2>&1 || { echo "topology failed" >&2; return 1; }
  tcpcheck_servers >/dev/null 2>&1 || return 1
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  printf 'defer = %s\n' "$defer" >>"$TDM_TMP/a.conf"
  # Closed flows leave soon, so their deletes are counted within the run.
  sed -i '/^\[timeouts\]/a time_wait = 1\nclose = 1' "$TDM_TMP/a.conf" "$TDM_TMP/b.conf"
  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf" || return 1
  wait_for 5 is_role "$NS_PA" active
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf" || return 1
  wait_for 5 is_ready "$NS_PB"
  sleep 0.3
  local out rate acked tmo q0 c0 per
  q0=$(metric_in "$NS_PA" tandem_sync_updates_queued_total)
  c0=$(metric_in "$NS_PA" tandem_flows_created_total)
  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$CR_CONNS" \
        --connect-rate --duration "$CR_DURATION" 2>&1 | tail -n 1)
  rate=$(summary_field "$out" conn_rate_per_s)
  acked=$(metric_in "$NS_PA" tandem_pair_deferred_acked_total)
  tmo=$(metric_in "$NS_PA" tandem_pair_deferred_timeouts_total)
  sleep 3  # the closed flows leave TIME_WAIT/CLOSE (1 s here): their deletes are counted too
  per=$(awk -v q="$(( $(metric_in "$NS_PA" tandem_sync_updates_queued_total) - q0 ))" \
        -v c="$(( $(metric_in "$NS_PA" tandem_flows_created_total) - c0 ))" \
        'BEGIN { printf "%.2f", c ? q / c : 0 }')
  topo_down >/dev/null 2>&1
  echo "${rate:-?} $acked $tmo $per"
}

declare -A rates acks tmos pers
for r in $(seq 1 "$ROUNDS"); do
  order="on off"
  [ $((r % 2)) -eq 0 ] && order="off on"
  for d in $order; do
    read -r rate acked tmo per < <(run_setting "$d")
    rates[$d]+="$rate "
    pers[$d]+="$per "
    acks[$d]=$(( ${acks[$d]:-0} + acked ))
    tmos[$d]=$(( ${tmos[$d]:-0} + tmo ))
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}'; }
echo "| sync.defer | conns/s median ($ROUNDS rounds, $CR_CONNS worker(s)) | all rounds | flows acked | timeouts | sync messages per connection |"
echo "|---|---|---|---|---|---|"
for d in on off; do
  echo "| $d | $(echo "${rates[$d]}" | median) | ${rates[$d]} | ${acks[$d]} | ${tmos[$d]} | ${pers[$d]} |"
done
