#!/usr/bin/env bash
# tandemd's life cycle in the proxy namespace:
#   - it installs its raw-table rules at start, forwards, and on SIGTERM (also in the middle of a
#     running stream) and on SIGINT exits 0 leaving no TANDEM rule behind;
#   - after a SIGKILL (rules left behind) a new tandemd starts, works, and cleans up;
#   - it refuses to start with a strict rp_filter, naming the setting, and leaves no rule;
#   - tandemctl reads the running daemon's status and counters;
#   - `tandemd --check` accepts a good configuration and rejects bad ones with exit != 0 and a
#     message naming the offending key, without touching the rules.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL TCPCHECK
require_kernel

# quick_traffic NAME: 10 verified connections through the VIP.
quick_traffic() {
  local out
  if out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 10 --bytes 20000 \
      --timeout 10 2>&1); then
    pass "$1"
  else
    fail "$1" "$out"
  fi
}

# start_checked NAME CONFIG: start_tandemd, then its rules must be in place.
start_checked() {
  local rules
  if ! start_tandemd "$2"; then
    fail "$1" "tandemd did not start"
    return 1
  fi
  rules=$(tandem_rule_count)
  if [ "$rules" -gt 0 ]; then
    pass "$1 ($rules TANDEM lines in the raw table)"
  else
    fail "$1" "no TANDEM rule in the raw table"
    return 1
  fi
}

# check_rejected NAME KEY CONFIG_TEXT: --check must exit non-zero and mention KEY.
check_rejected() {
  local name=$1 key=$2 file=$TDM_TMP/bad.conf out rc
  printf '%s\n' "$3" >"$file"
  out=$(in_ns "$NS_PRX" "$TANDEMD" --check --config "$file" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ] && echo "$out" | grep -qF -- "$key"; then
    pass "--check rejects $name, naming $key (exit $rc: $(echo "$out" | head -n 1))"
  else
    fail "--check rejects $name, naming $key" "exit $rc" "$out" "config:" "$(cat "$file")"
  fi
}

if ! topo_up transparent; then
  fail "topology" "topo_up failed"
  finish
fi
tcpcheck_servers || fail "tcpcheck servers listen"
write_config "$TDM_TMP/good.conf"
good=$(cat "$TDM_TMP/good.conf")

# --- start, forward, SIGTERM while idle
if start_checked "tandemd starts and installs its rules" "$TDM_TMP/good.conf"; then
  quick_traffic "traffic flows through the VIP"
  out=$(in_ns "$NS_PRX" "$TANDEMCTL" --metrics "$METRICS_ADDR" status 2>&1)
  if echo "$out" | grep -qF "\"$VIP:80\""; then
    pass "tandemctl status names the service's VIP"
  else
    fail "tandemctl status names the service's VIP" "$out"
  fi
  want=$(metric tandem_flows_created_total)
  out=$(in_ns "$NS_PRX" "$TANDEMCTL" --metrics "$METRICS_ADDR" counters 2>&1)
  got=$(echo "$out" | awk '$1 == "flows_created_total" {print $2}')
  if [ "$got" = "$want" ] && [ "$want" -ge 10 ]; then
    pass "tandemctl counters: flows_created_total $got, as /metrics says"
  else
    fail "tandemctl counters: flows_created_total as /metrics says" "want $want, got '$got'" "$out"
  fi
  check "SIGTERM: tandemd exits 0 and removes its rules" stop_tandemd
fi

# --- SIGTERM in the middle of a stream
if start_checked "tandemd restarts" "$TDM_TMP/good.conf"; then
  bg_start stream "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 4 \
    --rate 1000000 --timeout 2
  stream_pid=$BG_PID
  sleep 1
  flows=$(flows_matching "$CLIENT_IP:" | grep -cw ESTABLISHED)
  check "SIGTERM under load: tandemd exits 0 and removes its rules ($flows live flow)" \
    stop_tandemd
  stop_pid "$stream_pid"  # the stream has lost its proxy; its outcome is not the point here
fi

