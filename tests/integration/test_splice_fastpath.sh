#!/usr/bin/env bash
# Splice mode with the kernel fast path (daemon.fastpath = on, docs/fastpath.md): a tc ingress
# eBPF program translates the packets of established splice flows in the kernel; NFQUEUE sees
# the handshakes and what the program leaves to it. Real kernel TCP on both ends, transparent
# addressing with closes in the kernel (fastpath_close = on), the backend SYN-ACKs answered
# there (fastpath_splice = on), the cookie ACKs bound there (fastpath_bind = on) and translated
# packets sent straight out (fastpath_redirect = on),
# snat with closes through NFQUEUE (fastpath_close = off), the SYN-ACKs too (fastpath_splice =
# off), the cookie ACKs through NFQUEUE (fastpath_bind = off) and translated packets forwarded by
# the kernel's IP stack (fastpath_redirect = off):
#   - an interface that does not exist in fastpath_interfaces fails the start (exit 1, named);
#   - the program is attached to the proxy's interfaces (tcx), tandem_fastpath_enabled is 1;
#   - curl fetches a 5 MiB file twice from python3 -m http.server; sha256 must match;
#   - 200 concurrent tcpcheck connections, 64 KiB each way, every byte verified both ways, then
#     200 short ones (64 bytes): measured first with the fast path off (same workload, same
#     topology), then on: with it, the 64 KiB connections' packets mostly crossed the fast path
#     and NFQUEUE saw less than a third of the packets per connection it saw without (with
#     fastpath_close = off, where a FIN through NFQUEUE ends the flow's fast path: fewer than
#     without, and a third of the packets or more in the kernel); the short
#     connections' figures are logged (the flow goes on the fast path lazily, after most of a
#     short connection's packets are already on their way);
#   - after the close phase no flow is left but TIME_WAIT/CLOSE, and no map entry; no backend
#     RST counted as a passive health signal;
#   - 200 connections closed by a client RST (SO_LINGER 0): every RST accepted, none challenged
#     or out of window, the flows in CLOSE;
#   - iperf3 3 s each way: the fast path carried at least 90 % of the bytes;
#   - no drop but splice_pending (and, with fastpath_close = off, a few rst_out_of_window: see
#     RST_OOW_MAX below), no packet the program failed to rewrite, no full event ring;
#     closes reported as events (close on) or passed to NFQUEUE (close off);
#   - SYNs answered in the kernel (daemon.fastpath_syn, on by default with the fast path): over
#     the 400 tcpcheck connections the program's answered counter rises by at least one per
#     connection and tandemd itself sends no SYN cookie (tandem_syncookies_sent_total);
#   - fastpath_splice = on: the backends' SYN-ACKs answered in the kernel too (zero-window
#     handshake): at least 90 % of those connections' splices completed there, each applied by
#     the engine, none stale; off: none armed, none completed there;
#   - fastpath_bind = on: the kernel bound at least 90 % of the 400 connections and the engine
#     took each (none undone, no stale event); off: none;
#   - fastpath_redirect = on: at least 90 % of the translated packets left by the routed
#     interface at once, none dropped; off: none;
#   - SIGKILL of tandemd (transparent) and SIGTERM (snat: exit 0, rules removed): the program is
#     detached from every interface (tcx links die with the process), checked with
#     BPF_PROG_QUERY (tcx_query.py) and tc.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
command -v iperf3 >/dev/null || skip_all "iperf3 not installed"
TCX_QUERY="$PYTHON $(dirname "$0")/tcx_query.py"

mkdir -p "$TDM_TMP/www"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$TDM_TMP/www/file"
want_sha=$(sha256sum "$TDM_TMP/www/file" | cut -d' ' -f1)

unexpected_drops() {
  echo $(( $(metric tandem_drops_total) - $(metric tandem_drops_total 'reason="splice_pending"') -
           $(metric tandem_drops_total 'reason="rst_out_of_window"') -
           $(metric tandem_drops_total 'reason="rst_after_close"') -
           $(metric tandem_drops_total 'reason="ack_overtaken"') ))
}

