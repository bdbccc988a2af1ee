#!/usr/bin/env bash
# Splice mode: a lost backend SYN is sent again by tandemd's own timer (250 ms, then doubling),
# not only when the client retransmits. The backend namespace drops the first SYN that reaches
# it (a one-shot iptables quota rule); curl through the VIP must still get its file, and
# tandemd must have counted the resent SYN. Transparent and snat addressing; bind = ack and
# bind = data (where the first data segment is held while the SYN is resent).
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"

mkdir -p "$TDM_TMP/www"
head -c $((256 * 1024)) /dev/urandom >"$TDM_TMP/www/file"
want_sha=$(sha256sum "$TDM_TMP/www/file" | cut -d' ' -f1)

# drop_first_syn NS PORT: drops the first SYN to PORT in NS (60 bytes with the options tandem
# writes), then lets every later one through: the quota is spent by the first.
drop_first_syn() {
  in_ns "$1" iptables -F INPUT
  in_ns "$1" iptables -I INPUT -p tcp --syn --dport "$2" -m quota --quota 60 -j DROP
}
# dropped_syns NS: packets the one-shot rule dropped.
dropped_syns() {
  in_ns "$1" iptables -L INPUT -v -x -n | awk '/quota/ { print $1; exit }'
}

for addressing in transparent snat; do
  topo_up "$addressing" || { fail "$addressing: topology"; finish; }
  bg_start http1 "$NS_BE1" "$PYTHON" -m http.server 8000 --bind "$BE1_IP" --directory "$TDM_TMP/www"
  wait_listen "$NS_BE1" "$BE1_IP:8000" || fail "$addressing: server listens"

  conf=$TDM_TMP/timer-$addressing.conf
  write_config "$conf" --extra "$(service_section ack "$VIP:8000" "$BE1_IP:8000")
$(service_section data "$VIP:8001" "$BE1_IP:8000")
bind = data"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  if ! start_tandemd "$conf"; then
    fail "$addressing: tandemd starts" "$(cat "$TDM_TANDEMD_LOG")"
    topo_down
    continue
  fi

  for port in 8000 8001; do
    bind=ack
    [ "$port" = 8001 ] && bind=data
    drop_first_syn "$NS_BE1" 8000
    before=$(metric tandem_splice_syn_retransmits_total)
    t0=$(date +%s%N)
    got=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 20 "http://$VIP:$port/file" |
          sha256sum | cut -d' ' -f1)
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    resent=$(( $(metric tandem_splice_syn_retransmits_total) - before ))
    dropped=$(dropped_syns "$NS_BE1")
    if [ "$dropped" = 1 ]; then
      pass "$addressing, bind = $bind: the backend dropped the first SYN"
    else
      fail "$addressing, bind = $bind: the backend dropped the first SYN" "dropped=$dropped"
    fi
    if [ "$got" = "$want_sha" ] && [ "$resent" -ge 1 ]; then
      pass "$addressing, bind = $bind: completed after $resent SYN resend(s), sha256 matches" \
           "(took $ms ms; informational)"
    else
      fail "$addressing, bind = $bind: completed after the SYN was resent" \
           "sha=$got want=$want_sha resent=$resent ms=$ms"
    fi
  done
  sent=$(metric tandem_raw_sent_total)
  errors=$(metric tandem_raw_send_errors_total)
  if [ "$sent" -ge 2 ] && [ "$errors" -eq 0 ]; then
    pass "$addressing: $sent packets originated through the raw socket, no send error"
  else
    fail "$addressing: packets originated through the raw socket" "sent=$sent errors=$errors"
  fi
  timeouts=$(metric tandem_splice_connect_timeouts_total)
  if [ "$timeouts" -eq 0 ]; then
    pass "$addressing: no connect timeout"
  else
    fail "$addressing: no connect timeout" "$timeouts"
  fi
  stop_tandemd || fail "$addressing: tandemd exits cleanly"
  topo_down
done
finish
