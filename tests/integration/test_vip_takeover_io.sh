#!/usr/bin/env bash
# The VIP takeover adapters of proxy/io, driven through tests/tools/tandem_vipctl, in namespaces of
# this test's own: two proxies A and B and a client on one bridge.
#   - addr_netlink: `has` before and after; add and del are idempotent (added/present,
#     removed/absent), cross-checked with `ip addr`; the prefix length is part of the identity;
#     a group spanning two interfaces is applied and withdrawn together and rolled back when one
#     member fails; errors (no such interface) are reported, not hidden.
#   - takeover: the client resolves the VIP to A's MAC by talking to it; the VIP moves from A to B
#     and B sends a gratuitous ARP burst; the client's neighbour entry now holds B's MAC although
#     the client sent nothing (its tx counter is unchanged), and a TCP connection to the VIP now
#     reaches B.
#   - arp_accept (client at 0, the default): the gratuitous ARP *updated* the existing entry; for
#     an address the client has no entry for, it creates none at 0 and creates one at 1. On Linux
#     arp_accept governs creation only (net/ipv4/arp.c, arp_process).
#   - udp_channel: datagrams from A's channel arrive at B's intact (hex compared), from the peer.
TDM_PREFIX=${TDM_PREFIX:-tvip}
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TCPCHECK
[ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces, AF_PACKET)"

VIPCTL=$(dirname "$TCPCHECK")/tandem_vipctl
if [ ! -x "$VIPCTL" ]; then
  echo "FAIL environment: $VIPCTL not built (target tandem_vipctl, next to tcpcheck)"
  echo "0 passed, 1 failed"
  exit 1
fi

NS_PA=${TDM_ID}-pa
NS_PB=${TDM_ID}-pb
A_IP=10.$TDM_NET.1.11
B_IP=10.$TDM_NET.1.12
VIP2=10.$TDM_NET.1.101   # for the arp_accept creation check
MAC_A=02:00:00:00:0a:0a
MAC_B=02:00:00:00:0b:0b

dump_state() {
  echo "  ---- state dump ($TDM_ID) ----"
  local ns
  for ns in "$NS_PA" "$NS_PB" "$NS_CLI"; do
    ns_exists "$ns" || continue
    echo "  -- $ns: ip -br addr; ip neigh:"
    ip -n "$ns" -br addr 2>&1 | sed 's/^/  | /'
    ip -n "$ns" neigh 2>&1 | sed 's/^/  | /'
  done
  if ns_exists "$NS_CLI"; then
    echo "  -- client: arp_accept all=$(in_ns "$NS_CLI" sysctl -n net.ipv4.conf.all.arp_accept)" \
      "eth0=$(in_ns "$NS_CLI" sysctl -n net.ipv4.conf.eth0.arp_accept)"
    echo "  -- client: eth0 tx_packets=$(client_tx)"
  fi
  local f
  for f in "$TDM_TMP"/*.log; do
    [ -f "$f" ] || continue
    echo "  -- $(basename "$f") (last 10 lines):"
    tail -n 10 "$f" | sed 's/^/  | /'
  done
  echo "  ---- end of state dump ----"
}

vipctl() {  # vipctl NS ARGS...: runs the tool in NS
  local ns=$1
  shift
  in_ns "$ns" "$VIPCTL" "$@"
}

client_tx() { in_ns "$NS_CLI" cat /sys/class/net/eth0/statistics/tx_packets; }

# neigh_mac ADDR: the client's lladdr for ADDR on eth0 (empty if no entry or none resolved).
neigh_mac() {
  ip -n "$NS_CLI" neigh show "$1" dev eth0 | sed -n 's/.* lladdr \([0-9a-f:]*\).*/\1/p'
}

# shellcheck disable=SC2317  # called through check()
# wait_neigh_mac ADDR MAC [TENTHS]: until the client's entry for ADDR holds MAC.
wait_neigh_mac() {
  local addr=$1 mac=$2 tries=${3:-20}
  while [ "$tries" -gt 0 ]; do
    [ "$(neigh_mac "$addr")" = "$mac" ] && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  echo "client's entry for $addr: '$(ip -n "$NS_CLI" neigh show "$addr" dev eth0)', want $mac"
  return 1
}

# vip_count NS: how many times the VIP is on NS's eth0 according to `ip addr` (the oracle).
vip_count() { ip -n "$1" -o -4 addr show dev eth0 | grep -c " $VIP/32 "; }