# --- SIGINT
if start_checked "tandemd restarts again" "$TDM_TMP/good.conf"; then
  stop_pid "$TDM_TANDEMD_PID" INT
  TDM_TANDEMD_PID=
  rules=$(tandem_rule_count)
  if [ "$STOP_RC" -eq 0 ] && [ "$rules" -eq 0 ]; then
    pass "SIGINT: tandemd exits 0 and removes its rules"
  else
    fail "SIGINT: tandemd exits 0 and removes its rules" "exit $STOP_RC, $rules rules left"
  fi
fi

# --- SIGKILL leaves the rules; the next tandemd takes them over and cleans up
if start_checked "tandemd starts before a SIGKILL" "$TDM_TMP/good.conf"; then
  stop_pid "$TDM_TANDEMD_PID" KILL
  TDM_TANDEMD_PID=
  log "after SIGKILL: $(tandem_rule_count) TANDEM lines left in the raw table"
  if start_checked "a new tandemd starts over the rules a SIGKILLed one left" \
      "$TDM_TMP/good.conf"; then
    quick_traffic "traffic flows through the new tandemd"
    check "the new tandemd exits 0 on SIGTERM and leaves no rule" stop_tandemd
  fi
fi

# --- refuses a strict reverse-path filter
in_ns "$NS_PRX" sysctl -qw net.ipv4.conf.all.rp_filter=1
out=$(in_ns "$NS_PRX" timeout 10 "$TANDEMD" --config "$TDM_TMP/good.conf" 2>&1)
rc=$?
rules=$(tandem_rule_count)
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo "$out" | grep -q rp_filter &&
    [ "$rules" -eq 0 ]; then
  pass "strict rp_filter: tandemd refuses to start (exit $rc), names rp_filter, leaves no rule"
else
  fail "strict rp_filter: tandemd refuses to start, names rp_filter, leaves no rule" \
    "exit $rc, $rules rules" "$out"
fi
in_ns "$NS_PRX" sysctl -qw net.ipv4.conf.all.rp_filter=0

# --- --check
out=$(in_ns "$NS_PRX" "$TANDEMD" --check --config "$TDM_TMP/good.conf" 2>&1)
rc=$?
if [ "$rc" -eq 0 ]; then
  pass "--check accepts the good configuration"
else
  fail "--check accepts the good configuration" "exit $rc" "$out"
fi
check_rejected "an unknown addressing" addressing \
  "${good/addressing = transparent/addressing = sideways}"
check_rejected "a VIP without a port" vip "${good/vip = $VIP:80/vip = $VIP}"
check_rejected "an empty backend list" backends \
  "${good/backends = $BE1_IP:8080 $BE2_IP:8080/backends = }"
check_rejected "a bad backend address" backends \
  "${good/$BE2_IP:8080/10.$TDM_NET.2.300:8080}"
check_rejected "snat without snat_address" snat_address \
  "${good/addressing = transparent/addressing = snat}"
check_rejected "a reversed snat_ports range" snat_ports \
  "${good/addressing = transparent/addressing = snat
snat_address = $SNAT_IP
snat_ports = 60000-20000}"
check_rejected "a negative timeout" established "${good/established = 7200/established = -3}"
check_rejected "an unknown mode" mode "${good/mode = passthrough/mode = bridged}"
check_rejected "an out-of-range queue" queue "${good/queue = 0/queue = 70000}"
check_rejected "an unknown key" colour "${good/max_flows = 100000/max_flows = 100000
colour = blue}"
out=$(in_ns "$NS_PRX" "$TANDEMD" --check --config "$TDM_TMP/missing.conf" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && echo "$out" | grep -qF missing.conf; then
  pass "--check rejects a missing file, naming it (exit $rc)"
else
  fail "--check rejects a missing file, naming it" "exit $rc" "$out"
fi
rules=$(tandem_rule_count)
if [ "$rules" -eq 0 ]; then
  pass "--check touched no rule"
else
  fail "--check touched no rule" "$rules TANDEM lines in the raw table"
fi

topo_down
finish
