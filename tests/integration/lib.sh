# shellcheck shell=bash
# Helpers for tandem's integration tests: real kernel TCP on both ends, in network namespaces that
# only the calling test owns. Source it, then `trap cleanup EXIT`.
#
# Topology (N = TDM_NET, unique per run; every namespace name carries TDM_ID):
#
#   client   10.N.1.2 --+                                                +-- be1 10.N.2.2
#                       +-- brf --- proxy (tandemd) --------- brb ------+
#   attacker 10.N.1.3 --+     front 10.N.1.1        back 10.N.2.1        +-- be2 10.N.2.3
#                             VIP   10.N.1.100/32   snat 10.N.2.10/32 (snat addressing only)
#
# Both bridges live in their own "switch" namespace (bridge-nf-call-iptables=0 there, so the
# bridged frames never meet netfilter). Addressing transparent: the backends' default route is
# the proxy (10.N.2.1). Addressing snat: the backends have no route to 10.N.1.0/24 at all.
#
# Environment: TANDEMD, TANDEMCTL, TCPCHECK, TCPINJECT (set by ctest); TDM_PREFIX (name prefix);
# TANDEM_FASTPATH=on: every configuration write_config writes runs with daemon.fastpath = on (the
# kernel fast path, docs/fastpath.md), to run any test with it; TANDEM_FASTPATH_CLOSE=on|off sets
# daemon.fastpath_close too, TANDEM_FASTPATH_SYN=on|off daemon.fastpath_syn,
# TANDEM_FASTPATH_SPLICE=on|off daemon.fastpath_splice, TANDEM_FASTPATH_BIND=on|off
# daemon.fastpath_bind, TANDEM_FASTPATH_REDIRECT=on|off daemon.fastpath_redirect.

set -u

TDM_ID=${TDM_PREFIX:-tdm}$$
TDM_NET=${TDM_NET:-$(( $$ % 200 + 20 ))}
TDM_TMP=$(mktemp -d "/tmp/${TDM_ID}.XXXXXX")
TDM_PASSED=0
TDM_FAILED=0
TDM_PIDS=()
TDM_NSES=()
TDM_TANDEMD_PID=
TDM_TANDEMD_LOG=
TDM_ADDRESSING=transparent

NS_CLI=${TDM_ID}-cli
NS_ATK=${TDM_ID}-atk
NS_PRX=${TDM_ID}-prx
NS_BE1=${TDM_ID}-be1
NS_BE2=${TDM_ID}-be2
NS_SW=${TDM_ID}-sw

CLIENT_IP=10.$TDM_NET.1.2
ATTACKER_IP=10.$TDM_NET.1.3
FRONT_IP=10.$TDM_NET.1.1
VIP=10.$TDM_NET.1.100
BACK_IP=10.$TDM_NET.2.1
BE1_IP=10.$TDM_NET.2.2
BE2_IP=10.$TDM_NET.2.3
SNAT_IP=10.$TDM_NET.2.10
METRICS_ADDR=127.0.0.1:9100

log() { echo "# $*"; }

# ---------------------------------------------------------------------------------------------
# Results

pass() {
  TDM_PASSED=$((TDM_PASSED + 1))
  echo "PASS $*"
}

