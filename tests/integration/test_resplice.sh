#!/usr/bin/env bash
# Backend health and re-splicing through tandemd, real kernel TCP, transparent and snat
# addressing. Two stock-library HTTP/1.1 keep-alive servers (tests/tools/keepalive_http.py, each
# answering its own name), a splice service with resplice = on and HTTP health checks every
# 0.2 s (rise 2, fall 2). The client keeps 8 connections and checks every response, and that no
# connection was ever re-opened (same local port):
#   - drain: `tandemctl backend drain` moves every idle connection off backend 1 (and backend 1
#     is left with no connection), the next round is answered by backend 2 on the same sockets;
#   - host death between requests (backend 1's link goes down, then its server is killed): the
#     same connections carry on against backend 2, every response correct;
#   - process death between requests (its kernel sends FINs): the FINs are absorbed and the
#     connections move at once;
#   - death mid-response (a 4 MB response streaming, the link goes down): the client gets a RST
#     soon after backend 1 is found down, not a hang.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
TOOL=$(cd "$(dirname "$0")/../tools" && pwd)/keepalive_http.py

BE1=$BE1_IP:8080
BE2=$BE2_IP:8080

# backend_state BACKEND: its state from /metrics.
backend_state() {
  http_get /metrics | awk -v be="$1" '
    /^tandem_backend_state\{/ && index($0, "backend=\"" be "\"") && $NF == 1 {
      match($0, /state="[a-z]*"/); print substr($0, RSTART + 7, RLENGTH - 8) }'
}

# wait_state BACKEND STATE [SECONDS]
wait_state() {
  local tries=$(( ${3:-10} * 10 ))
  while [ "$tries" -gt 0 ]; do
    [ "$(backend_state "$1")" = "$2" ] && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  echo "backend $1 is $(backend_state "$1"), not $2" >&2
  return 1
}

# wait_file PATH [SECONDS]
wait_file() {
  local tries=$(( ${2:-20} * 10 ))
  while [ "$tries" -gt 0 ]; do
    [ -e "$1" ] && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  echo "no $1" >&2
  return 1
}

start_server() {  # start_server 1|2
  local ns ip
  if [ "$1" = 1 ]; then ns=$NS_BE1 ip=$BE1_IP; else ns=$NS_BE2 ip=$BE2_IP; fi
  bg_start "http$1" "$ns" "$PYTHON" "$TOOL" server --bind "$ip" --port 8080 --name "backend-$1"
  eval "SERVER$1_PID=$BG_PID"
  wait_listen "$ns" "$ip:8080"
}

# revive_be1: link up, server running, health checks passing again.
revive_be1() {
  ip -n "$NS_BE1" link set eth0 up
  ip -n "$NS_BE1" route replace default via "$BACK_IP" 2>/dev/null
  [ "$TDM_ADDRESSING" = transparent ] || ip -n "$NS_BE1" route del default 2>/dev/null
  kill -0 "$SERVER1_PID" 2>/dev/null || start_server 1
  wait_state "$BE1" up 10
}

flows_on() { http_get /flows | grep -c " $1 " ; }

# client_start NAME ROUNDS: 8 keep-alive connections through the VIP; gate dir $TDM_TMP/NAME.
client_start() {
  rm -rf "${TDM_TMP:?}/$1"
  mkdir -p "$TDM_TMP/$1"
  bg_start "$1" "$NS_CLI" "$PYTHON" "$TOOL" client --host "$VIP" --port 80 --conns 8 \
    --rounds "$2" --gate "$TDM_TMP/$1"
  CLIENT_PID=$BG_PID
}

# client_wait NAME: the client exits 0.
client_wait() {
  local _
  for _ in $(seq 1 300); do
    kill -0 "$CLIENT_PID" 2>/dev/null || break
    sleep 0.1
  done
  stop_pid "$CLIENT_PID" TERM
  [ "$STOP_RC" = 0 ] || { cat "$TDM_TMP/$1.log"; return 1; }
}

for addressing in ${RESPLICE_ADDRESSING:-transparent snat}; do
  topo_up "$addressing" || { fail "$addressing: topology"; finish; }
  start_server 1 && start_server 2 || fail "$addressing: servers listen"

  conf=$TDM_TMP/resplice-$addressing.conf
  write_config "$conf"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  cat >>"$conf" <<CONF
resplice = on
health_check = http
health_http_path = /health
health_interval = 0.2
health_timeout = 0.2
health_rise = 2
health_fall = 3
CONF
  if ! start_tandemd "$conf"; then
    fail "$addressing: tandemd starts" "$(cat "$TDM_TANDEMD_LOG")"
    topo_down
    continue
  fi
  check "$addressing: both backends up" wait_state "$BE2" up 5

  # --- drain ---------------------------------------------------------------------------------
  client_start drain 2
  if wait_file "$TDM_TMP/drain/done.1" && grep -q backend-1 "$TDM_TMP/drain/done.1" &&
     grep -q backend-2 "$TDM_TMP/drain/done.1"; then
    pass "$addressing: 8 keep-alive connections over both backends"
  else
    fail "$addressing: 8 keep-alive connections over both backends" "$(cat "$TDM_TMP/drain.log")"
  fi
  check "$addressing: tandemctl backend drain" \
    in_ns "$NS_PRX" "$TANDEMCTL" --metrics "$METRICS_ADDR" backend drain web "$BE1"
  moved=0
  for _ in $(seq 1 50); do
    [ "$(flows_on "$BE1")" = 0 ] && moved=1 && break
    sleep 0.1
  done
  if [ "$moved" = 1 ] && [ "$(backend_state "$BE1")" = draining ]; then
    pass "$addressing: drain moved every idle connection off backend 1"
  else
    fail "$addressing: drain moved every idle connection off backend 1" "$(http_get /flows)"
  fi
  status_state=$(http_get /status | "$PYTHON" -c '
import json, sys
for svc in json.load(sys.stdin)["services"]:
    for b in svc["backend_states"]:
        print(b["backend"], b["state"], b["health"], b["admin"])' 2>&1)
  if echo "$status_state" | grep -qx "$BE1 draining up drain"; then
    pass "$addressing: /status shows backend 1 draining (health up, admin drain)"
  else
    fail "$addressing: /status shows backend 1 draining" "$status_state"
  fi
  # The old legs' RSTs leave with the moves; on a loaded machine the backend may process them a
  # moment after the flows moved, so poll (a leg whose RST was lost would stay for good).
  for _ in $(seq 1 50); do
    left=$(in_ns "$NS_BE1" ss -Htn state established "sport = :8080" | wc -l)
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  if [ "$left" = 0 ]; then
    pass "$addressing: backend 1 holds no connection after the drain (old legs reset)"
  else
    fail "$addressing: backend 1 holds no connection after the drain" "$left left"
  fi
  touch "$TDM_TMP/drain/go.2"
  if client_wait drain && [ "$(grep -c backend-2 "$TDM_TMP/drain/done.2")" = 8 ]; then
    pass "$addressing: after the drain every response comes from backend 2, same sockets"
  else
    fail "$addressing: after the drain every response comes from backend 2, same sockets" \
      "$(cat "$TDM_TMP/drain.log")"
  fi
  in_ns "$NS_PRX" "$TANDEMCTL" --metrics "$METRICS_ADDR" backend enable web "$BE1" >/dev/null
  check "$addressing: backend 1 enabled again" wait_state "$BE1" up 5

  # --- host death between requests ----------------------------------------------------------
  client_start hostdeath 3
  wait_file "$TDM_TMP/hostdeath/done.1"
  sleep 0.5
  ip -n "$NS_BE1" link set eth0 down  # the host is gone: no FIN, no RST ever comes
  stop_pid "$SERVER1_PID" KILL
  check "$addressing: backend 1 found down by the health checks" wait_state "$BE1" down 10
  touch "$TDM_TMP/hostdeath/go.2"
  wait_file "$TDM_TMP/hostdeath/done.2" 30
  touch "$TDM_TMP/hostdeath/go.3"
  if client_wait hostdeath && [ "$(grep -c backend-2 "$TDM_TMP/hostdeath/done.3")" = 8 ]; then
    pass "$addressing: backend 1 died between requests: all 8 connections carry on, every response correct"
  else
    fail "$addressing: backend 1 died between requests: all 8 connections carry on" \
      "$(cat "$TDM_TMP/hostdeath.log")"
  fi
  check "$addressing: re-splices completed" test "$(metric tandem_resplices_completed_total)" -ge 4
  revive_be1 || fail "$addressing: backend 1 back up"

  # --- process death between requests -------------------------------------------------------
  client_start procdeath 2
  wait_file "$TDM_TMP/procdeath/done.1"
  on1=$(grep -c backend-1 "$TDM_TMP/procdeath/done.1")
  sleep 0.5
  absorbed_before=$(metric tandem_drops_total 'reason="backend_closed"')
  stop_pid "$SERVER1_PID" KILL  # its kernel closes every connection with a FIN
  sleep 0.3
  touch "$TDM_TMP/procdeath/go.2"
  absorbed=$(( $(metric tandem_drops_total 'reason="backend_closed"') - absorbed_before ))
  if client_wait procdeath && [ "$(grep -c backend-2 "$TDM_TMP/procdeath/done.2")" = 8 ] &&
     [ "$absorbed" -ge "$on1" ]; then
    pass "$addressing: backend 1's server killed: its FINs absorbed ($absorbed), all 8 connections carry on"
  else
    fail "$addressing: backend 1's server killed: all 8 connections carry on" \
      "absorbed $absorbed of $on1" "$(cat "$TDM_TMP/procdeath.log")"
  fi
  wait_state "$BE1" down 10 >/dev/null
  revive_be1 || fail "$addressing: backend 1 back up"

  # --- death mid-response -------------------------------------------------------------------
  # Two 4 MB responses streaming at once, one from each backend (round robin); backend 1's
  # host dies: its client gets a RST once backend 1 is found down, the other completes.
  bg_start streamA "$NS_CLI" "$PYTHON" "$TOOL" stream --host "$VIP" --port 80 --bytes 4000000 \
    --delay 0.02
  STREAM_A=$BG_PID
  bg_start streamB "$NS_CLI" "$PYTHON" "$TOOL" stream --host "$VIP" --port 80 --bytes 4000000 \
    --delay 0.02
  STREAM_B=$BG_PID
  sleep 1
  stream_flows=$(http_get /flows | grep -v TIME_WAIT)
  resets_before=$(metric tandem_flows_reset_total 'reason="in_flight"')
  ip -n "$NS_BE1" link set eth0 down
  stop_pid "$SERVER1_PID" KILL
  ended=0
  for _ in $(seq 1 100); do  # 10 s: both responses would have ended by then, a hang never
    kill -0 "$STREAM_A" 2>/dev/null || kill -0 "$STREAM_B" 2>/dev/null || { ended=1; break; }
    sleep 0.1
  done
  stop_pid "$STREAM_A"
  stop_pid "$STREAM_B"
  out=$(cat "$TDM_TMP/streamA.log" "$TDM_TMP/streamB.log")
  resets=$(( $(metric tandem_flows_reset_total 'reason="in_flight"') - resets_before ))
  if [ "$ended" = 1 ] && [ "$(echo "$out" | grep -c "^error ConnectionResetError")" = 1 ] &&
     [ "$(echo "$out" | grep -c "^complete 4000000")" = 1 ] && [ "$resets" = 1 ]; then
    pass "$addressing: backend 1 died mid-response: its client got a RST, the other response completed"
  else
    fail "$addressing: backend 1 died mid-response: its client got a RST" "ended=$ended" \
      "resets=$resets" "$out" "flows while streaming:" "$stream_flows"
  fi

  check "$addressing: tandemd still running" kill -0 "$TDM_TANDEMD_PID"
  topo_down
done

finish
