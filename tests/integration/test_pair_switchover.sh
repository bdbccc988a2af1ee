#!/usr/bin/env bash
# The proxy pair's planned switchover, restart and return scenarios, end to end (topology and
# node helpers in pair_lib.sh): A (node 1, priority 200) and B (node 2, priority 100), preempt
# off, passthrough with two backends chosen round robin per flow.
#
# For each addressing (snat, then transparent):
#   a. Planned switchover under load: 60 idle connections (64 KiB each way, then held open), 30
#      interactive request/response connections (200 round trips/s each), 10 bulk streams, one
#      verified stream probe and short connections opened back to back (handshakes straddling
#      the switchovers), all through the VIP. `tandemctl switchover` is refused on the
#      standby; then SWITCHOVERS (default 4, even) times back and forth, each on the current
#      active once its peer is ready: every one completes, the group moves, and at the end every
#      connection verified every byte with zero resets. The data-path hold each switchover
#      reports and the gaps the clients saw are printed (never asserted: timing is for bench/).
#   b. B restarted (SIGTERM, started again) under 100 held connections and a stream: A warns
#      that its standby is not ready, B bulk-resyncs and reports ready with every flow; then A is
#      crashed (SIGKILL, links down): B takes over and every connection survives.
#   c. A comes back (preempt off, higher priority): it stays standby, bulk-resyncs to ready, B
#      keeps the group and its epoch, and the connections running meanwhile are unaffected.
#
# SWITCHOVERS=20 makes (a) the 20-trial run of the issue's target (bench, not CI); CHURN_CONNS=N
# opens the short connections N at a time (default 1).
# PAIR_MODE=splice runs the same scenarios with the service in splice mode (both nodes share the
# SYN-cookie secret); it needs splice flows on the sync wire.
TDM_PREFIX=${TDM_PREFIX:-tswo}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pair_lib.sh"
trap cleanup EXIT
require_env TANDEMD TANDEMCTL TCPCHECK
require_kernel
# 20 ms heartbeats, dead after 15 misses (300 ms): on a loaded CI machine a 100 ms dead interval
# can fire spuriously, and nothing here depends on detecting a crash fast.
HB_MISS=${HB_MISS:-15}
# Both nodes under SCHED_FIFO where the machine allows it (pair_lib.sh): 20 ms heartbeats on
# a loaded machine, as docs/pair_sync.md advises.
PAIR_REALTIME=${PAIR_REALTIME:-10}
pair_init
SWITCHOVERS=${SWITCHOVERS:-4}
PAIR_MODE=${PAIR_MODE:-passthrough}
COOKIE_SECRET=0123456789abcdef0123456789abcdef
if [ $((SWITCHOVERS % 2)) -ne 0 ] || [ "$SWITCHOVERS" -lt 2 ]; then
  echo "SWITCHOVERS must be even and at least 2 (A ends active)" >&2
  exit 2
fi

ctl() {  # ctl NS ARGS...: tandemctl against the tandemd of NS
  local ns=$1
  shift
  in_ns "$ns" "$TANDEMCTL" --metrics "$METRICS_ADDR" "$@"
}

# peer_ready_in NS: NS's tandemd has heard its peer say it is ready.
peer_ready_in() { ctl "$1" peer 2>/dev/null | grep -qE '^ready +yes$'; }

client_flows() {  # client_flows NS: flows of the client in NS's table
  http_in "$1" '/flows?limit=100000' | grep -c "^web $CLIENT_IP:"
}

