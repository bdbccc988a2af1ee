# shellcheck shell=bash
# The proxy pair's topology and node helpers, shared by tests/integration/test_pair_failover.sh
# and scripts/demo.sh. Functions only: source lib.sh first, then this file, then call pair_init.
#
#   client 10.N.1.2 --+-- brf --+-- A front 10.N.1.11   A back 10.N.2.11 --+-- brb --+-- be1 10.N.2.2
#                                +-- B front 10.N.1.12   B back 10.N.2.12 --+         +-- be2 10.N.2.3
#                                                                            +-- attacker 10.N.2.66
#   The group that moves with the active role: front VIP 10.N.1.100/32 and, on the back side,
#   the SNAT address 10.N.2.10/32 (snat) or the backends' gateway 10.N.2.1/32 (transparent).
#   The sync link runs over the back bridge (A back <-> B back, UDP SYNC_PORT).

# pair_init: the pair's names and addresses (call once, after sourcing lib.sh). HB_INTERVAL and
# HB_MISS may be set by the caller beforehand.
pair_init() {
  NS_PA=${TDM_ID}-pa
  NS_PB=${TDM_ID}-pb
  A_FRONT=10.$TDM_NET.1.11
  B_FRONT=10.$TDM_NET.1.12
  A_BACK=10.$TDM_NET.2.11
  B_BACK=10.$TDM_NET.2.12
  GATEWAY_IP=$BACK_IP     # the backends' gateway in transparent mode (10.N.2.1)
  ATTACKER_IP=10.$TDM_NET.2.66
  SYNC_PORT=7946
  FRONT_PORT=7947
  KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
  HB_INTERVAL=${HB_INTERVAL:-0.02}
  HB_MISS=${HB_MISS:-5}
  # PAIR_REALTIME=P: both nodes run under SCHED_FIFO P (daemon.realtime_priority), as the docs
  # advise for short heartbeats on a busy host. Where this machine refuses realtime scheduling
  # the nodes run at normal priority, and the log says so.
  if [ -n "${PAIR_REALTIME:-}" ] && ! chrt -f "$PAIR_REALTIME" true 2>/dev/null; then
    log "NOTE: SCHED_FIFO refused here (chrt -f $PAIR_REALTIME): the nodes run at normal priority"
    PAIR_REALTIME=
  fi
}

# pair_group_back: the back-side address of the group for the current addressing.
pair_group_back() {
  if [ "$TDM_ADDRESSING" = transparent ]; then echo "$GATEWAY_IP"; else echo "$SNAT_IP"; fi
}

http_in() {  # http_in NS PATH
  in_ns "$1" curl -s --noproxy '*' --max-time 5 "http://$METRICS_ADDR$2" 2>/dev/null
}