# fail NAME [DETAIL...]: prints FAIL and dumps the state that explains it.
fail() {
  TDM_FAILED=$((TDM_FAILED + 1))
  echo "FAIL $1"
  shift
  [ $# -gt 0 ] && printf '%s\n' "$@" | sed 's/^/  /'
  dump_state
}

# check NAME CMD...: PASS if CMD succeeds, else FAIL with its output. CMD runs in this shell
# (not in a $(...) subshell), so it can wait for this shell's children and set its variables.
check() {
  local name=$1
  shift
  if "$@" >"$TDM_TMP/check.out" 2>&1; then
    pass "$name"
  else
    fail "$name" "command: $*" "$(cat "$TDM_TMP/check.out")"
  fi
}

skip_all() {
  echo "SKIP $*"
  echo "0 passed, 0 failed, 1 skipped"
  exit 0
}

# Prints the summary line and exits non-zero if anything failed (also when nothing ran).
finish() {
  echo "$TDM_PASSED passed, $TDM_FAILED failed"
  [ "$TDM_FAILED" -eq 0 ] && [ "$TDM_PASSED" -gt 0 ] && exit 0
  exit 1
}

in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

dump_state() {
  echo "  ---- state dump ($TDM_ID, addressing $TDM_ADDRESSING) ----"
  if [ -n "$TDM_TANDEMD_LOG" ] && [ -f "$TDM_TANDEMD_LOG" ]; then
    echo "  -- tandemd log (last 40 lines):"
    tail -n 40 "$TDM_TANDEMD_LOG" | sed 's/^/  | /'
  fi
  if ns_exists "$NS_PRX"; then
    echo "  -- /metrics (non-zero samples):"
    http_get /metrics | grep -v '^#' | awk '$NF != 0' | head -n 60 | sed 's/^/  | /'
    echo "  -- /flows (first 30 lines):"
    http_get /flows | head -n 30 | sed 's/^/  | /'
    echo "  -- proxy: iptables -t raw -S:"
    in_ns "$NS_PRX" iptables -t raw -S 2>&1 | sed 's/^/  | /'
  fi
  local ns
  for ns in "$NS_CLI" "$NS_BE1" "$NS_BE2"; do
    ns_exists "$ns" || continue
    echo "  -- $ns: ss -tni (first 20 lines):"
    in_ns "$ns" ss -tni 2>&1 | head -n 20 | sed 's/^/  | /'
  done
  echo "  ---- end of state dump ----"
}

# ---------------------------------------------------------------------------------------------
# Processes and cleanup

# bg_start NAME NS CMD...: runs CMD in NS in the background, output to $TDM_TMP/NAME.log; records
# the PID for cleanup and stores it in BG_PID (`ip netns exec` execs CMD: the PID is CMD's).
bg_start() {
  local name=$1 ns=$2
  shift 2
  # Not through in_ns: a backgrounded function is a subshell, and $! would be its PID.
  ip netns exec "$ns" "$@" >"$TDM_TMP/$name.log" 2>&1 &
  BG_PID=$!
  TDM_PIDS+=("$BG_PID")
}

# stop_pid PID [SIGNAL]: signals a PID this test started and reaps it; sets STOP_RC.
stop_pid() {
  local pid=$1 sig=${2:-TERM}
  STOP_RC=
  kill -0 "$pid" 2>/dev/null && kill -"$sig" "$pid" 2>/dev/null
  local _
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  STOP_RC=$?
}

cleanup() {
  local pid ns
  for pid in "${TDM_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
    fi
  done
  for pid in "${TDM_PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "${TDM_NSES[@]}"; do
    kill_ns_pids "$ns"
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$TDM_TMP"
}

# kill_ns_pids NS: a safety net for children of the test's own processes still running in one of
# its namespaces (deleting a namespace does not end the processes inside it). Only namespaces
# this test created are ever passed here.
kill_ns_pids() {
  local pid
  for pid in $(ip netns pids "$1" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null
  done
}

# ---------------------------------------------------------------------------------------------
# Topology

ns_exists() { [ -e "/run/netns/$1" ]; }

ns_add() {
  ip netns add "$1" || return 1
  TDM_NSES+=("$1")
  # No IPv6 at all: no router solicitations, MLD or DAD traffic in the flows and captures.
  in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  in_ns "$1" ip link set lo up
}

# veth NS IFNAME BRIDGE PORTNAME: a veth from NS (named IFNAME) to a port of BRIDGE in the switch.
veth() {
  local ns=$1 ifname=$2 bridge=$3 port=$4
  ip -n "$NS_SW" link add "$port" type veth peer name "$ifname" netns "$ns" || return 1
  ip -n "$NS_SW" link set "$port" master "$bridge" up
  ip -n "$ns" link set "$ifname" up
}

# require_env: the binaries the tests drive must exist (set by ctest).
require_env() {
  local v
  for v in "$@"; do
    if [ -z "${!v:-}" ] || [ ! -x "${!v}" ]; then
      echo "FAIL environment: \$$v is not set to an executable (run through ctest)"
      echo "0 passed, 1 failed"
      exit 1
    fi
  done
}

# require_kernel: skip (loudly) only if a kernel feature the tests need is truly absent.
require_kernel() {
  [ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces, iptables, raw sockets)"
  local probe=${TDM_ID}-probe
  ip netns add "$probe" 2>/dev/null || skip_all "cannot create network namespaces"
  TDM_NSES+=("$probe")
  if ! ip -n "$probe" link add p0 type veth peer name p1 2>/dev/null; then
    skip_all "no veth support in this kernel"
  fi
  if ! ip -n "$probe" link add b0 type bridge 2>/dev/null; then
    skip_all "no bridge support in this kernel"
  fi
  if ! in_ns "$probe" iptables -t raw -A PREROUTING -p tcp --dport 9 -j NFQUEUE --queue-num 0 \
      --queue-bypass 2>/dev/null; then
    skip_all "iptables raw table with NFQUEUE target unavailable"
  fi
  ip netns del "$probe"
}

# switch_up: the switch namespace's bridges brf (front) and brb (back). Bridged frames must not
# pass through that namespace's iptables (where br_netfilter is loaded or built in).
switch_up() {
  if in_ns "$NS_SW" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    in_ns "$NS_SW" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
      net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0 || return 1
  fi
  ip -n "$NS_SW" link add brf type bridge || return 1
  ip -n "$NS_SW" link add brb type bridge || return 1
  ip -n "$NS_SW" link set brf up && ip -n "$NS_SW" link set brb up
}

# topo_up transparent|snat
topo_up() {
  TDM_ADDRESSING=$1
  local ns
  for ns in "$NS_SW" "$NS_CLI" "$NS_ATK" "$NS_PRX" "$NS_BE1" "$NS_BE2"; do
    ns_add "$ns" || return 1
  done
  switch_up || return 1

  veth "$NS_CLI" eth0 brf cli || return 1
  veth "$NS_ATK" eth0 brf atk || return 1
  veth "$NS_PRX" front brf prxf || return 1
  veth "$NS_PRX" back brb prxb || return 1
  veth "$NS_BE1" eth0 brb be1 || return 1
  veth "$NS_BE2" eth0 brb be2 || return 1

  ip -n "$NS_CLI" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$NS_CLI" route add default via "$FRONT_IP"
  ip -n "$NS_ATK" addr add "$ATTACKER_IP/24" dev eth0

  ip -n "$NS_PRX" addr add "$FRONT_IP/24" dev front
  ip -n "$NS_PRX" addr add "$VIP/32" dev front
  ip -n "$NS_PRX" addr add "$BACK_IP/24" dev back
  # The daemon rewrites a received packet's source to a local address (the VIP or the SNAT
  # address) before it is forwarded: accept_local, and no reverse-path filter.
  in_ns "$NS_PRX" sysctl -qw net.ipv4.ip_forward=1 \
    net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1 \
    net.ipv4.conf.front.accept_local=1 net.ipv4.conf.back.accept_local=1 \
    net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.front.rp_filter=0 net.ipv4.conf.back.rp_filter=0 \
    net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 || return 1

  ip -n "$NS_BE1" addr add "$BE1_IP/24" dev eth0
  ip -n "$NS_BE2" addr add "$BE2_IP/24" dev eth0
  case "$TDM_ADDRESSING" in
    transparent)
      ip -n "$NS_BE1" route add default via "$BACK_IP"
      ip -n "$NS_BE2" route add default via "$BACK_IP"
      ;;
    snat)
      # The backends keep only their connected route: a reply to a client address would have
      # nowhere to go, so a passing test proves the source really was the SNAT address.
      ip -n "$NS_PRX" addr add "$SNAT_IP/32" dev back
      ;;
    *)
      echo "topo_up: unknown addressing '$TDM_ADDRESSING'" >&2
      return 1
      ;;
  esac
}