# check_clients NAME LOG...: each tcpcheck client (already reaped, status in RC_<log>) verified
# every connection, with no reset and no timeout. Prints a gap summary.
check_clients() {
  local name=$1 log line bad="" gaps=""
  shift
  for log in "$@"; do
    line=$(grep '^tcpcheck: conns=' "$TDM_TMP/$log.log")
    local rc_var="RC_${log//-/_}"
    if [ "${!rc_var}" != 0 ] || ! echo "$line" | grep -q ' failed=0 ' ||
        [ "$(summary_field "$line" reset)" != 0 ] || [ "$(summary_field "$line" timeout)" != 0 ] ||
        [ "$(summary_field "$line" ok)" != "$(summary_field "$line" conns)" ]; then
      bad="$bad $log(exit ${!rc_var}: ${line:-no summary})"
    fi
    case "$line" in
      *max_gap_ms=*) gaps="$gaps $log max_gap_ms=$(summary_field "$line" max_gap_ms)" ;;
      *max_us=*) gaps="$gaps $log p99_us=$(summary_field "$line" p99_us) max_us=$(summary_field "$line" max_us)" ;;
    esac
  done
  if [ -z "$bad" ]; then
    pass "$name (${gaps# })"
  else
    local tails="" l ep flows=""
    for l in "$@"; do tails="$tails$(tail -n 5 "$TDM_TMP/$l.log")"$'\n'; done
    # Where each failed connection stands on both nodes (state, idle seconds), while they run.
    for ep in $(for l in "$@"; do
                  sed -n 's/.* (\([0-9.]*:[0-9]*\) -> .*FAILED.*/\1/p' "$TDM_TMP/$l.log"
                done | head -n 5); do
      flows="$flows$ep on A: $(http_in "$NS_PA" '/flows?limit=100000' | grep " $ep " |
        cut -d' ' -f4-), on B: $(http_in "$NS_PB" '/flows?limit=100000' | grep " $ep " |
        cut -d' ' -f4-)"$'\n'
    done
    fail "$name" "unexpected:$bad" "$tails" "${flows:-(no failed connection named)}"
  fi
}

# gap_report WINDOWS LOG...: the longest receive gap or round trip (tcpcheck --log-gaps-ms) that
# overlaps each switchover (from the command's start to 100 ms after it returned), and the
# longest one elsewhere: the background noise of a shared machine. Reported, never asserted.
gap_report() {
  local windows=$1 l
  shift
  for l in "$@"; do grep -h '^tcpcheck-gap:' "$TDM_TMP/$l.log"; done | awk -v wf="$windows" '
    BEGIN { while ((getline line < wf) > 0) { split(line, f, " "); n++; t0[n] = f[2]; t1[n] = f[3] + 0.1; worst[n] = 0 } }
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      end = v["end"] + 0; start = end - v["ms"] / 1000; hit = 0
      for (k = 1; k <= n; k++) if (start < t1[k] && end > t0[k]) { hit = 1; if (v["ms"] + 0 > worst[k]) worst[k] = v["ms"] + 0 }
      if (!hit && v["ms"] + 0 > other) other = v["ms"] + 0 }
    END { s = "around each switchover (ms, >= 2 ms only):"
          for (k = 1; k <= n; k++) s = s sprintf(" %.1f", worst[k])
          printf "%s; elsewhere up to %.1f ms\n", s, other }'
}

# reap NAME PID: waits for a client and records its exit status in RC_<NAME>.
reap() {
  wait "$2"
  printf -v "RC_${1//-/_}" '%s' "$?"
}

