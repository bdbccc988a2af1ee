#!/usr/bin/env bash
# tcpcheck through tandemd in passthrough mode, with transparent and with snat addressing; every
# byte of every connection is checked at both ends.
#   - 200 concurrent connections, 64 KiB each way, distinct patterns; clean half-close (the server
#     sends the second half of its data after the client's FIN); round robin reached both backends
#     (each backend's own count, and the backends listed in /flows); the backends saw the expected
#     source address.
#   - half-close with megabytes flowing after the client's FIN.
#   - RST teardown: connections aborted with SO_LINGER 0 after verification; tandemd counts the
#     RSTs as accepted, and each of these flows is gone or closed by its RST (state CLOSE).
#   - idle expiry (timeouts.established = 2 s): a held idle connection disappears from /flows,
#     tandem_flows_expired_total rises, and the late FIN is dropped as no_flow, so the client
#     does not get its close through (tcpcheck --expect-fail).
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel

# Extra client addresses, one per step, so each step can find exactly its own flows in /flows.
RST_CLIENT_IP=10.$TDM_NET.1.4
IDLE_CLIENT_IP=10.$TDM_NET.1.5

run_tcpcheck() {  # run_tcpcheck NAME ARGS...: runs a tcpcheck client; sets TC_OUT, TC_RC
  local name=$1
  shift
  TC_OUT=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" "$@" 2>&1)
  TC_RC=$?
  log "$name: $(echo "$TC_OUT" | grep '^tcpcheck: conns=')"
}

step_concurrent() {
  local a=$TDM_ADDRESSING name
  local ok1_before ok2_before created_before drops_before
  ok1_before=$(server_stat srv-be1 ok)
  ok2_before=$(server_stat srv-be2 ok)
  created_before=$(metric tandem_flows_created_total)
  drops_before=$(metric tandem_drops_total)
  name="$a: 200 concurrent connections, 64 KiB each way, every byte verified, clean close"
  run_tcpcheck "$name" --conns 200 --bytes 65536 --timeout 20
  if [ "$TC_RC" -eq 0 ] && echo "$TC_OUT" | grep -q '^tcpcheck: conns=200 ok=200 failed=0 '; then
    pass "$name"
  else
    fail "$name" "exit $TC_RC" "$TC_OUT"
  fi

  name="$a: tandemd created 200 flows and dropped no packet of these clean connections"
  local created drops
  created=$(metric tandem_flows_created_total)
  drops=$(metric tandem_drops_total)
  if [ $((created - created_before)) -eq 200 ] && [ "$drops" -eq "$drops_before" ]; then
    pass "$name"
  else
    fail "$name" "tandem_flows_created_total rose by $((created - created_before))" \
      "tandem_drops_total rose by $((drops - drops_before))"
  fi

  name="$a: round robin: each backend verified about half of the 200 connections"
  local ok1 ok2 d1 d2
  ok1=$(server_stat srv-be1 ok)
  ok2=$(server_stat srv-be2 ok)
  d1=$((ok1 - ok1_before))
  d2=$((ok2 - ok2_before))
  if [ "$d1" -ge 80 ] && [ "$d2" -ge 80 ] && [ $((d1 + d2)) -eq 200 ]; then
    pass "$name ($d1 + $d2)"
  else
    fail "$name" "be1 verified $d1, be2 verified $d2 (want both >= 80, sum 200)"
  fi

  name="$a: /flows lists the client's flows on both backends"
  local f1 f2
  f1=$(flows_matching "$CLIENT_IP:" | grep -c "$BE1_IP:8080")
  f2=$(flows_matching "$CLIENT_IP:" | grep -c "$BE2_IP:8080")
  if [ "$f1" -ge 1 ] && [ "$f2" -ge 1 ]; then
    pass "$name ($f1 + $f2)"
  else
    fail "$name" "flows to be1: $f1, to be2: $f2"
  fi

  local expect_src=$CLIENT_IP
  [ "$a" = snat ] && expect_src=$SNAT_IP
  name="$a: the backends saw source address $expect_src only"
  local p1 p2
  p1=$(server_stat srv-be1 peers)
  p2=$(server_stat srv-be2 peers)
  if [[ "$p1" =~ ^$expect_src\([0-9]+\)$ ]] && [[ "$p2" =~ ^$expect_src\([0-9]+\)$ ]]; then
    pass "$name"
  else
    fail "$name" "be1 peers: $p1" "be2 peers: $p2"
  fi
}

step_half_close() {
  local name="$TDM_ADDRESSING: half-close: 2 MB per connection flow after the client's FIN"
  run_tcpcheck "$name" --conns 4 --bytes 4000000 --timeout 20
  if [ "$TC_RC" -eq 0 ] && echo "$TC_OUT" | grep -q '^tcpcheck: conns=4 ok=4 failed=0 '; then
    pass "$name"
  else
    fail "$name" "exit $TC_RC" "$TC_OUT"
  fi
}