metric_in() {  # metric_in NS NAME [LABEL-SUBSTRING]: sum of the matching samples
  http_in "$1" /metrics | awk -v name="$2" -v want="${3:-}" '
    /^#/ { next }
    { base = $1; sub(/\{.*/, "", base); if (base != name) next
      if (want != "" && index($1, want) == 0) next; sum += $2 }
    END { printf "%.0f\n", sum + 0 }'
}

role_of() {  # role_of NS: active | standby | fault | ""
  http_in "$1" /status | sed -n 's/.*"pair":{"role":"\([a-z]*\)".*/\1/p'
}

# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() {
  local tries=$(( $1 * 20 ))
  shift
  while [ "$tries" -gt 0 ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
    tries=$((tries - 1))
  done
  return 1
}

is_role() { [ "$(role_of "$1")" = "$2" ]; }
is_ready() { [ "$(metric_in "$1" tandem_pair_ready)" = 1 ]; }
has_addr() { ip -n "$1" -o -4 addr show dev "$2" | grep -q " $3/32 "; }

# pair_topo: the namespaces, bridges and addresses above, for the current TDM_ADDRESSING.
pair_topo() {
  local ns
  for ns in "$NS_SW" "$NS_CLI" "$NS_ATK" "$NS_PA" "$NS_PB" "$NS_BE1" "$NS_BE2"; do
    ns_add "$ns" || return 1
  done
  switch_up || return 1
  veth "$NS_CLI" eth0 brf cli || return 1
  veth "$NS_ATK" eth0 brb atk || return 1
  veth "$NS_PA" front brf paf || return 1
  veth "$NS_PA" back brb pab || return 1
  veth "$NS_PB" front brf pbf || return 1
  veth "$NS_PB" back brb pbb || return 1
  veth "$NS_BE1" eth0 brb be1 || return 1
  veth "$NS_BE2" eth0 brb be2 || return 1

  ip -n "$NS_CLI" addr add "$CLIENT_IP/24" dev eth0 || return 1
  ip -n "$NS_ATK" addr add "$ATTACKER_IP/24" dev eth0 || return 1
  ip -n "$NS_PA" addr add "$A_FRONT/24" dev front || return 1
  ip -n "$NS_PA" addr add "$A_BACK/24" dev back || return 1
  ip -n "$NS_PB" addr add "$B_FRONT/24" dev front || return 1
  ip -n "$NS_PB" addr add "$B_BACK/24" dev back || return 1
  for ns in "$NS_PA" "$NS_PB"; do
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1 \
      net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1 \
      net.ipv4.conf.front.accept_local=1 net.ipv4.conf.back.accept_local=1 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.front.rp_filter=0 net.ipv4.conf.back.rp_filter=0 \
      net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 || return 1
  done
  ip -n "$NS_BE1" addr add "$BE1_IP/24" dev eth0 || return 1
  ip -n "$NS_BE2" addr add "$BE2_IP/24" dev eth0 || return 1
  if [ "$TDM_ADDRESSING" = transparent ]; then
    ip -n "$NS_BE1" route add default via "$GATEWAY_IP" || return 1
    ip -n "$NS_BE2" route add default via "$GATEWAY_IP" || return 1
  fi
}

# pair_config FILE NODE PRIORITY BIND PEER [FRONT_BIND FRONT_PEER]: write_config's service "web"
# plus a [sync] section; with FRONT_*, heartbeats also travel on the front network (port
# FRONT_PORT).
pair_config() {
  local front=""
  if [ -n "${6:-}" ]; then
    front="front_bind = $6:$FRONT_PORT
front_peer = $7:$FRONT_PORT"
  fi
  write_config "$1" --extra "[sync]
$front
node_id = $2
priority = $3
preempt = false
bind = $4:$SYNC_PORT
peer = $5:$SYNC_PORT
key = $KEY
key_id = 7
heartbeat_interval = $HB_INTERVAL
miss_count = $HB_MISS
addresses = front=$VIP/32 back=$(pair_group_back)/32
garp_count = 5" || return 1
  # Kernel binding (TANDEM_FASTPATH_BIND=on) answers the backend's SYN-ACK in the kernel, which
  # deferral would hold: the two exclude each other (docs/fastpath.md).
  if [ "${TANDEM_FASTPATH_BIND:-off}" = on ]; then
    printf 'defer = false\n' >>"$1"
  fi
  if [ -n "${PAIR_REALTIME:-}" ]; then
    sed -i "/^\[daemon\]/a realtime_priority = $PAIR_REALTIME" "$1"
  fi
}

# start_node NAME NS CONFIG: starts tandemd in NS (log $TDM_TMP/NAME.log), sets NODE_PID and
# waits (up to 10 s) until its /status answers.
start_node() {
  bg_start "$1" "$2" "$TANDEMD" --config "$3"
  NODE_PID=$BG_PID
  wait_for 10 http_in "$2" /status
}

# crash_node PID NS: SIGKILL to a node this script started (reaped here, without the shell's
# "Killed" notice), then its front and back links are taken down.
crash_node() {
  kill -KILL "$1"
  wait "$1" 2>/dev/null
  ip -n "$2" link set front down
  ip -n "$2" link set back down
}

# stop_node PID NS: SIGTERM; succeeds only if the node exited 0 and left no TANDEM rules in NS's
# raw table.
stop_node() {
  stop_pid "$1" TERM
  local rules
  rules=$(in_ns "$2" iptables -t raw -S 2>/dev/null | grep -c TANDEM)
  if [ "$STOP_RC" -ne 0 ] || [ "$rules" -ne 0 ]; then
    echo "tandemd exit status $STOP_RC (want 0); $rules TANDEM rules left in $2's raw table" >&2
    return 1
  fi
}

# forge NS TARGET_IP: three forged datagrams to TARGET's sync port (from the attacker).
forge() {
  in_ns "$NS_ATK" python3 - "$2" "$SYNC_PORT" <<'EOF'
import socket, struct, sys
dst = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"\xde\xad" * 30, dst)  # garbage: bad magic
# A well-formed heartbeat claiming to be node 1, ACTIVE, epoch 100000, with a wrong MAC.
hb = struct.pack(">BBBBIII", 1, 255, 1, 0, 100000, 0, 20)
sec = struct.pack(">BBH", 1, len(hb) // 4, 1) + hb
for key_id in (7, 99):  # the right key id (bad MAC), then an unknown one
    hdr = struct.pack(">HBBHHQII", 0x5453, 1, 0, key_id, len(sec), 2**62, 1, 100000)
    s.sendto(hdr + sec + b"\x00" * 16, dst)
EOF
}

rejected() { metric_in "$1" tandem_sync_rejected_total; }
rejected_reaches() { [ "$(rejected "$1")" -ge "$2" ]; }  # rejected_reaches NS N

# dump_state (replaces lib.sh's for the pair tests): for each node its addresses, iptables rules,
# /pair and non-zero metrics of the families in PAIR_DUMP_METRICS, then the last lines of every
# log and each daemon's role changes and address moves. A test adds to it by defining
# dump_state_extra.
PAIR_DUMP_METRICS=${PAIR_DUMP_METRICS:-pair|sync|front|splice|resplice|backend|flows_reset|drops|vmac|shadow}
dump_state() {
  echo "  ---- state dump ($TDM_ID, addressing ${TDM_ADDRESSING:-}) ----"
  local ns f
  for ns in "$NS_PA" "$NS_PB"; do
    ns_exists "$ns" || continue
    echo "  -- $ns: ip -br addr; iptables -S (rules only):"
    ip -n "$ns" -br addr 2>&1 | sed 's/^/  | /'
    in_ns "$ns" iptables -S 2>&1 | grep -v '^-P' | sed 's/^/  | /'
    echo "  -- $ns: /pair:"
    http_in "$ns" /pair | sed 's/^/  | /'
    echo "  -- $ns: metrics tandem_($PAIR_DUMP_METRICS) (non-zero):"
    http_in "$ns" /metrics | grep -E "^tandem_($PAIR_DUMP_METRICS)" | awk '$NF != 0' |
      sed 's/^/  | /'
  done
  if declare -F dump_state_extra >/dev/null; then dump_state_extra; fi
  for f in "$TDM_TMP"/*.log; do
    [ -f "$f" ] || continue
    echo "  -- $(basename "$f") (last 15 lines):"
    tail -n 15 "$f" | sed 's/^/  | /'
  done
  for f in "$TDM_TMP"/tandemd-*.log; do
    [ -f "$f" ] || continue
    echo "  -- $(basename "$f"): role changes and address moves:"
    grep -E 'role |address group' "$f" | sed 's/^/  | /'
  done
  echo "  ---- end of state dump ----"
}

# pair_servers_up: pair_topo and tcpcheck_servers for the current addressing; on failure a FAIL
# line and the topology taken down (the caller returns).
pair_servers_up() {
  local what=$1
  if ! pair_topo; then
    fail "$what: topology set up"
    topo_down
    return 1
  fi
  if ! tcpcheck_servers; then
    fail "$what: tcpcheck servers listen"
    topo_down
    return 1
  fi
}

# crash_a_check_b LABEL A_PID: A is killed (crash_node) and B must become active holding the
# VIP (a PASS/FAIL line "LABEL: B becomes active and holds the VIP").
crash_a_check_b() {
  log "$1: killing A (SIGKILL) and taking its links down"
  crash_node "$2" "$NS_PA"
  if wait_for 5 is_role "$NS_PB" active && wait_for 2 has_addr "$NS_PB" front "$VIP"; then
    pass "$1: B becomes active and holds the VIP"
  else
    fail "$1: B becomes active and holds the VIP" "B's role: '$(role_of "$NS_PB")'"
  fi
}

# check_survivors LABEL N CONNS_PID STREAM_PID CONNS_LOG STREAM_LOG: waits for the held
# connections' and the stream's tcpcheck and checks that all N connections and the stream
# verified every byte (PASS/FAIL lines "LABEL: ...").
check_survivors() {
  local label=$1 n=$2 conns_rc stream_rc conns_out stream_out name
  wait "$3"
  conns_rc=$?
  wait "$4"
  stream_rc=$?
  conns_out=$(grep '^tcpcheck: conns=' "$5")
  stream_out=$(grep '^tcpcheck: conns=' "$6")
  log "$label: conns: $conns_out"
  log "$label: stream: $stream_out"
  name="$label: all $n held connections survived, every byte verified, clean close"
  if [ "$conns_rc" -eq 0 ] && echo "$conns_out" | grep -q "conns=$n ok=$n failed=0 "; then
    pass "$name"
  else
    fail "$name" "exit $conns_rc" "$(tail -n 20 "$5")"
  fi
  name="$label: the stream survived with every byte verified"
  if [ "$stream_rc" -eq 0 ] && echo "$stream_out" | grep -q 'conns=1 ok=1 failed=0 '; then
    pass "$name (max_gap_ms=$(summary_field "$stream_out" max_gap_ms))"
  else
    fail "$name" "exit $stream_rc" "$(tail -n 20 "$6")"
  fi
}
