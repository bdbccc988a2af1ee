#!/usr/bin/env bash
# The proxy pair in virtual MAC mode (sync.takeover = vmac): the standby shadows the frames sent
# to the virtual MAC and replays the outage window when it takes over. Same topology as
# test_pair_failover.sh (pair_lib.sh), plus a request/response client in a namespace of its own
# (rr, 10.N.1.3 on the front bridge) so its TCP counters are its alone, and a sniffer on every
# port of the switch recording any frame whose Ethernet *source* is the virtual MAC.
#
# Cases (addressing snat):
#   vmac: A active (its macvlans up, B's down); ARP for the VIP answers the vMAC; 100 verified
#         connections held open, a paced stream and a request/response client run across a
#         SIGKILL of A; all of them complete with every byte verified, the rr client never
#         needed a tail-loss probe or a retransmission (TcpExtTCPLossProbes and TcpRetransSegs of
#         its namespace unchanged), B replayed frames, no frame ever had the vMAC as source
#         (and the sniffer did see a control frame sent at the end), and B removes its macvlans
#         on SIGTERM.
#   garp: the same crash (rr client only) with the addresses moving by gratuitous ARP: the rr
#         client's or its backend's TCP had to send a loss probe or a retransmission.
#   vmac, rr client only: neither the client nor the backends probed or retransmitted.
# And, addressing transparent, vmac: the full case again. Then splice mode (snat, vmac, full):
# every connection spliced (SYN cookie, the legs in different sequence spaces, checkpointed with
# their translation), heartbeat miss count 10 (no assertion here is about timing): everything
# survives byte-exact, B replayed frames of the outage window, pruned what the other end had
# acknowledged on both legs (translated through each flow's offsets), and the endpoints received
# no duplicate segment beyond their own retransmissions.
TDM_PREFIX=${TDM_PREFIX:-tvmac}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
# The loss-probe assertion needs the takeover well inside the client's ~200 ms probe timeout:
# both nodes run under SCHED_FIFO (as docs/pair_sync.md advises for short heartbeats), so a
# loaded machine neither delays the takeover nor makes the standby take over spuriously.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
CONNS=100
VMAC=02:54:44:4d:00:01
CONTROL_MAC=02:54:44:4d:00:fe
NS_RR=${TDM_ID}-rr
COOKIE_SECRET=0f1e2d3c4b5a69788796a5b4c3d2e1f0
RR_IP=10.$TDM_NET.1.3

dump_state_extra() {
  local ns
  for ns in "$NS_PA" "$NS_PB"; do
    ns_exists "$ns" && echo "  -- $ns: ip -br link:" && ip -n "$ns" -br link 2>&1 | sed 's/^/  | /'
  done
  for ns in "$NS_CLI" "$NS_RR"; do
    ns_exists "$ns" && echo "  -- $ns neigh: $(ip -n "$ns" neigh show 2>&1 | tr '\n' ';')"
  done
}

link_up() { ip -n "$1" -o link show "$2" 2>/dev/null | grep -q '[<,]UP[,>]'; }

# tcp_counter NS NAME: an absolute TCP counter of NS (nstat: -a absolute, -s no history file).
tcp_counter() {
  in_ns "$1" nstat -azs "$2" | awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}
tcp_sum() {  # tcp_sum NAME NS...: one TCP counter summed over the namespaces
  local name=$1 ns sum=0
  shift
  for ns in "$@"; do sum=$(( sum + $(tcp_counter "$ns" "$name") )); done
  echo "$sum"
}
probes_and_retrans() {  # probes_and_retrans NS...: summed over the namespaces
  local ns sum=0
  for ns in "$@"; do
    sum=$(( sum + $(tcp_counter "$ns" TcpExtTCPLossProbes) + $(tcp_counter "$ns" TcpRetransSegs) ))
  done
  echo "$sum"
}