# topo_down: stops what this test started and removes its namespaces (ready for the next topo_up).
topo_down() {
  [ -n "$TDM_TANDEMD_PID" ] && stop_pid "$TDM_TANDEMD_PID" && TDM_TANDEMD_PID=
  local pid ns
  for pid in "${TDM_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && stop_pid "$pid"
  done
  TDM_PIDS=()
  for ns in "${TDM_NSES[@]}"; do
    kill_ns_pids "$ns"
    ip netns del "$ns" 2>/dev/null
  done
  TDM_NSES=()
}

# wait_listen NS ADDR:PORT [SECONDS]: until a TCP socket listens on ADDR:PORT in NS.
wait_listen() {
  local ns=$1 ep=$2 tries=$(( ${3:-10} * 10 ))
  while [ "$tries" -gt 0 ]; do
    in_ns "$ns" ss -Htln "src $ep" 2>/dev/null | grep -q . && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  echo "nothing listens on $ep in $ns" >&2
  return 1
}

# ---------------------------------------------------------------------------------------------
# tandemd

# write_config FILE [--addressing A] [--established S] [--scheduler S] [--vip A:P]
#              [--backends "A:P ..."] [--timeouts "key = value;..."] [--extra TEXT]
# Writes a tandemd INI with one passthrough service "web" (VIP:80 -> both backends :8080);
# --extra appends raw text (e.g. another [service.X] section).
write_config() {
  local file=$1
  shift
  local addressing=$TDM_ADDRESSING established=7200 scheduler=roundrobin vip="$VIP:80"
  local backends="$BE1_IP:8080 $BE2_IP:8080" timeouts="" extra=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --addressing) addressing=$2 ;;
      --established) established=$2 ;;
      --scheduler) scheduler=$2 ;;
      --vip) vip=$2 ;;
      --backends) backends=$2 ;;
      --timeouts) timeouts=$2 ;;
      --extra) extra=$2 ;;
      *) echo "write_config: unknown option $1" >&2; return 1 ;;
    esac
    shift 2
  done
  {
    echo "[daemon]"
    echo "queue = 0"
    echo "rules = iptables"
    echo "metrics = $METRICS_ADDR"
    echo "max_flows = 100000"
    [ "${TANDEM_FASTPATH:-off}" = on ] && echo "fastpath = on"
    [ -n "${TANDEM_FASTPATH_CLOSE:-}" ] && echo "fastpath_close = $TANDEM_FASTPATH_CLOSE"
    [ -n "${TANDEM_FASTPATH_SYN:-}" ] && echo "fastpath_syn = $TANDEM_FASTPATH_SYN"
    [ -n "${TANDEM_FASTPATH_SPLICE:-}" ] && echo "fastpath_splice = $TANDEM_FASTPATH_SPLICE"
    [ "${TANDEM_FASTPATH:-off}" = on ] && [ -n "${TANDEM_FASTPATH_BIND:-}" ] &&
      echo "fastpath_bind = $TANDEM_FASTPATH_BIND"
    [ "${TANDEM_FASTPATH:-off}" = on ] && [ -n "${TANDEM_FASTPATH_REDIRECT:-}" ] &&
      echo "fastpath_redirect = $TANDEM_FASTPATH_REDIRECT"
    echo
    echo "[timeouts]"
    echo "established = $established"
    [ -n "$timeouts" ] && echo "$timeouts" | tr ';' '\n' | sed 's/^ *//'
    echo
    echo "[service.web]"
    echo "vip = $vip"
    echo "backends = $backends"
    echo "mode = passthrough"
    echo "addressing = $addressing"
    echo "scheduler = $scheduler"
    if [ "$addressing" = snat ]; then
      echo "snat_address = $SNAT_IP"
      echo "snat_ports = 20000-59999"
    fi
    [ -n "$extra" ] && printf '\n%s\n' "$extra"
  } >"$file"
}

