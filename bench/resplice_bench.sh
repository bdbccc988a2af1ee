#!/usr/bin/env bash
# Backend death to the first good response on a re-spliced connection, in network namespaces
# (tests/integration/lib.sh topology), through tandemd in splice mode with resplice = on.
#
# Per trial: one keep-alive HTTP connection (tests/tools/keepalive_http.py probe) does a GET on
# backend 1 and goes idle; after IDLE seconds backend 1's host dies (its link goes down, then
# its server is killed: no FIN, no RST) and, at the same moment, the client sends its next
# request on the same connection. That request reaches nobody; the health checks find backend 1
# down, the flow is replayable (the request was never acknowledged), it is re-spliced to
# backend 2, and the client's own retransmission of the request gets the answer. Measured: the
# time from the death to the complete response (wall clock, same host), and that the response
# came from backend 2 on the same connection. Then backend 1 is revived for the next trial.
# REQUEST_AT=down instead sends the request once /metrics shows backend 1 down (the idle
# connection has been moved by then): death -> detection -> a request answered at once.
#
# Usage (root):  bench/resplice_bench.sh
# Environment:   REQUEST_AT=death TRIALS=20 INTERVAL=0.2 FALL=2 RISE=2 IDLE=1 ADDRESSING=transparent
#                FASTINTER=$INTERVAL (health_fastinter: confirming checks and their timeout)
#                TANDEMD=... TANDEMCTL=... (default: build/release binaries)
# Output: one line per trial and a summary (median, worst) as a markdown table on stdout.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
TANDEMD=${TANDEMD:-$root/build/release/proxy/tandemd/tandemd}
TANDEMCTL=${TANDEMCTL:-$root/build/release/proxy/tandemd/tandemctl}
TRIALS=${TRIALS:-20}
INTERVAL=${INTERVAL:-0.2}
FALL=${FALL:-2}
RISE=${RISE:-2}
FASTINTER=${FASTINTER:-$INTERVAL}
IDLE=${IDLE:-1}
ADDRESSING=${ADDRESSING:-transparent}
REQUEST_AT=${REQUEST_AT:-death}
if [ "${1:-}" = --help ]; then sed -n '2,21p' "$0"; exit 0; fi
TDM_PREFIX=rsb
source "$root/tests/integration/lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL
require_kernel
PYTHON=/usr/bin/python3
TOOL=$root/tests/tools/keepalive_http.py
BE1=$BE1_IP:8080

backend_state() {
  http_get /metrics | awk -v be="$1" '
    /^tandem_backend_state\{/ && index($0, "backend=\"" be "\"") && $NF == 1 {
      match($0, /state="[a-z]*"/); print substr($0, RSTART + 7, RLENGTH - 8) }'
}
wait_up() {
  for _ in $(seq 1 100); do [ "$(backend_state "$BE1")" = up ] && return 0; sleep 0.1; done
  return 1
}
start_server() {
  local ns ip
  if [ "$1" = 1 ]; then ns=$NS_BE1 ip=$BE1_IP; else ns=$NS_BE2 ip=$BE2_IP; fi
  bg_start "http$1" "$ns" "$PYTHON" "$TOOL" server --bind "$ip" --port 8080 --name "backend-$1"
  eval "SERVER$1_PID=$BG_PID"
  wait_listen "$ns" "$ip:8080"
}

topo_up "$ADDRESSING" || { echo "topology failed"; exit 1; }
start_server 1 && start_server 2 || { echo "servers failed"; exit 1; }
conf=$TDM_TMP/bench.conf
write_config "$conf"
sed -i 's/^mode = passthrough/mode = splice/' "$conf"
cat >>"$conf" <<CONF
resplice = on
health_check = http
health_http_path = /health
health_interval = $INTERVAL
health_timeout = $INTERVAL
health_fastinter = $FASTINTER
health_rise = $RISE
health_fall = $FALL
CONF
start_tandemd "$conf" || { cat "$TDM_TANDEMD_LOG"; exit 1; }

echo "# resplice bench: $TRIALS trials, $ADDRESSING, health_check = http every ${INTERVAL}s," \
  "timeout ${INTERVAL}s, fastinter ${FASTINTER}s, fall $FALL, rise $RISE; idle ${IDLE}s before the death;" \
  "request sent at: $REQUEST_AT"
times=()
failures=0
for trial in $(seq 1 "$TRIALS"); do
  wait_up || { echo "trial $trial: backend 1 not up"; failures=$((failures + 1)); continue; }
  # A connection on backend 1 (round robin: try again until one lands there).
  for _ in 1 2 3 4; do
    gate=$TDM_TMP/t$trial.$RANDOM
    mkdir -p "$gate"
    bg_start "probe$trial" "$NS_CLI" "$PYTHON" "$TOOL" probe --host "$VIP" --port 80 --gate "$gate"
    probe=$BG_PID
    for _ in $(seq 1 50); do [ -e "$gate/ready" ] && break; sleep 0.1; done
    grep -q backend-1 "$gate/ready" 2>/dev/null && break
    stop_pid "$probe"
  done
  sleep "$IDLE"
  t0=$(date +%s.%N)
  ip -n "$NS_BE1" link set eth0 down
  [ "$REQUEST_AT" = death ] && touch "$gate/go"
  stop_pid "$SERVER1_PID" KILL
  if [ "$REQUEST_AT" = down ]; then
    for _ in $(seq 1 200); do [ "$(backend_state "$BE1")" = down ] && break; sleep 0.01; done
    touch "$gate/go"
  fi
  for _ in $(seq 1 300); do kill -0 "$probe" 2>/dev/null || break; sleep 0.05; done
  stop_pid "$probe"
  line=$(tail -n 1 "$TDM_TMP/probe$trial.log")
  read -r done_at status body conn <<<"$line"
  if [ "$STOP_RC" = 0 ] && [ "$status" = 200 ] && [ "$body" = backend-2 ] && [ "$conn" = same ]; then
    ms=$(awk -v a="$t0" -v b="$done_at" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    times+=("$ms")
    echo "trial $trial: ${ms} ms (response from $body, $conn connection)"
  else
    failures=$((failures + 1))
    echo "trial $trial: FAILED: $line"
  fi
  ip -n "$NS_BE1" link set eth0 up
  [ "$ADDRESSING" = transparent ] && ip -n "$NS_BE1" route replace default via "$BACK_IP"
  start_server 1 >/dev/null
done

sorted=$(printf '%s\n' "${times[@]}" | sort -n)
n=${#times[@]}
if [ "$n" -gt 0 ]; then
  median=$(echo "$sorted" | awk -v n="$n" 'NR == int((n + 1) / 2) { print }')
  worst=$(echo "$sorted" | tail -n 1)
  best=$(echo "$sorted" | head -n 1)
else
  median=- worst=- best=-
fi
echo
echo "| trials | survived | best | median | worst | health checks |"
echo "| ---: | ---: | ---: | ---: | ---: | --- |"
echo "| $TRIALS ($REQUEST_AT) | $n | ${best} ms | ${median} ms | ${worst} ms | http every ${INTERVAL} s, timeout ${INTERVAL} s, fastinter ${FASTINTER} s, fall $FALL, rise $RISE |"
echo
echo "resplices completed: $(metric tandem_resplices_completed_total)," \
  "flows reset: $(metric tandem_flows_reset_total)"
[ "$failures" = 0 ]