# sniff_start: one AF_PACKET socket in the switch namespace (every port, both bridges) with a
# classic BPF filter for Ethernet sources that start like VMAC; counts frames from VMAC and from
# CONTROL_MAC (a frame the test sends itself at the end, proving the sniffer sees what it should).
sniff_start() {
  cat >"$TDM_TMP/sniff.py" <<'EOF'
import ctypes, signal, socket, struct, sys
vmac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
control = bytes(int(x, 16) for x in sys.argv[2].split(":"))
hi = struct.unpack(">I", vmac[:4])[0]
code = [(0x20, 0, 0, 6), (0x15, 0, 1, hi), (0x06, 0, 0, 0xffff), (0x06, 0, 0, 0)]
buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *c) for c in code))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(code), ctypes.addressof(buf)))
n = {vmac: 0, control: 0}
def done(*_):
    print("sniff: vmac_source_frames=%d control_frames=%d" % (n[vmac], n[control]), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("sniff: ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING or data[6:12] not in n:
        continue
    n[data[6:12]] += 1
    if data[6:12] == vmac:
        print("sniff: frame from vMAC on %s: %s" % (addr[0], data[:42].hex()), flush=True)
EOF
  bg_start sniff "$NS_SW" python3 -u "$TDM_TMP/sniff.py" "$VMAC" "$CONTROL_MAC"
  SNIFF_PID=$BG_PID
  wait_for 5 grep -q 'sniff: ready' "$TDM_TMP/sniff.log"
}

rr_ns_up() {
  ns_add "$NS_RR" && veth "$NS_RR" eth0 brf rrp && ip -n "$NS_RR" addr add "$RR_IP/24" dev eth0
}

# rr_count: round trips for about 12 s (the rate varies a lot on a shared machine; the client
# must still be running at the crash, 2 s in), from a 1000-round calibration (also proves the path).
rr_count() {
  local t0 t1 ms
  t0=$(date +%s%N)
  in_ns "$NS_RR" "$TCPCHECK" client --connect "$VIP:80" --rr --count 1000 --size 64 \
    --timeout 10 >"$TDM_TMP/rr-cal.log" 2>&1 || return 1
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  [ "$ms" -gt 0 ] || ms=1
  local n=$(( 1000 * 12000 / ms ))
  [ "$n" -le 60000 ] || n=60000  # a fast calibration must not make a minute-long run
  echo "$n"
}

run_case() {
  local mode=$1 a=$2 full=$3 splice=${4:-} name
  TDM_ADDRESSING=$a
  local tag="$mode/$a"
  # Splice: a 200 ms dead interval (robust under load), so no assertion about the loss probe.
  local HB_MISS=$HB_MISS
  [ "$splice" = splice ] && { tag="$tag/splice"; HB_MISS=10; }
  log "==== takeover $mode, addressing $a ===="
  if ! pair_topo || ! rr_ns_up; then
    fail "$tag: topology set up"
    topo_down
    return
  fi
  if ! tcpcheck_servers; then
    fail "$tag: tcpcheck servers listen"
    topo_down
    return
  fi
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  if [ "$splice" = splice ]; then
    local conf
    for conf in "$TDM_TMP/a.conf" "$TDM_TMP/b.conf"; do
      sed -i 's/^mode = passthrough/mode = splice/' "$conf"
      sed -i "/^\[daemon\]/a cookie_secret = $COOKIE_SECRET" "$conf"
    done
  fi
  if [ "$mode" = vmac ]; then
    printf 'takeover = vmac\nvmac = %s\n' "$VMAC" >>"$TDM_TMP/a.conf"
    printf 'takeover = vmac\nvmac = %s\n' "$VMAC" >>"$TDM_TMP/b.conf"
    sniff_start || { fail "$tag: sniffer starts"; topo_down; return; }
  fi

  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
  local a_pid=$NODE_PID
  name="$tag: A becomes active"
  if [ "$mode" = vmac ]; then
    name="$name, its macvlans are up, the VIP is not a local address"
    if wait_for 5 is_role "$NS_PA" active && link_up "$NS_PA" tvfront &&
        link_up "$NS_PA" tvback && ! has_addr "$NS_PA" front "$VIP"; then
      pass "$name"
    else
      fail "$name" "A's role: '$(role_of "$NS_PA")'"
      topo_down
      return
    fi
  elif wait_for 5 is_role "$NS_PA" active && has_addr "$NS_PA" front "$VIP"; then
    pass "$name"
  else
    fail "$name" "A's role: '$(role_of "$NS_PA")'"
    topo_down
    return
  fi

  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  local b_pid=$NODE_PID
  name="$tag: B starts and reports ready as standby"
  [ "$mode" = vmac ] && name="$name, its macvlans down"
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby &&
      { [ "$mode" != vmac ] || { ip -n "$NS_PB" link show tvfront >/dev/null 2>&1 &&
        ! link_up "$NS_PB" tvfront && ! link_up "$NS_PB" tvback; }; }; then
    pass "$name"
  else
    fail "$name" "B's role: '$(role_of "$NS_PB")', ready $(metric_in "$NS_PB" tandem_pair_ready)"
  fi

  local count
  count=$(rr_count)
  name="$tag: request/response through A works (calibration: $count round trips for ~12 s)"
  if [ -n "$count" ] && [ "$count" -gt 0 ]; then
    pass "$name"
  else
    fail "$name" "$(cat "$TDM_TMP/rr-cal.log")"
    topo_down
    return
  fi
  if [ "$mode" = vmac ]; then
    name="$tag: ARP for the VIP answers the vMAC (client and rr namespaces)"
    if ip -n "$NS_RR" neigh show "$VIP" | grep -qi "lladdr $VMAC"; then
      pass "$name"
    else
      fail "$name" "rr neigh: $(ip -n "$NS_RR" neigh show "$VIP")"
    fi
  fi

  local conns_pid="" stream_pid=""
  if [ "$full" = full ]; then
    bg_start conns-$mode-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns "$CONNS" \
      --bytes 65536 --hold-ms 7000 --timeout 20
    conns_pid=$BG_PID
    bg_start stream-$mode-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream \
      --duration 9 --rate 1048576 --timeout 20
    stream_pid=$BG_PID
  fi
  # TDM_PCAP=DIR (debugging): tcpdump on the rr client's and the backends' interfaces.
  if [ -n "${TDM_PCAP:-}" ] && command -v tcpdump >/dev/null; then
    mkdir -p "$TDM_PCAP"
    local pns
    for pns in "$NS_RR" "$NS_BE1" "$NS_BE2"; do
      bg_start "pcap-${pns##*-}" "$pns" tcpdump -i eth0 -n -U -w "$TDM_PCAP/${pns##*-}-$mode-$a.pcap" tcp
    done
    sleep 0.5
  fi
  local before be_before
  before=$(probes_and_retrans "$NS_RR")
  be_before=$(probes_and_retrans "$NS_BE1" "$NS_BE2")
  bg_start rr-$mode-$a "$NS_RR" "$TCPCHECK" client --connect "$VIP:80" --rr --count "$count" \
    --size 64 --timeout 20
  local rr_pid=$BG_PID
  sleep 2
  local replayed_before
  replayed_before=$(metric_in "$NS_PB" tandem_shadow_replayed_total)

  # A takeover before the crash (heartbeats missed for 100 ms on a starved machine) would make
  # every assertion below about the crash meaningless: say so plainly.
  name="$tag: B is still the standby and the rr client still running when A is killed"
  if is_role "$NS_PB" standby && [ "$(metric_in "$NS_PB" tandem_pair_role_changes_total)" = 0 ] &&
      kill -0 "$rr_pid" 2>/dev/null; then
    pass "$name"
  elif [ "${RETRYING:-0}" = 0 ]; then
    # Not what this case is about (a starved machine, or a calibration far off): run the whole
    # case once more from scratch; a second time is a failure.
    log "$tag: precondition not met (B: $(role_of "$NS_PB"), load $(cut -d' ' -f1 /proc/loadavg)); running the case again"
    topo_down
    return 2
  else
    fail "$name" "B: $(role_of "$NS_PB"), $(metric_in "$NS_PB" tandem_pair_role_changes_total) role changes (load: $(cut -d' ' -f1-3 /proc/loadavg))" \
      "rr client: $(kill -0 "$rr_pid" 2>/dev/null && echo running || echo 'ended (calibration too low)')"
  fi
  # Duplicates: data segments an endpoint received a second time (TcpExtDelayedACKLost counts
  # each, tcp_data_queue/tcp_send_dupack), against the endpoints' own retransmissions, each of
  # which may legitimately arrive after the replayed original.
  local endpoints="$NS_CLI $NS_RR $NS_BE1 $NS_BE2" dup_before retrans_before
  # shellcheck disable=SC2086
  dup_before=$(tcp_sum TcpExtDelayedACKLost $endpoints)
  # shellcheck disable=SC2086
  retrans_before=$(tcp_sum TcpRetransSegs $endpoints)
  log "$tag: killing A (SIGKILL) and taking its links down at $(date -u +%H:%M:%S.%3N)"
  crash_node "$a_pid" "$NS_PA"
  name="$tag: B becomes active"
  [ "$mode" = vmac ] && name="$name with its macvlans up"
  if wait_for 5 is_role "$NS_PB" active &&
      { [ "$mode" != vmac ] || wait_for 2 link_up "$NS_PB" tvfront; }; then
    pass "$name"
  else
    fail "$name" "B's role: '$(role_of "$NS_PB")'"
  fi

  wait "$rr_pid"
  local rr_rc=$? rr_out after be_after
  after=$(probes_and_retrans "$NS_RR")
  be_after=$(probes_and_retrans "$NS_BE1" "$NS_BE2")
  rr_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/rr-$mode-$a.log")
  log "$tag: rr: $rr_out"
  RR_MAX_US=$(summary_field "$rr_out" max_us)
  name="$tag: every response of the request/response client correct, no error or reset"
  if [ "$rr_rc" -eq 0 ] && echo "$rr_out" | grep -q 'conns=1 ok=1 failed=0 '; then
    pass "$name (largest round trip $RR_MAX_US us)"
  else
    fail "$name" "exit $rr_rc" "$(tail -n 20 "$TDM_TMP/rr-$mode-$a.log")"
  fi
  # The segment lost in garp mode is the request (the client probes) or the response (the
  # backend does): count both sides. In vmac mode the backends' count is asserted only when the
  # rr client is their only traffic, and logged otherwise.
  log "$tag: loss probes + retransmissions: rr client $((after - before)), backends $((be_after - be_before))"
  if [ "$splice" = splice ]; then
    name="$tag: B replayed frames of the outage window"
    if [ "$(metric_in "$NS_PB" tandem_shadow_replayed_total)" -gt "$replayed_before" ]; then
      pass "$name ($(metric_in "$NS_PB" tandem_shadow_replayed_total))"
    else
      fail "$name" "replayed $(metric_in "$NS_PB" tandem_shadow_replayed_total)"
    fi
    log "$tag: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(splice|flows_active)' | awk '$NF != 0' | tr '\n' ' ')"
  elif [ "$mode" = vmac ]; then
    name="$tag: the rr client needed no tail-loss probe and no retransmission"
    [ "$full" = full ] || name="$name (nor the backends)"
    if [ "$after" -eq "$before" ] &&
        { [ "$full" = full ] || [ "$be_after" -eq "$be_before" ]; } &&
        [ "$(metric_in "$NS_PB" tandem_shadow_replayed_total)" -gt "$replayed_before" ]; then
      pass "$name (B replayed $(metric_in "$NS_PB" tandem_shadow_replayed_total) frames)"
    else
      # A takeover that came later than the probe timeout (~200 ms) on a starved machine: the
      # log lines say when B took over and replayed, against the crash time logged above.
      fail "$name" "loss probes + retransmissions rose by $((after - before)) (client)," \
        "$((be_after - be_before)) (backends); B's takeover:" \
        "$(grep -E 'role standby -> active|vmac: replayed' "$TDM_TMP/tandemd-b.log")" \
        "B replayed $(metric_in "$NS_PB" tandem_shadow_replayed_total)"
    fi
  else
    name="$tag: the rr client or its backend had to probe or retransmit (what vmac mode avoids)"
    if [ $((after - before + be_after - be_before)) -gt 0 ]; then
      pass "$name ($((after - before + be_after - be_before)))"
    else
      fail "$name" "loss probes + retransmissions unchanged ($before)"
    fi
  fi

  if [ "$full" = full ]; then
    wait "$conns_pid"
    local conns_rc=$?
    wait "$stream_pid"
    local stream_rc=$? conns_out stream_out
    conns_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/conns-$mode-$a.log")
    stream_out=$(grep '^tcpcheck: conns=' "$TDM_TMP/stream-$mode-$a.log")
    name="$tag: all $CONNS held connections survived, every byte verified, clean close"
    if [ "$conns_rc" -eq 0 ] && echo "$conns_out" | grep -q "conns=$CONNS ok=$CONNS failed=0 "; then
      pass "$name"
    else
      fail "$name" "exit $conns_rc" "$(tail -n 20 "$TDM_TMP/conns-$mode-$a.log")"
    fi
    name="$tag: the stream survived with every byte verified"
    if [ "$stream_rc" -eq 0 ] && echo "$stream_out" | grep -q 'conns=1 ok=1 failed=0 '; then
      pass "$name (max_gap_ms=$(summary_field "$stream_out" max_gap_ms))"
    else
      fail "$name" "exit $stream_rc" "$(tail -n 20 "$TDM_TMP/stream-$mode-$a.log")"
    fi
  fi

  if [ "$mode" = vmac ]; then
    local dups retrans
    # shellcheck disable=SC2086
    dups=$(( $(tcp_sum TcpExtDelayedACKLost $endpoints) - dup_before ))
    # shellcheck disable=SC2086
    retrans=$(( $(tcp_sum TcpRetransSegs $endpoints) - retrans_before ))
    log "$tag: duplicate data segments received by the endpoints since the crash: $dups (their own retransmissions: $retrans); B pruned: $(http_in "$NS_PB" /metrics | grep -E '^tandem_shadow_replay_(pruned|offset_unknown)' | awk '$NF != 0' | tr '\n' ' ')"
    if [ "$splice" = splice ]; then
      # Splice flows are pruned through their offsets: no frame the other end had acknowledged
      # is replayed, so every duplicate an endpoint saw is one of the endpoints' own
      # retransmissions arriving after its replayed original (before the fix: hundreds more).
      name="$tag: the replay sent no duplicates: the endpoints' duplicate segments ($dups) are at most their own retransmissions ($retrans)"
      if [ "$dups" -le "$retrans" ]; then
        pass "$name"
      else
        fail "$name" "$(grep -E 'vmac: replayed' "$TDM_TMP/tandemd-b.log")"
      fi
      name="$tag: B pruned acknowledged frames of spliced flows on both legs"
      local pc pb
      pc=$(metric_in "$NS_PB" tandem_shadow_replay_pruned_total 'reason="delivered",leg="client"')
      pb=$(metric_in "$NS_PB" tandem_shadow_replay_pruned_total 'reason="delivered",leg="backend"')
      if [ "$pc" -gt 0 ] && [ "$pb" -gt 0 ]; then
        pass "$name (client leg $pc, backend leg $pb)"
      else
        fail "$name" "client leg '$pc', backend leg '$pb'"
      fi
    fi
    # The control: one frame from CONTROL_MAC out of the rr namespace, which the sniffer must see.
    in_ns "$NS_RR" python3 -c "
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
s.send(bytes.fromhex('ffffffffffff' + '$CONTROL_MAC'.replace(':', '') + '88b5') + bytes(46))"
    sleep 0.3
    stop_pid "$SNIFF_PID" TERM
    local frames control
    frames=$(sed -n 's/^sniff: vmac_source_frames=\([0-9]*\) .*/\1/p' "$TDM_TMP/sniff.log")
    control=$(sed -n 's/^sniff: .* control_frames=//p' "$TDM_TMP/sniff.log")
    name="$tag: no frame on any switch port had the vMAC as source; the bridges never learnt it"
    if [ "$frames" = 0 ] && [ "${control:-0}" -ge 1 ] &&
        ! bridge -n "$NS_SW" fdb show | grep -qi "$VMAC"; then
      pass "$name (the sniffer saw the control frame)"
    else
      fail "$name" "vMAC frames: '${frames}', control frames: '${control}' (want >= 1)" \
        "$(grep 'frame from' "$TDM_TMP/sniff.log" | head -5)" \
        "$(bridge -n "$NS_SW" fdb show 2>/dev/null | grep -i "$VMAC")"
    fi
    log "$tag: B: $(http_in "$NS_PB" /metrics | grep -E '^tandem_(shadow|vmac)_' | awk '$NF != 0' | tr '\n' ' ')"
    name="$tag: B stops cleanly on SIGTERM and removes its macvlans"
    if stop_node "$b_pid" "$NS_PB" && ! ip -n "$NS_PB" link show tvfront >/dev/null 2>&1 &&
        ! ip -n "$NS_PB" link show tvback >/dev/null 2>&1; then
      pass "$name"
    else
      fail "$name" "$(ip -n "$NS_PB" -br link 2>&1)"
    fi
  fi
  # KEEP_LOGS=DIR: a copy of every log of the case (tandemd, clients, sniffer) for a look later.
  if [ -n "${KEEP_LOGS:-}" ]; then
    CASE_NO=$(( ${CASE_NO:-0} + 1 ))
    mkdir -p "$KEEP_LOGS/$CASE_NO-$mode-$a" && cp "$TDM_TMP"/*.log "$KEEP_LOGS/$CASE_NO-$mode-$a/"
  fi
  if [ -n "${RESULT_FILE:-}" ]; then
    echo "$mode $a rr_max_us=$RR_MAX_US probes_retrans=$((after - before + be_after - be_before))" \
      >>"$RESULT_FILE"
  fi
  topo_down
}

for c in ${VMAC_CASES:-vmac/snat/full garp/snat/rr vmac/snat/rr vmac/transparent/full \
    vmac/snat/full/splice}; do
  IFS=/ read -r m a f sp <<<"$c"
  RETRYING=0
  run_case "$m" "$a" "$f" "$sp"
  if [ $? -eq 2 ]; then
    RETRYING=1
    run_case "$m" "$a" "$f" "$sp"
  fi
done
finish