# expect_out NAME WANT_RC WANT_OUTPUT NS ARGS...: runs vipctl; PASS if exit status and output match.
expect_out() {
  local name=$1 want_rc=$2 want=$3 ns=$4 out rc
  shift 4
  out=$(vipctl "$ns" "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$want_rc" ] && [ "$out" = "$want" ]; then
    pass "$name"
  else
    fail "$name" "tandem_vipctl $*: exit $rc (want $want_rc)" "output: $out" "want: $want"
  fi
}

# server_ok NAME: connections counted by the tcpcheck server logged in $TDM_TMP/NAME.log.
server_ok() {
  kill -USR1 "$1" 2>/dev/null
  sleep 0.2
  grep '^tcpcheck-server: listen=' "$TDM_TMP/$2.log" | tail -n 1 | tr ' ' '\n' |
    sed -n 's/^ok=//p'
}

topo() {
  local ns
  for ns in "$NS_SW" "$NS_CLI" "$NS_PA" "$NS_PB"; do
    ns_add "$ns" || return 1
  done
  if in_ns "$NS_SW" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    in_ns "$NS_SW" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
      net.bridge.bridge-nf-call-arptables=0 || return 1
  fi
  ip -n "$NS_SW" link add br0 type bridge || return 1
  ip -n "$NS_SW" link set br0 up || return 1
  veth "$NS_CLI" eth0 br0 cli || return 1
  veth "$NS_PA" eth0 br0 pa || return 1
  veth "$NS_PB" eth0 br0 pb || return 1
  ip -n "$NS_PA" link set eth0 address "$MAC_A" || return 1
  ip -n "$NS_PB" link set eth0 address "$MAC_B" || return 1
  ip -n "$NS_CLI" addr add "$CLIENT_IP/24" dev eth0 || return 1
  ip -n "$NS_PA" addr add "$A_IP/24" dev eth0 || return 1
  ip -n "$NS_PB" addr add "$B_IP/24" dev eth0 || return 1
  # A second interface on A for the group test (the back side; veth: no dummy module here).
  ip -n "$NS_PA" link add back type veth peer name back-peer || return 1
  ip -n "$NS_PA" link set back up && ip -n "$NS_PA" link set back-peer up || return 1
  # The client keeps the kernel default explicitly, on `all` and on the interface (the kernel
  # uses the larger of the two).
  in_ns "$NS_CLI" sysctl -qw net.ipv4.conf.all.arp_accept=0 net.ipv4.conf.eth0.arp_accept=0
}

if ! topo; then
  fail "topology set up"
  finish
fi
log "kernel $(uname -r); namespaces $NS_CLI $NS_PA $NS_PB on $NS_SW; VIP $VIP"

# ---------------------------------------------------------------------------------------------
# Addresses: has / add / del, idempotent, cross-checked with ip addr.

expect_out "has: the VIP is not on A before it is added (exit 1)" 1 "no" \
  "$NS_PA" has eth0 "$VIP/32"
expect_out "add: the VIP is added on A" 0 "added $VIP/32" "$NS_PA" add eth0 "$VIP/32"
expect_out "add again: success, reported as already present" 0 "present $VIP/32" \
  "$NS_PA" add eth0 "$VIP/32"
check "ip addr shows the VIP exactly once on A" test "$(vip_count "$NS_PA")" -eq 1
expect_out "has: the VIP is on A" 0 "yes" "$NS_PA" has eth0 "$VIP/32"
expect_out "has: the prefix length is part of the address (/24 is not there)" 1 "no" \
  "$NS_PA" has eth0 "$VIP/24"
expect_out "has: the VIP is not on B" 1 "no" "$NS_PB" has eth0 "$VIP/32"
out=$(vipctl "$NS_PA" has nosuchif "$VIP/32" 2>&1)
rc=$?
if [ "$rc" -eq 2 ] && echo "$out" | grep -q "No such device"; then
  pass "has on a missing interface is an error (exit 2, ENODEV), not 'no'"
else
  fail "has on a missing interface is an error (exit 2, ENODEV), not 'no'" "exit $rc: $out"
fi

# ---------------------------------------------------------------------------------------------
# The client talks to the VIP on A: its neighbour entry holds A's MAC.

bg_start srv-a "$NS_PA" "$TCPCHECK" server --listen "$VIP:8080"
SRV_A_PID=$BG_PID
wait_listen "$NS_PA" "$VIP:8080" || fail "tcpcheck server on A listens on the VIP"
check "before takeover: a TCP connection to the VIP is served by A" \
  in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:8080" --bytes 4096 --timeout 5