# service_section NAME VIP:PORT "BACKENDS": a [service.NAME] section for write_config --extra.
service_section() {
  echo "[service.$1]"
  echo "vip = $2"
  echo "backends = $3"
  echo "mode = passthrough"
  echo "addressing = $TDM_ADDRESSING"
  echo "scheduler = roundrobin"
  if [ "$TDM_ADDRESSING" = snat ]; then
    echo "snat_address = $SNAT_IP"
    echo "snat_ports = 20000-59999"
  fi
}

http_get() {
  in_ns "$NS_PRX" curl -s --noproxy '*' --max-time 5 "http://$METRICS_ADDR$1" 2>/dev/null
}

# start_tandemd CONFIG: starts the daemon in the proxy namespace, waits until /status answers.
start_tandemd() {
  local config=$1
  TDM_TANDEMD_LOG=$TDM_TMP/tandemd.$(date +%s%N).log
  ip netns exec "$NS_PRX" "$TANDEMD" --config "$config" >"$TDM_TANDEMD_LOG" 2>&1 &
  TDM_TANDEMD_PID=$!
  TDM_PIDS+=("$TDM_TANDEMD_PID")
  local _
  for _ in $(seq 1 100); do
    if ! kill -0 "$TDM_TANDEMD_PID" 2>/dev/null; then
      wait "$TDM_TANDEMD_PID"
      echo "tandemd exited during start-up with status $?" >&2
      TDM_TANDEMD_PID=
      return 1
    fi
    if http_get /status | grep -q .; then
      return 0
    fi
    sleep 0.1
  done
  echo "tandemd: /status did not answer within 10 s" >&2
  return 1
}