run_case() {
  local a=$1 name back a_pid b_pid
  TDM_ADDRESSING=$a
  log "==== addressing $a, mode $PAIR_MODE ===="
  pair_servers_up "$a" || return
  pair_config "$TDM_TMP/a.conf" 1 200 "$A_BACK" "$B_BACK"
  pair_config "$TDM_TMP/b.conf" 2 100 "$B_BACK" "$A_BACK"
  if [ "$PAIR_MODE" = splice ]; then
    sed -i -e 's/^mode = passthrough/mode = splice/' \
      -e "/^\[daemon\]/a cookie_secret = $COOKIE_SECRET" "$TDM_TMP/a.conf" "$TDM_TMP/b.conf"
  fi
  back=$(pair_group_back)

  start_node tandemd-a "$NS_PA" "$TDM_TMP/a.conf"
  a_pid=$NODE_PID
  wait_for 5 is_role "$NS_PA" active
  start_node tandemd-b "$NS_PB" "$TDM_TMP/b.conf"
  b_pid=$NODE_PID
  name="$a: A active, B standby and ready (tandemctl role and peer agree)"
  if wait_for 5 is_ready "$NS_PB" && wait_for 2 peer_ready_in "$NS_PA" &&
      [ "$(ctl "$NS_PA" role)" = active ] && [ "$(ctl "$NS_PB" role)" = standby ]; then
    pass "$name"
  else
    fail "$name" "A: $(ctl "$NS_PA" role 2>&1), B: $(ctl "$NS_PB" role 2>&1)" \
      "$(ctl "$NS_PA" peer 2>&1)"
    topo_down
    return
  fi

  name="$a: tandemctl says clearly when no tandemd answers (exit 1)"
  local out rc
  out=$(in_ns "$NS_PA" "$TANDEMCTL" --metrics 127.0.0.1:1 role 2>&1)
  rc=$?
  if [ "$rc" -eq 1 ] && echo "$out" | grep -q 'cannot reach tandemd at 127.0.0.1:1' &&
      echo "$out" | grep -q 'Is tandemd running'; then
    pass "$name"
  else
    fail "$name" "exit $rc: $out"
  fi

  # ---- a. planned switchovers under load ----
  # Long enough for the switchover loop on a loaded machine (each step polls over HTTP).
  local dur=$((4 + SWITCHOVERS * 3)) pids=()
  bg_start idle-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 60 --bytes 65536 \
    --hold-ms $((dur * 1000)) --timeout 20
  pids+=("$BG_PID")
  bg_start rr-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --conns 30 --rate 200 \
    --count $((dur * 200)) --timeout 20 --log-gaps-ms 2
  pids+=("$BG_PID")
  bg_start bulk-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --conns 10 \
    --duration "$dur" --rate 1048576 --timeout 20 --log-gaps-ms 2
  pids+=("$BG_PID")
  bg_start stream-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration "$dur" \
    --rate 1048576 --timeout 20 --log-gaps-ms 2
  pids+=("$BG_PID")
  sleep 1.5

  name="$a: B holds the 101 client flows A holds"
  local af bf
  af=$(client_flows "$NS_PA")
  bf=$(client_flows "$NS_PB")
  if [ "$bf" -ge 101 ] && [ "$af" -eq "$bf" ]; then
    pass "$name (A $af, B $bf)"
  else
    fail "$name" "A has $af, B has $bf"
  fi

  name="$a: tandemctl switchover on the standby is refused and changes nothing"
  out=$(ctl "$NS_PB" switchover 2>&1)
  rc=$?
  if [ "$rc" -eq 1 ] && echo "$out" | grep -q 'refused: this node is not active' &&
      is_role "$NS_PA" active && has_addr "$NS_PA" front "$VIP"; then
    pass "$name ($out)"
  else
    fail "$name" "exit $rc: $out"
  fi

  # New connections back to back through every switchover (handshakes straddling them).
  bg_start churn-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --connect-rate \
    --conns "${CHURN_CONNS:-1}" \
    --duration $((dur - 2)) --timeout 20
  pids+=("$BG_PID")

  local i cur oth cur_name oth_name holds="" done_ok=0 still=0
  for i in $(seq 1 "$SWITCHOVERS"); do
    if [ $((i % 2)) -eq 1 ]; then
      cur=$NS_PA oth=$NS_PB cur_name=A oth_name=B
    else
      cur=$NS_PB oth=$NS_PA cur_name=B oth_name=A
    fi
    # The previous switchover's old active must have bulk-resynced first.
    wait_for 10 is_ready "$oth" && wait_for 2 peer_ready_in "$cur"
    local t0 t1 p
    if [ "$i" -eq "$SWITCHOVERS" ]; then  # the last one happens under load too
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && still=$((still + 1)); done
    fi
    t0=$(date +%s.%N)
    out=$(ctl "$cur" switchover 2>&1)
    rc=$?
    t1=$(date +%s.%N)
    echo "$i $t0 $t1" >>"$TDM_TMP/switchovers-$a"
    if [ "$rc" -eq 0 ] && echo "$out" | grep -q '^switchover complete' &&
        is_role "$oth" active && is_role "$cur" standby && has_addr "$oth" front "$VIP" &&
        has_addr "$oth" back "$back" && ! has_addr "$cur" front "$VIP" &&
        ! has_addr "$cur" back "$back"; then
      done_ok=$((done_ok + 1))
      holds="$holds $(echo "$out" | sed -n 's/.*data path held \([0-9.]*\) ms.*/\1/p')"
    else
      fail "$a: switchover $i ($cur_name -> $oth_name)" "exit $rc: $out" \
        "$cur_name: $(role_of "$cur"), $oth_name: $(role_of "$oth")"
      break
    fi
    sleep 0.3
  done
  name="$a: $SWITCHOVERS planned switchovers back and forth, each moving the group, under load"
  if [ "$done_ok" -eq "$SWITCHOVERS" ] && [ "$still" -eq ${#pids[@]} ]; then
    pass "$name (data path held, ms:$holds)"
  else
    fail "$name" "$done_ok of $SWITCHOVERS completed; $still of ${#pids[@]} clients running at the last"
  fi

  reap idle-$a "${pids[0]}"
  reap rr-$a "${pids[1]}"
  reap bulk-$a "${pids[2]}"
  reap stream-$a "${pids[3]}"
  reap churn-$a "${pids[4]}"
  check_clients "$a: 101 connections + a stream + new connections through $SWITCHOVERS switchovers: every byte verified, zero resets" \
    idle-$a rr-$a bulk-$a stream-$a churn-$a
  log "$a: new connections during the switchovers: $(grep '^tcpcheck: conns=' "$TDM_TMP/churn-$a.log" | cut -d' ' -f2-4)"
  log "$a: gaps the clients saw: $(gap_report "$TDM_TMP/switchovers-$a" rr-$a bulk-$a stream-$a)"

  name="$a: switchover counters: $SWITCHOVERS completed, 0 failed, 1 refused"
  local completed failed refused
  completed=$(( $(metric_in "$NS_PA" tandem_pair_switchovers_total completed) +
                $(metric_in "$NS_PB" tandem_pair_switchovers_total completed) ))
  failed=$(( $(metric_in "$NS_PA" tandem_pair_switchovers_total failed) +
             $(metric_in "$NS_PB" tandem_pair_switchovers_total failed) ))
  refused=$(( $(metric_in "$NS_PA" tandem_pair_switchovers_total refused) +
              $(metric_in "$NS_PB" tandem_pair_switchovers_total refused) ))
  if [ "$completed" -eq "$SWITCHOVERS" ] && [ "$failed" -eq 0 ] && [ "$refused" -eq 1 ]; then
    pass "$name"
  else
    fail "$name" "completed $completed, failed $failed, refused $refused"
  fi

  # ---- b. B restarted: bulk resync, then A crashed ----
  wait_for 10 is_ready "$NS_PB"
  bg_start held-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 100 --bytes 65536 \
    --hold-ms 7000 --timeout 20
  local held_pid=$BG_PID
  bg_start stream2-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --stream --duration 9 \
    --rate 1048576 --timeout 20
  local stream2_pid=$BG_PID
  sleep 1

  local warn_before
  warn_before=$(grep -c 'standby node 2 is not ready' "$TDM_TMP/tandemd-a.log")
  stop_node "$b_pid" "$NS_PB"
  start_node tandemd-b2 "$NS_PB" "$TDM_TMP/b.conf"
  b_pid=$NODE_PID
  name="$a: restarted B bulk-resyncs every flow and reports ready; A warned meanwhile"
  local resync_flows
  if wait_for 5 is_ready "$NS_PB" && is_role "$NS_PB" standby; then
    wait_for 2 grep -q 'standby node 2 is ready again' "$TDM_TMP/tandemd-a.log"
    resync_flows=$(sed -n 's/.*bulk resync complete (\([0-9]*\) flows).*/\1/p' \
      "$TDM_TMP/tandemd-b2.log" | head -n 1)
    # The two tables are read one after the other while the held clients' connections may still
    # be opening: compare until they agree (a flow the standby lacks would never agree).
    local tries=0
    while :; do
      af=$(client_flows "$NS_PA")
      bf=$(client_flows "$NS_PB")
      [ "$bf" -eq "$af" ] || [ "$tries" -ge 30 ] && break
      tries=$((tries + 1))
      sleep 0.1
    done
    if [ "$(grep -c 'standby node 2 is not ready' "$TDM_TMP/tandemd-a.log")" -gt "$warn_before" ] &&
        [ "${resync_flows:-0}" -ge 101 ] && [ "$bf" -ge 101 ] && [ "$bf" -eq "$af" ]; then
      pass "$name (bulk of $resync_flows flows; A $af, B $bf client flows)"
    else
      fail "$name" "bulk ${resync_flows:-none}, A $af, B $bf client flows; A's warnings:" \
        "$(grep 'standby node 2' "$TDM_TMP/tandemd-a.log" | tail -n 3)" \
        "client flows on one node only, or in another state there (< A, > B; now):" \
        "$(diff <(http_in "$NS_PA" '/flows?limit=100000' | grep "^web $CLIENT_IP:" |
                  cut -d' ' -f2,6 | sort) \
                <(http_in "$NS_PB" '/flows?limit=100000' | grep "^web $CLIENT_IP:" |
                  cut -d' ' -f2,6 | sort) | grep '^[<>]' | head -n 20)"
    fi
  else
    fail "$name" "B: $(role_of "$NS_PB"), ready $(metric_in "$NS_PB" tandem_pair_ready)"
  fi

  log "$a: crashing A (SIGKILL, links down)"
  crash_node "$a_pid" "$NS_PA"
  name="$a: B takes over after A's crash and holds the group"
  if wait_for 5 is_role "$NS_PB" active && wait_for 2 has_addr "$NS_PB" front "$VIP" &&
      has_addr "$NS_PB" back "$back"; then
    pass "$name"
  else
    fail "$name" "B: $(role_of "$NS_PB")"
  fi

  # ---- c. A returns with preempt off ----
  ip -n "$NS_PA" link set front up
  ip -n "$NS_PA" link set back up
  local epoch_b takeovers_b
  epoch_b=$(metric_in "$NS_PB" tandem_pair_epoch)
  takeovers_b=$(metric_in "$NS_PB" tandem_pair_takeovers_total)
  bg_start rr2-$a "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --rr --conns 10 --rate 200 \
    --count 800 --timeout 20
  local rr2_pid=$BG_PID
  start_node tandemd-a2 "$NS_PA" "$TDM_TMP/a.conf"
  a_pid=$NODE_PID
  name="$a: A returns (higher priority, preempt off): stays standby, resyncs to ready, no takeover"
  name="$name; drops the addresses its killed run left behind"
  if wait_for 5 is_ready "$NS_PA" && sleep 1 && is_role "$NS_PA" standby &&
      grep -q 'left behind by an earlier run' "$TDM_TMP/tandemd-a2.log" &&
      ! has_addr "$NS_PA" back "$back" &&
      is_role "$NS_PB" active && has_addr "$NS_PB" front "$VIP" && ! has_addr "$NS_PA" front "$VIP" &&
      [ "$(metric_in "$NS_PB" tandem_pair_epoch)" = "$epoch_b" ] &&
      [ "$(metric_in "$NS_PB" tandem_pair_takeovers_total)" = "$takeovers_b" ] &&
      [ "$(metric_in "$NS_PA" tandem_pair_takeovers_total)" = 0 ]; then
    pass "$name (A holds $(client_flows "$NS_PA") client flows)"
  else
    fail "$name" "A: $(role_of "$NS_PA") ready $(metric_in "$NS_PA" tandem_pair_ready)," \
      "B: $(role_of "$NS_PB") epoch $(metric_in "$NS_PB" tandem_pair_epoch) (was $epoch_b)," \
      "takeovers: B $(metric_in "$NS_PB" tandem_pair_takeovers_total) (was $takeovers_b)," \
      "A $(metric_in "$NS_PA" tandem_pair_takeovers_total)" \
      "$(ip -n "$NS_PA" -br addr) / $(ip -n "$NS_PB" -br addr)"
  fi

  reap held-$a "$held_pid"
  reap stream2-$a "$stream2_pid"
  reap rr2-$a "$rr2_pid"
  check_clients "$a: connections across B's restart, A's crash and A's return: every byte verified, zero resets" \
    held-$a stream2-$a rr2-$a
  # SWO_KEEP=DIR keeps this case's logs (gap lines, daemon logs) for a closer look.
  if [ -n "${SWO_KEEP:-}" ]; then mkdir -p "$SWO_KEEP/$a" && cp "$TDM_TMP"/* "$SWO_KEEP/$a/"; fi
  topo_down
}

for addressing in ${PAIR_ADDRESSING:-snat transparent}; do
  run_case "$addressing"
done
finish