check "the client's neighbour entry for the VIP holds A's MAC" wait_neigh_mac "$VIP" "$MAC_A" 5
sleep 0.5   # let the connection's last segments (FIN/ACK) go out before counting
TX_BEFORE=$(client_tx)
log "client neighbour entry: $(ip -n "$NS_CLI" neigh show "$VIP" dev eth0); tx_packets $TX_BEFORE"

# ---------------------------------------------------------------------------------------------
# Takeover: the VIP leaves A, comes up on B, B announces it.

expect_out "del: the VIP is removed from A" 0 "removed $VIP/32" "$NS_PA" del eth0 "$VIP/32"
expect_out "del again: success, reported as already absent" 0 "absent $VIP/32" \
  "$NS_PA" del eth0 "$VIP/32"
check "ip addr shows the VIP gone from A" test "$(vip_count "$NS_PA")" -eq 0
expect_out "has: the VIP is no longer on A" 1 "no" "$NS_PA" has eth0 "$VIP/32"
expect_out "add: the VIP is added on B" 0 "added $VIP/32" "$NS_PB" add eth0 "$VIP/32"
check "ip addr shows the VIP on B" test "$(vip_count "$NS_PB")" -eq 1

check "control: before any GARP the client's entry still holds A's MAC" \
  test "$(neigh_mac "$VIP")" = "$MAC_A"

# Capture on the client side of the bridge (the capture does not make the client transmit).
bg_start cap "$NS_SW" tcpdump -l -nn -e -i cli -c 3 arp
CAP_PID=$BG_PID
for _ in $(seq 1 50); do
  grep -q 'listening on' "$TDM_TMP/cap.log" 2>/dev/null && break
  sleep 0.1
done
expect_out "garp: B sends a burst of 3 gratuitous ARPs for the VIP from its MAC" 0 \
  "garp: iface=eth0 mac=$MAC_B vip=$VIP sent=3 errors=0" "$NS_PB" garp eth0 "$VIP" 3 20
for _ in $(seq 1 30); do
  kill -0 "$CAP_PID" 2>/dev/null || break
  sleep 0.1
done
stop_pid "$CAP_PID"
frames=$(grep -c "^[0-9:.]* $MAC_B > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), \
length 60: Request who-has $VIP tell $VIP, length 46$" "$TDM_TMP/cap.log")
check "on the wire: 3 broadcast ARP requests, 60 bytes, sender = target = VIP, from B's MAC" \
  test "$frames" -eq 3
check "after the GARP burst the client's entry for the VIP holds B's MAC (arp_accept=0)" \
  wait_neigh_mac "$VIP" "$MAC_B" 20
TX_AFTER=$(client_tx)
log "client neighbour entry: $(ip -n "$NS_CLI" neigh show "$VIP" dev eth0); tx_packets $TX_AFTER"
check "the client sent nothing for the update (eth0 tx_packets $TX_BEFORE -> $TX_AFTER)" \
  test "$TX_AFTER" -eq "$TX_BEFORE"
check "the client's arp_accept is 0 on all and eth0 (the update needed no arp_accept)" \
  test "$(in_ns "$NS_CLI" sysctl -n net.ipv4.conf.all.arp_accept)$(in_ns "$NS_CLI" \
    sysctl -n net.ipv4.conf.eth0.arp_accept)" = 00

bg_start srv-b "$NS_PB" "$TCPCHECK" server --listen "$VIP:8080"
SRV_B_PID=$BG_PID
wait_listen "$NS_PB" "$VIP:8080" || fail "tcpcheck server on B listens on the VIP"
check "after takeover: a TCP connection to the VIP succeeds" \
  in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:8080" --bytes 4096 --timeout 5
ok_b=$(server_ok "$SRV_B_PID" srv-b)
ok_a=$(server_ok "$SRV_A_PID" srv-a)
check "... and it was served by B (B ok=$ok_b, A ok=$ok_a: A's count unchanged at 1)" \
  test "${ok_b:-0}" -eq 1 -a "${ok_a:-0}" -eq 1

# ---------------------------------------------------------------------------------------------
# arp_accept governs creating entries, not updating them.

expect_out "add: a second address on B (the client has never used it)" 0 "added $VIP2/32" \
  "$NS_PB" add eth0 "$VIP2/32"
ip -n "$NS_CLI" neigh flush to "$VIP2" dev eth0 2>/dev/null
vipctl "$NS_PB" garp eth0 "$VIP2" 3 10 >/dev/null
sleep 0.3
check "arp_accept=0: a gratuitous ARP for an address not in the cache creates no entry" \
  test -z "$(ip -n "$NS_CLI" neigh show "$VIP2" dev eth0)"