# tandem_rule_count: lines of the proxy's raw table that mention TANDEM.
tandem_rule_count() {
  in_ns "$NS_PRX" iptables -t raw -S 2>/dev/null | grep -c TANDEM
}

# stop_tandemd: SIGTERM; succeeds only if tandemd exited 0 and removed all its raw-table rules.
stop_tandemd() {
  [ -n "$TDM_TANDEMD_PID" ] || { echo "tandemd is not running" >&2; return 1; }
  stop_pid "$TDM_TANDEMD_PID" TERM
  TDM_TANDEMD_PID=
  local rules
  rules=$(tandem_rule_count)
  if [ "$STOP_RC" -ne 0 ] || [ "$rules" -ne 0 ]; then
    echo "tandemd exit status $STOP_RC (want 0); $rules TANDEM rules left in the raw table" >&2
    return 1
  fi
}

# metric NAME [LABEL=\"VALUE\"...]: sum of the samples of NAME whose labels contain all the given
# label pairs (0 if none). Example: metric tandem_drops_total 'reason="rst_out_of_window"'.
metric() {
  local name=$1
  shift
  http_get /metrics | awk -v name="$name" -v want="$*" '
    /^#/ { next }
    {
      series = $1
      base = series
      sub(/\{.*/, "", base)
      if (base != name) next
      n = split(want, pairs, " ")
      for (i = 1; i <= n; i++) if (index(series, pairs[i]) == 0) next
      sum += $2
    }
    END { printf "%.0f\n", sum + 0 }'
}

# flows_matching TEXT: the /flows lines that contain TEXT. A line is
#   service client vip backend source state idle_seconds       (proxy/tandemd/http_status.cc)
flows_matching() {
  http_get '/flows?limit=1000000' | grep -v '^#' | grep -F -- "$1"
}

# ---------------------------------------------------------------------------------------------
# tcpcheck helpers

# tcpcheck_servers: a tcpcheck server on port 8080 of each backend.
tcpcheck_servers() {
  bg_start srv-be1 "$NS_BE1" "$TCPCHECK" server --listen "$BE1_IP:8080"
  SRV_BE1_PID=$BG_PID
  bg_start srv-be2 "$NS_BE2" "$TCPCHECK" server --listen "$BE2_IP:8080"
  SRV_BE2_PID=$BG_PID
  wait_listen "$NS_BE1" "$BE1_IP:8080" && wait_listen "$NS_BE2" "$BE2_IP:8080"
}

# server_stat NAME KEY: a field of the latest counters line of tcpcheck server NAME (srv-be1...).
server_stat() {
  local name=$1 key=$2 pid
  case "$name" in
    srv-be1) pid=$SRV_BE1_PID ;;
    srv-be2) pid=$SRV_BE2_PID ;;
  esac
  kill -USR1 "$pid" 2>/dev/null
  sleep 0.2
  grep '^tcpcheck-server: listen=' "$TDM_TMP/$name.log" | tail -n 1 | tr ' ' '\n' |
    sed -n "s/^$key=//p"
}

# summary_field LINE KEY: value of KEY=... in a key=value summary line.
summary_field() {
  echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
