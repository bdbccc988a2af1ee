#!/usr/bin/env bash
# Planned switchover benchmark: the proxy pair of tests/integration/pair_lib.sh, TRIALS planned
# switchovers back and forth (tandemctl switchover) while a request/response probe (one
# connection, 64 B, RR_RATE round trips/s) and IDLE idle connections run through the VIP.
# Prints, per trial, the data-path hold the daemon reports, when the standby's acknowledgement
# came and when the peer was heard active (ms after the hold began, GET /pair's
# switchover_last_steps_ms), the slowest probe round trip overlapping the command (from its start
# to 50 ms after it returned, which includes tandemctl's own start-up) and the slowest one
# overlapping the handover itself (from the hold's start, switchover_last_started_unix_ns, to 5
# ms after the peer was heard active); then the median and the worst, the probe's p99 and slowest
# round trip outside the switchovers (the machine's noise), and the reset count (must be 0).
#
#   TANDEMD=... TANDEMCTL=... TCPCHECK=... bench/switchover_bench.sh
#   knobs: TRIALS=20 ADDRESSING=transparent RR_RATE=1000 IDLE=100 PAUSE=0.5
#          CHURN=N: also N workers opening short verified connections back to back (tcpcheck
#          --connect-rate) through the switchovers; its summary line is printed
#          REALTIME=P: both tandemd under SCHED_FIFO priority P (daemon.realtime_priority)
#          PROBE_REALTIME=P: the probe and the two backend servers under SCHED_FIFO P (chrt), so
#          that the instrument itself is not delayed by other work on a shared machine
set -u
here=$(cd "$(dirname "$0")" && pwd)
TDM_PREFIX=bswo
source "$here/../tests/integration/lib.sh"
source "$here/../tests/integration/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL TCPCHECK
require_kernel
TRIALS=${TRIALS:-20}
RR_RATE=${RR_RATE:-1000}
IDLE=${IDLE:-100}
PAUSE=${PAUSE:-0.5}
HB_MISS=${HB_MISS:-15}
pair_init
TDM_ADDRESSING=${ADDRESSING:-transparent}

ctl() { local ns=$1; shift; in_ns "$ns" "$TANDEMCTL" --metrics "$METRICS_ADDR" "$@"; }
peer_ready_in() { ctl "$1" peer 2>/dev/null | grep -qE '^ready +yes$'; }
die() { echo "switchover_bench: $*" >&2; exit 1; }

pair_topo || die "topology"
tcpcheck_servers || die "tcpcheck servers"
pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
if [ -n "${REALTIME:-}" ]; then
  sed -i "/^\[daemon\]/a realtime_priority = $REALTIME" "$TDM_TMP/a.conf" "$TDM_TMP/b.conf"
fi
start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
wait_for 5 is_role "$NS_PA" active || die "A did not become active"
start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
wait_for 5 is_ready "$NS_PB" || die "B did not become ready"

dur=$(awk -v t="$TRIALS" -v p="$PAUSE" 'BEGIN { printf "%d", 3 + t * (p + 1.2) }')
bg_start idle "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$IDLE" --bytes 1024 \
  --hold-ms $((dur * 1000)) --timeout 30
idle_pid=$BG_PID
bg_start probe "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --size 64 \
  --rate "$RR_RATE" --count $((dur * RR_RATE)) --log-gaps-ms 1 --timeout 30
probe_pid=$BG_PID
if [ -n "${PROBE_REALTIME:-}" ]; then
  for p in "$probe_pid" "$SRV_BE1_PID" "$SRV_BE2_PID"; do
    chrt -a -f -p "$PROBE_REALTIME" "$p" >/dev/null || die "chrt $PROBE_REALTIME $p"
  done
fi
churn_pid=
if [ "${CHURN:-0}" -gt 0 ]; then
  bg_start churn "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --connect-rate \
    --conns "$CHURN" --duration "$dur" --timeout 30 --log-gaps-ms 100
  churn_pid=$BG_PID
fi
sleep 1.5

: >"$TDM_TMP/windows"
for i in $(seq 1 "$TRIALS"); do
  if [ $((i % 2)) -eq 1 ]; then from=$NS_PA to=$NS_PB; else from=$NS_PB to=$NS_PA; fi
  wait_for 10 is_ready "$to" && wait_for 2 peer_ready_in "$from" || die "trial $i: peer not ready"
  t0=$(date +%s.%N)
  out=$(ctl "$from" switchover 2>&1) || die "trial $i: $out"
  t1=$(date +%s.%N)
  hold=$(echo "$out" | sed -n 's/.*data path held \([0-9.]*\) ms.*/\1/p')
  pair=$(ctl "$from" pair)
  started=$(echo "$pair" | sed -n 's/^switchover_last_started_unix_ns //p')
  steps=$(echo "$pair" | sed -n 's/^switchover_last_steps_ms //p')
  acked=$(echo "$steps" | sed -n 's/.*acked \([0-9.]*\).*/\1/p')
  active=$(echo "$steps" | sed -n 's/.*peer_active \([0-9.]*\).*/\1/p')
  echo "$i $t0 $t1 $hold ${started:-0} ${acked:-0} ${active:-0}" >>"$TDM_TMP/windows"
  echo "$i $steps" >>"$TDM_TMP/steps"
  sleep "$PAUSE"