in_ns "$NS_CLI" sysctl -qw net.ipv4.conf.all.arp_accept=1
vipctl "$NS_PB" garp eth0 "$VIP2" 3 10 >/dev/null
check "arp_accept=1: the same gratuitous ARP creates the entry, with B's MAC" \
  wait_neigh_mac "$VIP2" "$MAC_B" 10
in_ns "$NS_CLI" sysctl -qw net.ipv4.conf.all.arp_accept=0
log "client entry for $VIP2: $(ip -n "$NS_CLI" neigh show "$VIP2" dev eth0)"

# ---------------------------------------------------------------------------------------------
# Groups: members on two interfaces move together.

G1=10.$TDM_NET.1.102/32
G2=10.$TDM_NET.2.1/24
expect_out "group-add: front VIP and back-side address applied together" 0 \
  "group-add: changed=2 error=none" "$NS_PA" group-add "eth0=$G1" "back=$G2"
check "ip addr shows both group members on A" \
  eval "ip -n $NS_PA -o -4 addr show dev eth0 | grep -q ' $G1 ' &&
        ip -n $NS_PA -o -4 addr show dev back | grep -q ' $G2 '"
expect_out "group-add again: idempotent, nothing changed" 0 "group-add: changed=0 error=none" \
  "$NS_PA" group-add "eth0=$G1" "back=$G2"
expect_out "group-del: both members withdrawn" 0 "group-del: changed=2 error=none" \
  "$NS_PA" group-del "eth0=$G1" "back=$G2"
expect_out "group-del again: idempotent" 0 "group-del: changed=0 error=none" \
  "$NS_PA" group-del "eth0=$G1" "back=$G2"
out=$(vipctl "$NS_PA" group-add "eth0=$G1" "nosuchif=$G2" 2>&1)
rc=$?
if [ "$rc" -eq 2 ] && echo "$out" | grep -q "group-add: changed=0 error=No such device" &&
    ! ip -n "$NS_PA" -o -4 addr show dev eth0 | grep -q " $G1 "; then
  pass "group-add with a failing member fails and rolls the other member back"
else
  fail "group-add with a failing member fails and rolls the other member back" "exit $rc: $out" \
    "$(ip -n "$NS_PA" -o -4 addr show dev eth0)"
fi

# ---------------------------------------------------------------------------------------------
# UDP sync channel: A's channel to B's.

bg_start udp-b "$NS_PB" "$VIPCTL" udp-recv "$B_IP:7000" "$A_IP:7000" 2 5 --dev eth0
UDP_B_PID=$BG_PID
for _ in $(seq 1 50); do
  grep -q '^udp-recv: ready' "$TDM_TMP/udp-b.log" 2>/dev/null && break
  sleep 0.1
done
send1=$(vipctl "$NS_PA" udp-send "$A_IP:7000" "$B_IP:7000" --pattern 1400 --dev eth0 2>&1)
rc1=$?
send2=$(vipctl "$NS_PA" udp-send "$A_IP:7000" "$B_IP:7000" 00ff7e0a0d00 --dev eth0 2>&1)
rc2=$?
wait "$UDP_B_PID"
rc_b=$?
UDP_NAME="udp: datagrams of 1400 and 6 bytes from A's channel reach B's intact, from the peer"
hex1=$(echo "$send1" | sed -n 's/^udp-send: .* hex=//p')
hex2=$(echo "$send2" | sed -n 's/^udp-send: .* hex=//p')
got=$(grep '^udp-recv: from=' "$TDM_TMP/udp-b.log")
want="udp-recv: from=$A_IP:7000 peer=yes len=1400 hex=$hex1
udp-recv: from=$A_IP:7000 peer=yes len=6 hex=$hex2"
if [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && [ "$rc_b" -eq 0 ] && [ ${#hex1} -eq 2800 ] &&
    [ "$got" = "$want" ]; then
  pass "$UDP_NAME"
else
  fail "$UDP_NAME" \
    "send exits $rc1 $rc2, receiver exit $rc_b" "$send1" "$send2" "received: $got"
fi
check "udp: the receiver counted no errors, truncations or foreign senders" grep -q \
  'udp-recv: sent=0 received=2 foreign=0 truncated=0 would_block=0 send_errors=0 recv_errors=0' \
  "$TDM_TMP/udp-b.log"

finish