step_rst() {
  local a=$TDM_ADDRESSING name
  local before after
  before=$(metric tandem_rst_accepted_total)
  name="$a: RST teardown: 10 connections verified, then aborted with SO_LINGER 0"
  run_tcpcheck "$name" --conns 10 --bytes 65536 --rst --bind "$RST_CLIENT_IP"
  if [ "$TC_RC" -eq 0 ] && echo "$TC_OUT" | grep -q '^tcpcheck: conns=10 ok=10 failed=0 '; then
    pass "$name"
  else
    fail "$name" "exit $TC_RC" "$TC_OUT"
  fi
  sleep 0.5
  after=$(metric tandem_rst_accepted_total)
  # At least 10: a backend may add RSTs of its own, legitimately, when a late duplicate ACK of an
  # earlier connection reaches a socket it has already closed (seen after tail loss probes).
  name="$a: RST teardown: tandem_rst_accepted_total rose by at least 10"
  if [ $((after - before)) -ge 10 ]; then
    pass "$name (by $((after - before)))"
  else
    fail "$name" "before $before, after $after"
  fi
  # Each aborted flow is either gone or closed by its RST (CLOSE); none is open or in TIME_WAIT.
  name="$a: RST teardown: each aborted flow is gone from /flows or closed by the RST"
  local lines not_closed
  lines=$(flows_matching "$RST_CLIENT_IP:")
  not_closed=$(echo "$lines" | grep -v '^$' | grep -cvw CLOSE)
  if [ "$not_closed" -eq 0 ]; then
    pass "$name ($(echo "$lines" | grep -cw CLOSE) listed in CLOSE)"
  else
    fail "$name" "$not_closed flows of $RST_CLIENT_IP not in CLOSE:" "$lines"
  fi
}

step_expiry() {
  local a=$TDM_ADDRESSING name
  # A fresh daemon with a 2 s established timeout.
  stop_tandemd || fail "$a: tandemd stops before the expiry step"
  write_config "$TDM_TMP/idle.conf" --addressing "$a" --established 2
  if ! start_tandemd "$TDM_TMP/idle.conf"; then
    fail "$a: tandemd starts with timeouts.established = 2"
    return
  fi
  local expired_before no_flow_before
  expired_before=$(metric tandem_flows_expired_total)
  no_flow_before=$(metric tandem_drops_total 'reason="no_flow"')
  # Exchange, then 6 s idle (expiry after 2 s), then the FIN, which no flow carries any more.
  bg_start idle-client "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --bind "$IDLE_CLIENT_IP" \
    --conns 2 --bytes 1000 --hold-ms 6000 --timeout 3 --expect-fail
  local pid=$BG_PID
  sleep 1
  local live
  live=$(flows_matching "$IDLE_CLIENT_IP:" | grep -Ew -c ESTABLISHED)
  name="$a: idle expiry: the 2 held connections are established in /flows"
  if [ "$live" -eq 2 ]; then
    pass "$name"
  else
    fail "$name" "$live established flows of $IDLE_CLIENT_IP" "$(http_get /flows | head -n 20)"
  fi
  sleep 3.5  # t = 4.5 s: idle 4.5 s > 2 s, and the client closes only at 6 s
  name="$a: idle expiry: the flows are gone from /flows and tandem_flows_expired_total rose by 2"
  local left expired
  left=$(flows_matching "$IDLE_CLIENT_IP:" | wc -l)
  expired=$(metric tandem_flows_expired_total)
  if [ "$left" -eq 0 ] && [ $((expired - expired_before)) -eq 2 ]; then
    pass "$name"
  else
    fail "$name" "flows of $IDLE_CLIENT_IP left: $left" \
      "tandem_flows_expired_total: before $expired_before, now $expired"
  fi
  wait "$pid"
  local rc=$?
  name="$a: idle expiry: the client's late close does not get through (expected failure)"
  if [ "$rc" -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "tcpcheck --expect-fail exit $rc" "$(cat "$TDM_TMP/idle-client.log")"
  fi
  log "idle client: $(grep '^tcpcheck: conns=' "$TDM_TMP/idle-client.log")"
  name="$a: idle expiry: the late FINs were dropped as no_flow"
  local no_flow
  no_flow=$(metric tandem_drops_total 'reason="no_flow"')
  if [ "$no_flow" -gt "$no_flow_before" ]; then
    pass "$name"
  else
    fail "$name" "tandem_drops_total{reason=\"no_flow\"}: before $no_flow_before, now $no_flow"
  fi
}

run_addressing() {
  local a=$1
  if ! topo_up "$a"; then
    fail "$a: topology" "topo_up failed"
    topo_down
    return
  fi
  ip -n "$NS_CLI" addr add "$RST_CLIENT_IP/24" dev eth0
  ip -n "$NS_CLI" addr add "$IDLE_CLIENT_IP/24" dev eth0
  if ! tcpcheck_servers; then
    fail "$a: tcpcheck servers listen"
    topo_down
    return
  fi
  write_config "$TDM_TMP/tandemd.conf" --addressing "$a"
  if ! start_tandemd "$TDM_TMP/tandemd.conf"; then
    fail "$a: tandemd starts"
    topo_down
    return
  fi
  step_concurrent
  step_half_close
  step_rst
  step_expiry
  local name="$a: the backends' tcpcheck servers saw no failed connection"
  local f1 f2
  f1=$(server_stat srv-be1 failed)
  f2=$(server_stat srv-be2 failed)
  if [ "$f1" = 0 ] && [ "$f2" = 0 ]; then
    pass "$name"
  else
    fail "$name" "be1 failed=$f1, be2 failed=$f2" "$(grep FAILED "$TDM_TMP"/srv-be*.log | head)"
  fi
  check "$a: tandemd exits 0 on SIGTERM and removes its rules" stop_tandemd
  topo_down
}

for addressing in transparent snat; do
  run_addressing "$addressing"
done
finish
