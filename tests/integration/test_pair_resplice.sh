#!/usr/bin/env bash
# Re-splice and the proxy pair: connections moved to another backend on the active survive the
# active's crash on the standby. Topology and helpers: pair_lib.sh; two stock-library HTTP/1.1
# keep-alive servers (tests/tools/keepalive_http.py, each answering its own name); the service in
# splice mode with resplice = on and HTTP health checks every 0.2 s (rise 2, fall 3) on both nodes.
#
# For each addressing (snat, then transparent):
#   - A active, B ready standby; 8 keep-alive connections through the VIP, over both backends;
#   - backend 1's host dies between requests (link down, server killed): both nodes' checkers
#     find it down; the standby moves and resets nothing (it does not forward); the next round
#     is answered by backend 2 on the same sockets (moved on A), and B holds every connection on
#     backend 2 (the new binding was checkpointed);
#   - A is killed (SIGKILL) and its links taken down: B becomes active and the same 8
#     connections keep working against backend 2 through B, every response correct, no
#     connection re-opened (keepalive_http.py checks the local port).
TDM_PREFIX=${TDM_PREFIX:-tprs}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
TOOL=$(cd "$(dirname "$0")/../tools" && pwd)/keepalive_http.py
# A 200 ms dead interval: on a busy shared machine a 100 ms loop stall is not a dead peer.
HB_MISS=10
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
dump_state_extra() {
  local ns
  for ns in "$NS_PA" "$NS_PB"; do
    ns_exists "$ns" || continue
    echo "  -- $ns: role '$(role_of "$ns")'; flows:"
    http_in "$ns" '/flows?limit=50' | sed 's/^/  | /'
  done
}
CONNS=8
COOKIE_SECRET=0f1e2d3c4b5a69788796a5b4c3d2e1f0
BE1=$BE1_IP:8080
BE2=$BE2_IP:8080

# resplice_config FILE NODE PRIORITY BIND PEER: pair_config's file, the service in splice mode
# with re-splicing and health checks, the SYN-cookie secret shared by the pair.
resplice_config() {
  pair_config "$@" || return 1
  sed -i 's/^mode = passthrough/mode = splice\nresplice = on\nhealth_check = http\nhealth_http_path = \/health\nhealth_interval = 0.2\nhealth_timeout = 0.2\nhealth_rise = 2\nhealth_fall = 3/' "$1"
  sed -i "/^\[daemon\]/a cookie_secret = $COOKIE_SECRET" "$1"
}