done
kill -0 "$probe_pid" 2>/dev/null || echo "warning: the probe ended before the last trial" >&2
wait "$probe_pid"
probe_rc=$?
wait "$idle_pid"
idle_rc=$?
churn=
if [ -n "$churn_pid" ]; then
  wait "$churn_pid"
  churn=$(grep '^tcpcheck: conns=' "$TDM_TMP/churn.log")
fi
probe=$(grep '^tcpcheck: conns=' "$TDM_TMP/probe.log")
idle=$(grep '^tcpcheck: conns=' "$TDM_TMP/idle.log")

echo "# planned switchover, $TDM_ADDRESSING addressing, $TRIALS trials, heartbeat" \
  "${HB_INTERVAL}s x $HB_MISS, probe $RR_RATE round trips/s, $IDLE idle connections," \
  "churn ${CHURN:-0}, realtime: tandemd ${REALTIME:-off}, probe and servers ${PROBE_REALTIME:-off}"
grep -h '^tcpcheck-gap:' "$TDM_TMP/probe.log" | awk -v wf="$TDM_TMP/windows" '
  BEGIN { while ((getline l < wf) > 0) { split(l, f, " "); n++; t0[n] = f[2]; t1[n] = f[3] + 0.05
          hold[n] = f[4]; acked[n] = f[6]; active[n] = f[7]; worst[n] = 0; hworst[n] = 0
          # The handover window: the hold began at f[5] (ns, CLOCK_REALTIME of the daemon).
          h0[n] = f[5] / 1e9; h1[n] = h0[n] + (f[7] + 5) / 1000
          # The control: a window as long, 250 ms later (between two switchovers), for the
          # noise of the machine at the same scale.
          c0[n] = h0[n] + 0.25; c1[n] = h1[n] + 0.25; cworst[n] = 0 } }
  { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    end = v["end"] + 0; ms = v["ms"] + 0; start = end - ms / 1000; hit = 0
    for (k = 1; k <= n; k++) {
      if (start < t1[k] && end > t0[k]) {
        hit = 1; if (ms > worst[k]) { worst[k] = ms; offs[k] = (start - t0[k]) * 1000 } }
      if (h0[k] > 0 && start < h1[k] && end > h0[k] && ms > hworst[k]) hworst[k] = ms
      if (h0[k] > 0 && start < c1[k] && end > c0[k] && ms > cworst[k]) cworst[k] = ms }
    if (!hit && ms > other) other = ms }
  function median(a, m,   s, i, j, t) { for (i = 1; i <= m; i++) s[i] = a[i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
    return m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2 }
  function max(a, m,   i, x) { x = a[1]; for (i = 2; i <= m; i++) if (a[i] > x) x = a[i]; return x }
  END {
    printf "| trial | data path held (ms) | standby acked (ms) | peer heard active (ms) | slowest probe round trip overlapping the handover (ms, >= 1 ms only) | control: the same window 250 ms later (ms) | ... overlapping the command (ms) | it started (ms after the command started) |\n"
    printf "|---|---|---|---|---|---|---|---|\n"
    for (k = 1; k <= n; k++) printf "| %d | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f | %s |\n", k, hold[k], acked[k], active[k], hworst[k], cworst[k], worst[k], (worst[k] > 0 ? sprintf("%.1f", offs[k]) : "-")
    printf "| median | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f | |\n", median(hold, n), median(acked, n), median(active, n), median(hworst, n), median(cworst, n), median(worst, n)
    printf "| worst | %.3f | %.3f | %.3f | %.1f | %.1f | %.1f | |\n", max(hold, n), max(acked, n), max(active, n), max(hworst, n), max(cworst, n), max(worst, n)
    printf "slowest probe round trip outside the switchovers: %.1f ms\n", other }'
echo "probe: $probe"
echo "idle:  $idle"
if [ -n "$churn" ]; then
  echo "churn: $churn"
  echo "churn: connections that took 100 ms or more (a lost SYN or SYN-ACK costs 1 s):" \
    "$(grep -c '^tcpcheck-gap: kind=connect' "$TDM_TMP/churn.log")"
fi
for ns in "$NS_PA" "$NS_PB"; do
  echo "drops on $ns: $(http_in "$ns" /metrics | grep '^tandem_drops_total' | awk '$NF != 0' |
    sed 's/tandem_drops_total{reason="\([a-z_]*\)"}/\1/' | tr '\n' ' ')"
done
# KEEP=DIR keeps the logs (daemon logs with ms timestamps, the probe's slow round trips).
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$TDM_TMP"/* "$KEEP/"; fi
echo "resets: $(( $(summary_field "$probe" reset) + $(summary_field "$idle" reset) ))," \
  "exit status probe $probe_rc idle $idle_rc"
