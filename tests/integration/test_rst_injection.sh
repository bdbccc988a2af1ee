#!/usr/bin/env bash
# Blind RSTs must not break a flow (RFC 5961 3.2), with transparent and with snat addressing.
# A verified tcpcheck stream runs through the VIP; its ports come from /flows and its current
# sequence number from one captured segment. A third "attacker" namespace on the client's network
# then injects RSTs that spoof the client's address and the live connection's ports:
#   - with sequence numbers half the sequence space away from the live one: tandemd must drop them
#     (tandem_drops_total{reason="rst_out_of_window"} rises) and the flow stays established;
#   - with a sequence number inside the window but not the exact next one: tandemd must pass it on
#     without tearing the flow down (tandem_rst_challenged_total rises), and the backend answers
#     it with a challenge ACK (its TcpExtTCPChallengeACK rises) instead of a reset;
# and the stream carries on and verifies every byte to its clean close.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK TCPINJECT
require_kernel

STREAM_SECONDS=6
# Slow enough that the live sequence number moves by little between the capture and the
# injection: 32 KiB ahead of the captured one stays inside the backend's receive window (at least
# 64 KiB here) even if the injection comes seconds later.
STREAM_RATE=8192
IN_WINDOW_OFFSET=32768
INJECTED=3

# challenge_acks NS: the kernel's count of challenge ACKs sent (RFC 5961) in NS.
challenge_acks() {
  in_ns "$1" nstat -asz TcpExtTCPChallengeACK | awk '$1 == "TcpExtTCPChallengeACK" {print $2}'
}

run_addressing() {
  local a=$1 name
  if ! topo_up "$a"; then
    fail "$a: topology" "topo_up failed"
    topo_down
    return
  fi
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

  bg_start stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream \
    --duration "$STREAM_SECONDS" --rate "$STREAM_RATE" --timeout 5
  local stream_pid=$BG_PID
  sleep 1

  # The live connection: client port from /flows ("service client vip backend source state ..").
  local line client_ep
  line=$(flows_matching "$CLIENT_IP:" | grep -w ESTABLISHED | head -n 1)
  client_ep=$(echo "$line" | awk '{print $2}')
  name="$a: the stream's flow is established in /flows"
  if [[ "$client_ep" =~ ^$CLIENT_IP:[0-9]+$ ]]; then
    pass "$name ($line)"
  else
    fail "$name" "no established flow of $CLIENT_IP"
    stop_pid "$stream_pid"
    topo_down
    return
  fi

  # Its current client sequence number, from one segment on the client's own interface.
  local seen seq
  seen=$(in_ns "$NS_CLI" "$TCPINJECT" --sniff eth0 --src "$client_ep" --dst "$VIP:80" \
    --timeout 3)
  seq=$(echo "$seen" | tr ' ' '\n' | sed -n 's/^seq=//p')
  if [ -z "$seq" ]; then
    fail "$a: capture the stream's sequence number" "$seen"
    stop_pid "$stream_pid"
    topo_down
    return
  fi

  local drops_before drops_after rst_before rst_after
  drops_before=$(metric tandem_drops_total 'reason="rst_out_of_window"')
  rst_before=$(metric tandem_rst_accepted_total)
  local i bad_seq out ok=1
  for i in $(seq 1 "$INJECTED"); do
    # 2^31 away (plus a little) from the live sequence number: outside any possible window.
    bad_seq=$(( (seq + 2147483648 + i * 1000) % 4294967296 ))
    if ! out=$(in_ns "$NS_ATK" "$TCPINJECT" --src "$client_ep" --dst "$VIP:80" --flags R \
        --seq "$bad_seq" 2>&1); then
      ok=0
      fail "$a: inject a spoofed RST from the attacker namespace" "$out"
    fi
    log "$out (live seq $seq)"
  done
  [ "$ok" -eq 1 ] && pass "$a: $INJECTED spoofed RSTs injected from the attacker namespace"
  sleep 0.5

  drops_after=$(metric tandem_drops_total 'reason="rst_out_of_window"')
  rst_after=$(metric tandem_rst_accepted_total)
  name="$a: tandem_drops_total{reason=\"rst_out_of_window\"} rose by $INJECTED"
  if [ $((drops_after - drops_before)) -eq "$INJECTED" ]; then
    pass "$name"
  else
    fail "$name" "before $drops_before, after $drops_after"
  fi
  name="$a: no RST was accepted as a teardown"
  if [ "$rst_after" -eq "$rst_before" ]; then
    pass "$name"
  else
    fail "$name" "tandem_rst_accepted_total before $rst_before, after $rst_after"
  fi
  name="$a: the flow is still established after the injection"
  if flows_matching "$client_ep " | grep -qw ESTABLISHED; then
    pass "$name"
  else
    fail "$name" "$(flows_matching "$client_ep ")"
  fi

  # An in-window, inexact RST: passed on, challenged by the backend, flow kept.
  local backend_ns=$NS_BE1 challenged_before acks_before challenged_after acks_after
  [ "$(echo "$line" | awk '{print $4}')" = "$BE2_IP:8080" ] && backend_ns=$NS_BE2
  challenged_before=$(metric tandem_rst_challenged_total)
  rst_before=$(metric tandem_rst_accepted_total)
  acks_before=$(challenge_acks "$backend_ns")
  out=$(in_ns "$NS_ATK" "$TCPINJECT" --src "$client_ep" --dst "$VIP:80" --flags R \
    --seq $(( (seq + IN_WINDOW_OFFSET) % 4294967296 )) 2>&1) ||
    fail "$a: inject an in-window RST from the attacker namespace" "$out"
  log "$out (live seq $seq)"
  sleep 0.5
  challenged_after=$(metric tandem_rst_challenged_total)
  rst_after=$(metric tandem_rst_accepted_total)
  acks_after=$(challenge_acks "$backend_ns")
  name="$a: in-window RST passed on unaccepted (tandem_rst_challenged_total rose by 1)"
  if [ $((challenged_after - challenged_before)) -eq 1 ] && [ "$rst_after" -eq "$rst_before" ]; then
    pass "$name"
  else
    fail "$name" "tandem_rst_challenged_total before $challenged_before, after $challenged_after" \
      "tandem_rst_accepted_total before $rst_before, after $rst_after"
  fi
  name="$a: the backend answered the in-window RST with a challenge ACK"
  if [ "${acks_after:-0}" -gt "${acks_before:-0}" ]; then
    pass "$name"
  else
    fail "$name" "TcpExtTCPChallengeACK in $backend_ns: before $acks_before, after $acks_after"
  fi
  name="$a: the flow is still established after the in-window RST"
  if flows_matching "$client_ep " | grep -qw ESTABLISHED; then
    pass "$name"
  else
    fail "$name" "$(flows_matching "$client_ep ")"
  fi

  wait "$stream_pid"
  local rc=$?
  local summary
  summary=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream.log")
  log "stream: $summary"
  name="$a: the stream carried on and verified every byte to a clean close"
  if [ "$rc" -eq 0 ] && [[ "$summary" == "tcpcheck: conns=1 ok=1 failed=0 "* ]]; then
    pass "$name (max gap $(summary_field "$summary" max_gap_ms) ms)"
  else
    fail "$name" "exit $rc" "$(cat "$TDM_TMP/stream.log")"
  fi

  check "$a: tandemd exits 0 on SIGTERM and removes its rules" stop_tandemd
  topo_down
}

for addressing in transparent snat; do
  run_addressing "$addressing"
done
finish