# backend_state NS BACKEND: its state on that node, from /metrics.
backend_state() {
  http_in "$1" /metrics | awk -v be="$2" '
    /^tandem_backend_state\{/ && index($0, "backend=\"" be "\"") && $NF == 1 {
      match($0, /state="[a-z]*"/); print substr($0, RSTART + 7, RLENGTH - 8) }'
}
is_state() { [ "$(backend_state "$1" "$2")" = "$3" ]; }

# client_flows_on NS BACKEND: established client flows of the node on that backend.
client_flows_on() {
  http_in "$1" '/flows?limit=1000' | awk -v c="$CLIENT_IP:" -v be="$2" '
    $1 == "web" && index($2, c) == 1 && $4 == be && $6 == "ESTABLISHED" { n++ }
    END { print n + 0 }'
}
all_on_be2() { [ "$(client_flows_on "$1" "$BE2")" = "$CONNS" ]; }

# gate_round DIR R [SECONDS]: lets the client run round R and waits for its result file.
gate_round() {
  [ "$2" = 1 ] || touch "$1/go.$2"
  local tries=$(( ${3:-20} * 10 ))
  while [ "$tries" -gt 0 ]; do
    [ -e "$1/done.$2" ] && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  return 1
}

start_server() {  # start_server 1|2
  local ns ip
  if [ "$1" = 1 ]; then ns=$NS_BE1 ip=$BE1_IP; else ns=$NS_BE2 ip=$BE2_IP; fi
  bg_start "http$1-$TDM_ADDRESSING" "$ns" "$PYTHON" "$TOOL" server --bind "$ip" --port 8080 \
    --name "backend-$1"
  eval "SERVER$1_PID=$BG_PID"
  wait_listen "$ns" "$ip:8080"
}

run_case() {
  local a=$1 name gate
  TDM_ADDRESSING=$a
  log "==== addressing $a, splice mode, resplice on ===="
  if ! pair_topo; then
    fail "$a: topology set up"
    topo_down
    return
  fi
  if ! start_server 1 || ! start_server 2; then
    fail "$a: keep-alive servers listen"
    topo_down
    return
  fi
  resplice_config "$TDM_TMP/a-$a.conf" 1 200 "$A_BACK" "$B_BACK"
  resplice_config "$TDM_TMP/b-$a.conf" 2 100 "$B_BACK" "$A_BACK"

  name="$a: A active, B ready standby, both see both backends up"
  start_node "tandemd-a-$a" "$NS_PA" "$TDM_TMP/a-$a.conf"
  local a_pid=$NODE_PID
  wait_for 5 is_role "$NS_PA" active && wait_for 2 has_addr "$NS_PA" front "$VIP"
  start_node "tandemd-b-$a" "$NS_PB" "$TDM_TMP/b-$a.conf"
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby && is_role "$NS_PA" active &&
     wait_for 5 is_state "$NS_PA" "$BE1" up && wait_for 5 is_state "$NS_PA" "$BE2" up &&
     wait_for 5 is_state "$NS_PB" "$BE1" up && wait_for 5 is_state "$NS_PB" "$BE2" up; then
    pass "$name"
  else
    fail "$name" "A: '$(role_of "$NS_PA")', B: '$(role_of "$NS_PB")'"
    topo_down
    return
  fi

  gate=$TDM_TMP/gate-$a
  rm -rf "$gate"
  mkdir -p "$gate"
  bg_start "client-$a" "$NS_CLI" "$PYTHON" "$TOOL" client --host "$VIP" --port 80 \
    --conns "$CONNS" --rounds 4 --gate "$gate"
  local client_pid=$BG_PID

  name="$a: $CONNS keep-alive connections over both backends"
  if gate_round "$gate" 1 && grep -q backend-1 "$gate/done.1" &&
     grep -q backend-2 "$gate/done.1"; then
    pass "$name"
  else
    fail "$name" "$(cat "$TDM_TMP/client-$a.log")"
    topo_down
    return
  fi
  local on1
  on1=$(grep -c backend-1 "$gate/done.1")
  sleep 0.5  # idle since the last passed check

  log "$a: backend 1's host dies between requests (link down, server killed)"
  ip -n "$NS_BE1" link set eth0 down
  stop_pid "$SERVER1_PID" KILL
  name="$a: both nodes' health checks find backend 1 down"
  if wait_for 10 is_state "$NS_PA" "$BE1" down && wait_for 10 is_state "$NS_PB" "$BE1" down; then
    pass "$name"
  else
    fail "$name" "A: $(backend_state "$NS_PA" "$BE1"), B: $(backend_state "$NS_PB" "$BE1")"
  fi

  name="$a: round 2 answered by backend 2 on the same sockets (moved on A)"
  if gate_round "$gate" 2 30 && [ "$(grep -c backend-2 "$gate/done.2")" = "$CONNS" ] &&
     [ "$(metric_in "$NS_PA" tandem_resplices_completed_total)" -ge "$on1" ]; then
    pass "$name ($on1 moved)"
  else
    fail "$name" "$(cat "$TDM_TMP/client-$a.log")"
  fi

  name="$a: B holds all $CONNS connections on backend 2, moved and reset nothing itself"
  local b_started b_reset
  if wait_for 5 all_on_be2 "$NS_PB"; then
    b_started=$(metric_in "$NS_PB" tandem_resplices_started_total)
    b_reset=$(metric_in "$NS_PB" tandem_flows_reset_total)
    if [ "$b_started" = 0 ] && [ "$b_reset" = 0 ]; then
      pass "$name"
    else
      fail "$name" "B started $b_started re-splices, reset $b_reset flows"
    fi
  else
    fail "$name" "B has $(client_flows_on "$NS_PB" "$BE2") on backend 2"
  fi

  crash_a_check_b "$a" "$a_pid"

  name="$a: the moved connections carry on through B against backend 2, every response correct"
  local ok=1 r
  for r in 3 4; do
    if ! gate_round "$gate" "$r" 30 || [ "$(grep -c backend-2 "$gate/done.$r")" != "$CONNS" ]; then
      ok=0
      break
    fi
  done
  local _
  for _ in $(seq 1 50); do
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.1
  done
  stop_pid "$client_pid" TERM
  if [ "$ok" = 1 ] && [ "$STOP_RC" = 0 ]; then
    pass "$name"
  else
    fail "$name" "client exit $STOP_RC" "$(cat "$TDM_TMP/client-$a.log")"
  fi
  check "$a: B reset no flow" test "$(metric_in "$NS_PB" tandem_flows_reset_total)" = 0
  log "$a: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(pair_(takeovers|flows_installed|install_failures)|resplices_(started|completed))' | tr '\n' ' ')"
  stop_pid "$SERVER2_PID" TERM
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-snat transparent}; do
  run_case "$addressing"
done
finish