# Every flow reaches TIME_WAIT or CLOSE after its close (LINGER_MAX). RSTs judged out of
# window (RST_OOW_MAX, set per run): none with fastpath_close = on. With it off, a few are
# expected and bounded (docs/fastpath.md, "Known issues"): the backends' answers to segments
# that were still queued for tandemd when their flow went on the fast path, overtaken by later
# ones and delivered after the backend closed; their seq names a long-acknowledged point, and
# the client would drop them too (RFC 5961 3.2).
LINGER_MAX=0
RST_OOW_MAX=0

# tcx_total: programs attached at tcx ingress of the proxy's front and back, summed (-1 if the
# query failed: never mistaken for "none").
tcx_total() {
  local out
  out=$(in_ns "$NS_PRX" $TCX_QUERY front back 2>"$TDM_TMP/tcx.err") || { echo -1; return; }
  echo "$out" | awk '{ s += $2 } END { print s + 0 }'
}

# tc_ingress_filters: classic tc ingress filters on front and back (a non-tcx attachment).
tc_ingress_filters() {
  { in_ns "$NS_PRX" tc filter show dev front ingress; in_ns "$NS_PRX" tc filter show dev back ingress; } \
    2>/dev/null | grep -c .
}

# lingering CLIENT: flows of CLIENT in /flows in a state other than TIME_WAIT or CLOSE.
lingering() {
  flows_matching "$1:" | awk '$6 != "TIME_WAIT" && $6 != "CLOSE"' | grep -c .
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s until it succeeds (false after SECONDS).
wait_until() {
  local tries=$(($1 * 10))
  shift
  while [ "$tries" -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    tries=$((tries - 1))
  done
  return 1
}
# Short connections come from an address of their own, so each phase finds its own flows.
SHORT_CLIENT_IP=10.$TDM_NET.1.6
RST_CLIENT_IP=10.$TDM_NET.1.7
CLOSED_IP=$CLIENT_IP  # whose flows closed_down looks at
closed_down() {
  [ "$(lingering "$CLOSED_IP")" -le "$LINGER_MAX" ] && [ "$(metric tandem_fastpath_entries)" -eq 0 ]
}

# queued_per_conn ARGS...: runs a tcpcheck client with ARGS against VIP:80; sets TC_OK (verified
# connections), PER100 (NFQUEUE packets per new flow x 100), FAST (fast-path packets) and QUEUED.
queued_per_conn() {
  local q0 f0 c0 out c1
  q0=$(metric tandem_nfq_packets_total)
  f0=$(metric tandem_fastpath_packets_total)
  c0=$(metric tandem_flows_created_total)
  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" "$@" --timeout 30 2>&1 | tail -n 1)
  TC_OK=$(summary_field "$out" ok)
  TC_OUT=$out
  wait_until 10 closed_down
  c1=$(metric tandem_flows_created_total)
  QUEUED=$(( $(metric tandem_nfq_packets_total) - q0 ))
  FAST=$(( $(metric tandem_fastpath_packets_total) - f0 ))
  PER100=$(( c1 > c0 ? QUEUED * 100 / (c1 - c0) : 99999 ))
}
dec() { echo "$(($1 / 100)).$(printf %02d $(($1 % 100)))"; }

# baseline ADDRESSING: the same two workloads through tandemd without the fast path; sets
# BASE_BULK and BASE_SHORT (NFQUEUE packets per connection x 100).
baseline() {
  local a=$1 conf=$TDM_TMP/baseline-$1.conf
  TANDEM_FASTPATH=off write_config "$conf"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  BASE_BULK=
  BASE_SHORT=
  if ! start_tandemd "$conf"; then
    fail "$a: tandemd starts without the fast path (baseline)" "$(cat "$TDM_TANDEMD_LOG")"
    return
  fi
  queued_per_conn --conns 200 --bytes 65536
  [ "$TC_OK" = 200 ] && BASE_BULK=$PER100
  CLOSED_IP=$SHORT_CLIENT_IP queued_per_conn --conns 200 --bytes 64 --bind "$SHORT_CLIENT_IP"
  [ "$TC_OK" = 200 ] && BASE_SHORT=$PER100
  if [ -n "$BASE_BULK" ] && [ -n "$BASE_SHORT" ]; then
    pass "$a: baseline without the fast path: $(dec "$BASE_BULK") packets through NFQUEUE per 64 KiB connection, $(dec "$BASE_SHORT") per short one"
  else
    fail "$a: baseline without the fast path" "$TC_OUT"
  fi
  check "$a: baseline tandemd exits cleanly" stop_tandemd
}
detached() { [ "$(tcx_total)" -eq 0 ] && [ "$(tc_ingress_filters)" -eq 0 ]; }

run_addressing() {
  local a=$1 close=$2 splice=$3 redirect=$4 bind=$5
  RST_OOW_MAX=0
  [ "$close" = off ] && RST_OOW_MAX=10
  topo_up "$a" || { fail "$a: topology"; topo_down; return; }
  ip -n "$NS_CLI" addr add "$SHORT_CLIENT_IP/24" dev eth0
  ip -n "$NS_CLI" addr add "$RST_CLIENT_IP/24" dev eth0
  tcpcheck_servers || fail "$a: tcpcheck servers listen"
  bg_start http1 "$NS_BE1" "$PYTHON" -m http.server 8000 --bind "$BE1_IP" --directory "$TDM_TMP/www"
  bg_start http2 "$NS_BE2" "$PYTHON" -m http.server 8000 --bind "$BE2_IP" --directory "$TDM_TMP/www"
  bg_start iperf "$NS_BE1" iperf3 -s -B "$BE1_IP" -p 5201
  wait_listen "$NS_BE1" "$BE1_IP:8000" && wait_listen "$NS_BE2" "$BE2_IP:8000" &&
    wait_listen "$NS_BE1" "$BE1_IP:5201" || fail "$a: servers listen"

  baseline "$a"
  local conf=$TDM_TMP/fastpath-$a.conf
  TANDEM_FASTPATH=on write_config "$conf" \
    --extra "$(service_section http "$VIP:8000" "$BE1_IP:8000 $BE2_IP:8000")
$(service_section bulk "$VIP:5201" "$BE1_IP:5201")"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  # This test sets these itself, whatever TANDEM_FASTPATH_CLOSE/_SPLICE/_REDIRECT/_BIND asked of
  # write_config.
  sed -i '/^fastpath_close =/d; /^fastpath_splice =/d; /^fastpath_redirect =/d; /^fastpath_bind =/d' "$conf"
  sed -i "s/^fastpath = on/fastpath = on\nfastpath_close = $close\nfastpath_splice = $splice\nfastpath_redirect = $redirect\nfastpath_bind = $bind/" "$conf"
  # The operator asked for the fast path: where it cannot be attached, tandemd does not start,
  # says why, and leaves no rule behind.
  local rc_bad
  "$TANDEMD" --config "$conf" --daemon.fastpath_interfaces=tdmnosuch0 --check >/dev/null 2>&1
  ip netns exec "$NS_PRX" "$TANDEMD" --config "$conf" --daemon.fastpath_interfaces=tdmnosuch0 \
    >"$TDM_TMP/bad-start.log" 2>&1
  rc_bad=$?
  name="$a: fastpath_interfaces naming no interface: start-up fails (exit 1), says why, no rules"
  if [ "$rc_bad" -eq 1 ] && grep -q 'fastpath.*tdmnosuch0' "$TDM_TMP/bad-start.log" &&
     [ "$(tandem_rule_count)" -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "exit $rc_bad, $(tandem_rule_count) TANDEM rules" "$(tail -n 3 "$TDM_TMP/bad-start.log")"
  fi
  if ! start_tandemd "$conf"; then
    fail "$a: tandemd starts with daemon.fastpath = on" "$(cat "$TDM_TANDEMD_LOG")"
    topo_down
    return
  fi
  local name="$a: fast path attached to front and back (tcx), tandem_fastpath_enabled 1"
  local attached
  attached=$(tcx_total)
  if [ "$(metric tandem_fastpath_enabled)" = 1 ] && [ "$attached" -ge 2 ]; then
    pass "$name ($(grep -o 'fast path attached.*' "$TDM_TANDEMD_LOG" | head -n 1))"
  else
    fail "$name" "tcx programs on front+back: $attached $(cat "$TDM_TMP/tcx.err")" \
      "tc ingress filters: $(tc_ingress_filters)"
  fi

  # (a) curl
  local i got
  for i in 1 2; do
    got=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 30 "http://$VIP:8000/file" |
          sha256sum | cut -d' ' -f1)
    if [ "$got" = "$want_sha" ]; then
      pass "$a: curl #$i through splice + fast path, sha256 matches"
    else
      fail "$a: curl #$i through splice + fast path, sha256 matches" "got $got"
    fi
  done

  # (b) 200 concurrent connections, 64 KiB each way, then 200 short ones.
  local syn0 cookies0 created0 ks0 ka0 kb0
  kb0=$(metric tandem_fastpath_bound_total)
  ks0=$(metric tandem_fastpath_kernel_splices_total)
  ka0=$(metric tandem_fastpath_splices_answered_total)
  syn0=$(metric tandem_fastpath_syn_answered_total)
  cookies0=$(metric tandem_syncookies_sent_total)
  created0=$(metric tandem_flows_created_total)
  queued_per_conn --conns 200 --bytes 65536
  name="$a: 200 concurrent connections, 64 KiB each way, every byte verified both ways"
  if [ "$TC_OK" = 200 ]; then pass "$name"; else fail "$name" "$TC_OUT"; fi
  # Closes through NFQUEUE (fastpath_close = off) take a flow off the fast path at the client's
  # FIN, and tcpcheck's server sends the second half of its data after that FIN: below the
  # baseline then (about half of it), under a third of it with closes in the kernel. (The
  # baseline itself moves with GRO/GSO coalescing on a loaded machine: 32-55 seen.) With closes
  # through NFQUEUE the kernel's share is about half, so "most" would be a coin toss (3,647 in
  # the kernel against 4,358 queued seen once): at least a third of them in the kernel then.
  local parts=3 fast_min=$QUEUED share="most packets"
  if [ "$close" = off ]; then
    parts=1
    fast_min=$((QUEUED / 2))
    share="a third of the packets or more"
  fi
  local bound="under 1/$parts of the baseline"
  [ "$parts" = 1 ] && bound="below the baseline"
  name="$a: 64 KiB connections: $share in the kernel, NFQUEUE $bound"
  if [ -n "${BASE_BULK:-}" ] && [ "$FAST" -gt "$fast_min" ] &&
     [ "$(awk -v p="$PER100" -v k="$parts" -v b="$BASE_BULK" 'BEGIN { print (p * k < b) }')" = 1 ]; then
    pass "$name ($FAST in the kernel; $(dec "$PER100") through NFQUEUE per connection, $(dec "$BASE_BULK") without)"
  else
    fail "$name" "fast path $FAST, NFQUEUE $QUEUED: $(dec "$PER100") per connection," \
      "without the fast path ${BASE_BULK:-?} / 100"
  fi
  name="$a: the close phase leaves no fast-path entry and no flow open (all TIME_WAIT or CLOSE)"
  if closed_down; then
    pass "$name"
  else
    fail "$name" "tandem_fastpath_entries $(metric tandem_fastpath_entries)," \
      "flows of $CLIENT_IP still open: $(lingering "$CLIENT_IP")" \
      "$(flows_matching "$CLIENT_IP:" | awk '$6 != "TIME_WAIT" && $6 != "CLOSE"' | head -n 5)"
  fi
  CLOSED_IP=$SHORT_CLIENT_IP queued_per_conn --conns 200 --bytes 64 --bind "$SHORT_CLIENT_IP"
  name="$a: 200 short connections (64 bytes each way), every byte verified"
  if [ "$TC_OK" = 200 ]; then pass "$name"; else fail "$name" "$TC_OUT"; fi
  log "$a: RSTs so far: $(metric tandem_rst_accepted_total) accepted," \
    "$(metric tandem_rst_challenged_total) challenged," \
    "$(metric tandem_drops_total 'reason="rst_out_of_window"') out of window; flows open:" \
    "$(lingering "$CLIENT_IP")"
  log "$a: short connections: $(dec "$PER100") packets through NFQUEUE per connection" \
    "(${BASE_SHORT:+$(dec "$BASE_SHORT")} without the fast path), $FAST in the kernel"
  name="$a: after the short connections no entry and no flow open"
  if CLOSED_IP=$SHORT_CLIENT_IP closed_down; then
    pass "$name"
  else
    fail "$name" "tandem_fastpath_entries $(metric tandem_fastpath_entries)," \
      "flows of $SHORT_CLIENT_IP still open: $(lingering "$SHORT_CLIENT_IP")" \
      "$(flows_matching "$SHORT_CLIENT_IP:" | awk '$6 != "TIME_WAIT" && $6 != "CLOSE"' | head -n 5)"
  fi

  local syn_n cookies_n conns
  syn_n=$(( $(metric tandem_fastpath_syn_answered_total) - syn0 ))
  cookies_n=$(( $(metric tandem_syncookies_sent_total) - cookies0 ))
  conns=$(( $(metric tandem_flows_created_total) - created0 ))
  name="$a: the kernel answered the SYNs of the $conns connections, tandemd sent no SYN cookie"
  if [ "$conns" -ge 400 ] && [ "$syn_n" -ge "$conns" ] && [ "$cookies_n" -eq 0 ] &&
     [ "$(metric tandem_fastpath_syn_active)" = 1 ]; then
    pass "$name ($syn_n SYN-ACKs from the kernel)"
  else
    fail "$name" "kernel answered $syn_n, tandemd sent $cookies_n cookies, flows $conns," \
      "passed: $(http_get /metrics | grep '^tandem_fastpath_syn_passed_total' | tr '\n' ' ')"
  fi

  # The zero-window handshake's second half in the kernel too: the program answered the
  # backends' SYN-ACKs (both ACKs sent, entries written) and the engine applied each report.
  # A few may go through NFQUEUE (no neighbour entry for the client yet: the engine's).
  local ks ka stale
  ks=$(( $(metric tandem_fastpath_kernel_splices_total) - ks0 ))
  ka=$(( $(metric tandem_fastpath_splices_answered_total) - ka0 ))
  stale=$(metric tandem_fastpath_splice_events_stale_total)
  name="$a: the kernel completed the splices (backend SYN-ACK answered), the engine applied each"
  [ "$splice" = off ] && name="$a: fastpath_splice = off: no splice armed or completed in the kernel"
  if [ "$splice" = on ] && [ "$ks" -ge $(( conns * 9 / 10 )) ] && [ "$ks" -eq "$ka" ] &&
     [ "$stale" -eq 0 ]; then
    pass "$name ($ks of $conns)"
  elif [ "$splice" = off ] && [ "$ks" -eq 0 ] && [ "$ka" -eq 0 ] &&
       [ "$(metric tandem_fastpath_splices_armed_total)" -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "kernel answered $ka, engine applied $ks, stale $stale, connections $conns," \
      "armed $(metric tandem_fastpath_splices_armed_total)," \
      "disarmed $(metric tandem_fastpath_splices_disarmed_total)," \
      "passed armed $(metric tandem_fastpath_passed_total 'reason="armed"')"
  fi
  local kb undone bstale
  kb=$(( $(metric tandem_fastpath_bound_total) - kb0 ))
  undone=$(metric tandem_fastpath_bind_undone_total)
  bstale=$(metric tandem_fastpath_bind_stale_total)
  name="$a: fastpath_bind = $bind: cookie ACKs bound in the kernel, taken by the engine ($kb of $conns)"
  if [ "$undone" -eq 0 ] && [ "$bstale" -eq 0 ] &&
     { { [ "$bind" = on ] && [ "$kb" -ge $(( conns * 9 / 10 )) ]; } ||
       { [ "$bind" = off ] && [ "$kb" -eq 0 ]; }; }; then
    pass "$name"
  else
    fail "$name" "undone $undone, stale $bstale," \
      "passed $(metric tandem_fastpath_bind_passed_total)," \
      "answered $(metric tandem_fastpath_bind_answered_total)"
  fi

  # The backends closed every connection cleanly: no RST of theirs may count against their
  # health (tandem_backend_rsts_total, a passive signal), not even one answering a duplicate of
  # a close (docs/health.md).
  name="$a: no backend RST counted as a passive health signal after 400 clean closes"
  if [ "$(metric tandem_backend_rsts_total)" -eq 0 ]; then
    pass "$name"
  else
    fail "$name" "tandem_backend_rsts_total $(metric tandem_backend_rsts_total)"
  fi

  # (b2) Closing RSTs: 200 connections, 64 KiB each way, that the client aborts (SO_LINGER 0)
  # once the server acknowledged everything. Each RST reaches the engine (the kernel never
  # takes one) and is judged on the edges read back from the map: it names the client's next
  # sequence number exactly, so it must be accepted (RFC 5961 3.2), not merely challenged, and
  # never dropped as out of window; the flows end in CLOSE.
  local acc0 chal0 oow0 acc chal oowr
  acc0=$(metric tandem_rst_accepted_total)
  chal0=$(metric tandem_rst_challenged_total)
  oow0=$(metric tandem_drops_total 'reason="rst_out_of_window"')
  CLOSED_IP=$RST_CLIENT_IP queued_per_conn --conns 200 --bytes 65536 --rst --bind "$RST_CLIENT_IP"
  acc=$(( $(metric tandem_rst_accepted_total) - acc0 ))
  chal=$(( $(metric tandem_rst_challenged_total) - chal0 ))
  oowr=$(( $(metric tandem_drops_total 'reason="rst_out_of_window"') - oow0 ))
  name="$a: 200 connections closed by a client RST: verified, every RST accepted (none challenged or out of window), no entry left"
  if [ "$TC_OK" = 200 ] && [ "$acc" -ge 200 ] && [ "$chal" -eq 0 ] && [ "$oowr" -eq 0 ] &&
     CLOSED_IP=$RST_CLIENT_IP closed_down; then
    pass "$name ($acc accepted)"
  else
    fail "$name" "$TC_OUT" "accepted $acc, challenged $chal, out of window $oowr," \
      "tandem_fastpath_entries $(metric tandem_fastpath_entries)," \
      "flows of $RST_CLIENT_IP still open: $(lingering "$RST_CLIENT_IP")"
  fi

  # (c) iperf3
  local dir b0 b1 sent=0 bytes
  b0=$(metric tandem_fastpath_bytes_total)
  for dir in "" -R; do
    if in_ns "$NS_CLI" timeout 30 iperf3 -c "$VIP" -p 5201 -t 3 -J $dir >"$TDM_TMP/iperf.json" 2>&1; then
      bytes=$("$PYTHON" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$TDM_TMP/iperf.json")
      sent=$((sent + bytes))
      pass "$a: iperf3 $dir through splice + fast path: $((bytes / 1048576)) MiB"
    else
      fail "$a: iperf3 $dir through splice + fast path" "$(tail -n 5 "$TDM_TMP/iperf.json")"
    fi
  done
  b1=$(metric tandem_fastpath_bytes_total)
  name="$a: iperf3: at least 90 % of the payload crossed the fast path"
  if [ "$sent" -gt 0 ] && [ $((b1 - b0)) -ge $((sent * 9 / 10)) ]; then
    pass "$name ($(( (b1 - b0) / 1048576 )) MiB of IP bytes for $((sent / 1048576)) MiB)"
  else
    fail "$name" "fast path bytes $((b1 - b0)), iperf3 payload $sent"
  fi

  local bad failed full events passed_close
  bad=$(unexpected_drops)
  failed=$(metric tandem_fastpath_passed_total 'reason="failed"')
  full=$(metric tandem_fastpath_events_full_total)
  events=$(metric tandem_fastpath_events_total)
  passed_close=$(metric tandem_fastpath_passed_total 'reason="close"')
  local oow
  oow=$(metric tandem_drops_total 'reason="rst_out_of_window"')
  name="$a: no drop but splice_pending and at most $RST_OOW_MAX rst_out_of_window, no failed rewrite, no full event ring"
  if [ "$bad" -eq 0 ] && [ "$oow" -le "$RST_OOW_MAX" ] && [ "$failed" -eq 0 ] && [ "$full" -eq 0 ]; then
    pass "$name ($(metric tandem_drops_total 'reason="splice_pending"') splice_pending, $oow rst_out_of_window)"
  else
    fail "$name" "other drops $bad, rst_out_of_window $oow, passed{failed} $failed, events_full $full"
  fi
  name="$a: fastpath_close = $close: closes seen by tandemd as events ($events) or queued ($passed_close)"
  # At least one FIN of each of the 200 64 KiB connections met its flow on the fast path.
  if { [ "$close" = on ] && [ "$events" -ge 200 ] && [ "$passed_close" -eq 0 ] &&
       [ "$(metric tandem_fastpath_events_submitted_total)" -eq "$events" ]; } ||
     { [ "$close" = off ] && [ "$events" -eq 0 ] && [ "$passed_close" -ge 200 ]; }; then
    pass "$name"
  else
    fail "$name" "want >= 200 on the side of fastpath_close = $close;" \
      "events submitted $(metric tandem_fastpath_events_submitted_total)"
  fi

  local translated redirected stacked rdropped
  translated=$(metric tandem_fastpath_packets_total)
  redirected=$(metric tandem_fastpath_redirected_total)
  stacked=$(metric tandem_fastpath_routed_by_stack_total)
  rdropped=$(metric tandem_fastpath_redirect_dropped_total)
  name="$a: fastpath_redirect = $redirect: translated packets sent straight out ($redirected of $translated; $stacked left to the IP stack)"
  if [ "$rdropped" -eq 0 ] && [ "$translated" -gt 0 ] &&
     { { [ "$redirect" = on ] && [ "$redirected" -ge $((translated * 9 / 10)) ]; } ||
       { [ "$redirect" = off ] && [ "$redirected" -eq 0 ] && [ "$stacked" -eq 0 ]; }; }; then
    pass "$name"
  else
    fail "$name" "redirect_dropped $rdropped"
  fi

  # (d) The tcx links die with the process, and the program with them: on SIGKILL (transparent
  # run) as on SIGTERM (snat run, which also exits 0 and removes its rules).
  local how=KILL
  [ "$a" = snat ] && how=TERM
  if [ "$how" = TERM ]; then
    check "$a: SIGTERM: tandemd exits 0 and removes its rules" stop_tandemd
  else
    stop_pid "$TDM_TANDEMD_PID" KILL
    TDM_TANDEMD_PID=
  fi
  name="$a: after SIG$how of tandemd no program is attached to front or back"
  if wait_until 5 detached; then
    pass "$name"
  else
    fail "$name" "tcx programs: $(tcx_total) $(cat "$TDM_TMP/tcx.err")" \
      "tc ingress filters: $(tc_ingress_filters)"
  fi
  topo_down
}

run_addressing transparent on on on on
run_addressing snat off off off off
finish
