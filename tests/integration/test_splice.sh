#!/usr/bin/env bash
# Splice mode through tandemd, real kernel TCP on both ends, transparent and snat addressing:
# the proxy answers the client's handshake with a SYN cookie, opens the backend leg itself on the
# client's ACK and translates sequence numbers, timestamps and window scale between the legs.
#   - curl fetches a 5 MiB file from python3 -m http.server; sha256 must match;
#   - 200 concurrent tcpcheck connections, 64 KiB each way, every byte verified, clean close;
#   - iperf3 3 s each way (SACK and timestamps on, as Linux defaults);
#   - tandemd answered every SYN with a cookie and completed a backend handshake per connection,
#     and dropped nothing but client data that arrived while the backend leg was opening;
#   - the zero-window services (tcpcheck's, iperf3's) had their clients' windows opened once per
#     connection, the handshake_window = open one (curl's) never.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
command -v iperf3 >/dev/null || skip_all "iperf3 not installed"

mkdir -p "$TDM_TMP/www"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$TDM_TMP/www/file"
want_sha=$(sha256sum "$TDM_TMP/www/file" | cut -d' ' -f1)

# drops other than splice_pending (client data the proxy could not yet forward: resent by TCP),
# rst_after_close (a RST after the flow's close, which its receiver discards too) and, with
# TANDEM_FASTPATH=on, ack_overtaken (a bare ACK older than one its side sent through the kernel)
unexpected_drops() {
  echo $(( $(metric tandem_drops_total) - $(metric tandem_drops_total 'reason="splice_pending"') -
           $(metric tandem_drops_total 'reason="rst_after_close"') -
           $(metric tandem_drops_total 'reason="ack_overtaken"') ))
}

for addressing in transparent snat; do
  topo_up "$addressing" || { fail "$addressing: topology"; finish; }
  tcpcheck_servers || fail "$addressing: tcpcheck servers listen"
  bg_start http1 "$NS_BE1" "$PYTHON" -m http.server 8000 --bind "$BE1_IP" --directory "$TDM_TMP/www"
  bg_start http2 "$NS_BE2" "$PYTHON" -m http.server 8000 --bind "$BE2_IP" --directory "$TDM_TMP/www"
  bg_start iperf "$NS_BE1" iperf3 -s -B "$BE1_IP" -p 5201
  wait_listen "$NS_BE1" "$BE1_IP:8000" && wait_listen "$NS_BE2" "$BE2_IP:8000" &&
    wait_listen "$NS_BE1" "$BE1_IP:5201" || fail "$addressing: servers listen"

  conf=$TDM_TMP/splice-$addressing.conf
  # web (tcpcheck) and bulk (iperf3) use the default handshake_window = zero; http (curl) keeps
  # the window open, so its early request is held in NFQUEUE (docs/splice.md).
  write_config "$conf" --extra "$(service_section http "$VIP:8000" "$BE1_IP:8000 $BE2_IP:8000")
handshake_window = open
$(service_section bulk "$VIP:5201" "$BE1_IP:5201")"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  if ! start_tandemd "$conf"; then
    fail "$addressing: tandemd starts in splice mode" "$(cat "$TDM_TANDEMD_LOG")"
    topo_down
    continue
  fi

  for i in 1 2; do
    got=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 30 "http://$VIP:8000/file" |
          sha256sum | cut -d' ' -f1)
    if [ "$got" = "$want_sha" ]; then
      pass "$addressing: curl #$i through splice, sha256 matches"
    else
      fail "$addressing: curl #$i through splice, sha256 matches" "got $got"
    fi
  done

  out=$(in_ns "$NS_CLI" "$TCPCHECK" client --connect "$VIP:80" --conns 200 --bytes 65536 \
        --timeout 30 2>&1 | tail -n 1)
  if [ "$(summary_field "$out" ok)" = 200 ]; then
    pass "$addressing: 200 concurrent connections spliced, every byte verified both ways"
  else
    fail "$addressing: 200 concurrent connections spliced, every byte verified both ways" "$out"
  fi

  for dir in "" -R; do
    if in_ns "$NS_CLI" timeout 30 iperf3 -c "$VIP" -p 5201 -t 3 $dir >"$TDM_TMP/iperf.txt" 2>&1; then
      pass "$addressing: iperf3 $dir through splice: $(grep -E 'receiver' "$TDM_TMP/iperf.txt" | awk '{print $7, $8}')"
    else
      fail "$addressing: iperf3 $dir through splice" "$(tail -n 5 "$TDM_TMP/iperf.txt")"
    fi
  done

  # With TANDEM_FASTPATH=on the kernel answers the SYNs (daemon.fastpath_syn): its cookies count.
  cookies=$(( $(metric tandem_syncookies_sent_total) + $(metric tandem_fastpath_syn_answered_total) ))
  spliced=$(metric tandem_splices_completed_total)
  if [ "$spliced" -ge 204 ] && [ "$cookies" -ge "$spliced" ]; then
    pass "$addressing: $cookies SYN cookies sent, $spliced backend handshakes completed by the proxy"
  else
    fail "$addressing: SYN cookies and spliced handshakes counted" "cookies=$cookies spliced=$spliced"
  fi
  opened=$(metric tandem_splice_windows_opened_total)
  if [ "$opened" -ge 200 ] && [ "$opened" -le $((spliced - 2)) ]; then
    pass "$addressing: $opened client windows opened after the backend handshake (none for the" \
      "handshake_window = open service)"
  else
    fail "$addressing: client windows opened once per zero-window connection" \
      "opened=$opened spliced=$spliced (curl's 2 connections must not count)"
  fi
  bad=$(unexpected_drops)
  if [ "$bad" -eq 0 ]; then
    pass "$addressing: no drop but splice_pending ($(metric tandem_drops_total 'reason="splice_pending"')" \
      "of those) and rst_after_close ($(metric tandem_drops_total 'reason="rst_after_close"'))"
  else
    fail "$addressing: no drop but splice_pending" "$bad other drops"
  fi
  stop_tandemd || fail "$addressing: tandemd exits cleanly"
  topo_down
done
finish
