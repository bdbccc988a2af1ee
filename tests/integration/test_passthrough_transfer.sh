#!/usr/bin/env bash
# Stock clients and servers through tandemd in passthrough mode, with transparent and with snat
# addressing:
#   - curl fetches a 5 MiB random file from `python3 -m http.server` behind the VIP, twice (round
#     robin: once from each backend); the sha256 must match, and each backend's access log must
#     show the expected source address (the client's, or the SNAT address).
#   - iperf3 for 3 s in each direction (-R too) through a second service; it must complete with
#     non-trivial throughput (a floor against stalls, not a benchmark). The numbers are printed.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD TCPCHECK
require_kernel

PYTHON=/usr/bin/python3  # Debian's, whatever python3 comes first in PATH
IPERF_FLOOR_MBPS=10
FILE_BYTES=$((5 * 1024 * 1024))

[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
command -v iperf3 >/dev/null || skip_all "iperf3 not installed"
command -v curl >/dev/null || skip_all "curl not installed"

mkdir -p "$TDM_TMP/www"
head -c "$FILE_BYTES" /dev/urandom >"$TDM_TMP/www/file"
want_sha=$(sha256sum "$TDM_TMP/www/file" | cut -d' ' -f1)

# bytes_through DIRECTION: tandem_bytes_total{direction=DIRECTION} (IP bytes tandemd forwarded),
# plus what its kernel fast path translated (TANDEM_FASTPATH=on; not split by direction, 0 off).
bytes_through() {
  echo $(( $(metric tandem_bytes_total "direction=\"$1\"") + $(metric tandem_fastpath_bytes_total) ))
}

# iperf3_run NAME DIRECTION ARGS...: one iperf3 client run from the client namespace; prints the
# result. DIRECTION is the tandemd byte counter that must carry the transfer.
iperf3_run() {
  local name=$1 direction=$2 json before after
  shift 2
  json=$TDM_TMP/iperf3.json
  before=$(bytes_through "$direction")
  if ! in_ns "$NS_CLI" timeout 30 iperf3 -c "$VIP" -p 5201 -t 3 -J "$@" >"$json" 2>&1; then
    fail "$name: iperf3 completes" "$(tail -n 20 "$json")"
    return
  fi
  after=$(bytes_through "$direction")
  local rx_mbps tx_mbps retrans rx_bytes
  read -r rx_mbps tx_mbps retrans rx_bytes < <("$PYTHON" - "$json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
print("%.0f %.0f %d %d" % (e["sum_received"]["bits_per_second"] / 1e6,
                           e["sum_sent"]["bits_per_second"] / 1e6,
                           e["sum_sent"].get("retransmits", 0), e["sum_received"]["bytes"]))
EOF
  )
  log "iperf3 $name: received $rx_mbps Mbit/s (sent $tx_mbps Mbit/s, $retrans retransmits;" \
    "so far tandemd dropped $(metric tandem_drops_total), the kernel's queue" \
    "$(metric tandem_nfq_kernel_dropped_total) packets)"
  if [ "${rx_mbps:-0}" -ge "$IPERF_FLOOR_MBPS" ]; then
    pass "$name: iperf3 completes, $rx_mbps Mbit/s received (floor $IPERF_FLOOR_MBPS)"
  else
    fail "$name: iperf3 completes, $rx_mbps Mbit/s received (floor $IPERF_FLOOR_MBPS)" \
      "$(head -c 2000 "$json")"
  fi
  # The payload must have crossed tandemd (IP bytes >= payload bytes), not some other path.
  if [ $((after - before)) -ge "${rx_bytes:-1}" ]; then
    pass "$name: tandemd forwarded it ($((after - before)) IP bytes $direction)"
  else
    fail "$name: tandemd forwarded it" "tandem_bytes_total{direction=\"$direction\"} rose by" \
      "$((after - before)), iperf3 received ${rx_bytes:-?} bytes"
  fi
}

run_addressing() {
  local addressing=$1 name
  if ! topo_up "$addressing"; then
    fail "$addressing: topology" "topo_up failed"
    topo_down
    return
  fi
  local expect_src=$CLIENT_IP
  [ "$addressing" = snat ] && expect_src=$SNAT_IP

  bg_start http-be1 "$NS_BE1" "$PYTHON" -m http.server 8080 --bind "$BE1_IP" \
    --directory "$TDM_TMP/www"
  bg_start http-be2 "$NS_BE2" "$PYTHON" -m http.server 8080 --bind "$BE2_IP" \
    --directory "$TDM_TMP/www"
  bg_start iperf3-be1 "$NS_BE1" iperf3 -s -B "$BE1_IP" -p 5201
  if ! { wait_listen "$NS_BE1" "$BE1_IP:8080" && wait_listen "$NS_BE2" "$BE2_IP:8080" &&
      wait_listen "$NS_BE1" "$BE1_IP:5201"; }; then
    fail "$addressing: servers listen"
  fi

  write_config "$TDM_TMP/tandemd.conf" --addressing "$addressing" \
    --extra "$(service_section perf "$VIP:5201" "$BE1_IP:5201")"
  if ! start_tandemd "$TDM_TMP/tandemd.conf"; then
    fail "$addressing: tandemd starts"
    topo_down
    return
  fi

  local i got_sha before after
  before=$(bytes_through from_backend)
  for i in 1 2; do
    name="$addressing: http GET #$i of a 5 MiB file via the VIP, sha256 matches"
    rm -f "$TDM_TMP/got"
    if ! out=$(in_ns "$NS_CLI" curl -sS --noproxy '*' --max-time 30 --fail \
        -o "$TDM_TMP/got" "http://$VIP/file" 2>&1); then
      fail "$name" "curl: $out"
      continue
    fi
    got_sha=$(sha256sum "$TDM_TMP/got" | cut -d' ' -f1)
    if [ "$got_sha" = "$want_sha" ]; then
      pass "$name"
    else
      fail "$name" "want $want_sha" "got  $got_sha ($(stat -c %s "$TDM_TMP/got") bytes)"
    fi
  done
  after=$(bytes_through from_backend)
  name="$addressing: the two files crossed tandemd"
  if [ $((after - before)) -ge $((2 * FILE_BYTES)) ]; then
    pass "$name ($((after - before)) IP bytes from the backends)"
  else
    fail "$name" "tandem_bytes_total{direction=\"from_backend\"} rose by $((after - before))"
  fi
  # python's http.server logs 'ADDR - - [date] "GET /file HTTP/1.1" 200 -' on stderr.
  name="$addressing: each backend served one GET, from source $expect_src"
  local n1 n2
  n1=$(grep -c "^$expect_src - .*\"GET /file HTTP/1.1\" 200" "$TDM_TMP/http-be1.log")
  n2=$(grep -c "^$expect_src - .*\"GET /file HTTP/1.1\" 200" "$TDM_TMP/http-be2.log")
  if [ "$n1" -eq 1 ] && [ "$n2" -eq 1 ]; then
    pass "$name"
  else
    fail "$name" "be1 log:" "$(tail -n 5 "$TDM_TMP/http-be1.log")" "be2 log:" \
      "$(tail -n 5 "$TDM_TMP/http-be2.log")"
  fi

  iperf3_run "$addressing: upload (client to backend)" from_client
  iperf3_run "$addressing: download (-R, backend to client)" from_backend -R

  check "$addressing: tandemd exits 0 on SIGTERM and removes its rules" stop_tandemd
  topo_down
}

for addressing in transparent snat; do
  run_addressing "$addressing"
done
finish
