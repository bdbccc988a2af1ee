#!/usr/bin/env bash
# Splice mode with bind = data: the backend is chosen from the client's first data segment,
# real kernel TCP on both ends, transparent and snat addressing.
#   - TLS routed by SNI: openssl s_server on both backends with their own self-signed
#     certificates (CN a.example / b.example) and their own files; openssl s_client and curl with
#     -servername / --resolve reach the backend their name routes to (certificate CN, the bytes
#     of a 1 MiB file by sha256), twice in a row each, which round robin alone would not do;
#   - HTTP routed by the Host header: python3 -m http.server on both backends;
#   - a name no rule matches still connects (the scheduler chooses);
#   - a server-speaks-first protocol (a greeting server) works with bind = data: the client sends
#     nothing, tandemd binds the scheduler's backend on its timer and the greeting arrives;
#   - tandemd counted the routed connections and dropped nothing but the cookie ACKs it absorbs
#     until the first data (splice_bind_wait) and early data it could not yet forward.
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
require_env TANDEMD
require_kernel
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || skip_all "$PYTHON not installed"
command -v openssl >/dev/null || skip_all "openssl not installed"

# Certificates and content, per backend: a.example on be1, b.example on be2.
for name in a b; do
  mkdir -p "$TDM_TMP/$name"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=$name.example" -keyout "$TDM_TMP/$name/key.pem" -out "$TDM_TMP/$name/cert.pem" \
    >/dev/null 2>&1 || { fail "openssl req makes a certificate for $name.example"; finish; }
  echo "backend-$name" >"$TDM_TMP/$name/who"
  head -c $((1024 * 1024)) /dev/urandom >"$TDM_TMP/$name/file"
done
sha_a=$(sha256sum "$TDM_TMP/a/file" | cut -d' ' -f1)
sha_b=$(sha256sum "$TDM_TMP/b/file" | cut -d' ' -f1)

# drops other than the expected ones (see the file comment)
unexpected_drops() {
  echo $(( $(metric tandem_drops_total) - $(metric tandem_drops_total 'reason="splice_pending"') \
           - $(metric tandem_drops_total 'reason="splice_bind_wait"') ))
}

# cn_via NAME: the CN of the certificate the server behind the VIP presents for SNI NAME.
cn_via() {
  in_ns "$NS_CLI" timeout 10 openssl s_client -connect "$VIP:443" -servername "$1" </dev/null \
    2>/dev/null | openssl x509 -noout -subject 2>/dev/null | sed 's/.*CN *= *//'
}

# https_get NAME PATH: the body of https://NAME/PATH, NAME resolved to the VIP (SNI = NAME).
https_get() {
  in_ns "$NS_CLI" curl -sk --noproxy '*' --max-time 10 --resolve "$1:443:$VIP" "https://$1/$2"
}

for addressing in transparent snat; do
  topo_up "$addressing" || { fail "$addressing: topology"; finish; }
  be=("$NS_BE1" "$NS_BE2")
  ip=("$BE1_IP" "$BE2_IP")
  i=0
  for name in a b; do
    bg_start "tls-$name" "${be[$i]}" sh -c "cd '$TDM_TMP/$name' && exec openssl s_server -quiet \
      -accept ${ip[$i]}:8443 -cert cert.pem -key key.pem -WWW"
    bg_start "http-$name" "${be[$i]}" "$PYTHON" -m http.server 8000 --bind "${ip[$i]}" \
      --directory "$TDM_TMP/$name"
    bg_start "greet-$name" "${be[$i]}" "$PYTHON" -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${ip[$i]}', 2525)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b'220 greeting from backend-$name\\r\\n'); c.close()
"
    i=$((i + 1))
  done
  wait_listen "$NS_BE1" "$BE1_IP:8443" && wait_listen "$NS_BE2" "$BE2_IP:8443" &&
    wait_listen "$NS_BE1" "$BE1_IP:8000" && wait_listen "$NS_BE2" "$BE2_IP:8000" &&
    wait_listen "$NS_BE1" "$BE1_IP:2525" && wait_listen "$NS_BE2" "$BE2_IP:2525" ||
    fail "$addressing: servers listen"

  conf=$TDM_TMP/route-$addressing.conf
  write_config "$conf" --extra "$(service_section tls "$VIP:443" "$BE1_IP:8443 $BE2_IP:8443")
bind = data
route.1 = sni:a.example -> $BE1_IP:8443
route.2 = sni:b.example -> $BE2_IP:8443
$(service_section http "$VIP:8000" "$BE1_IP:8000 $BE2_IP:8000")
bind = data
route.1 = host:one.example -> $BE1_IP:8000
route.2 = host:*.two.example -> $BE2_IP:8000
$(service_section greet "$VIP:2525" "$BE1_IP:2525 $BE2_IP:2525")
bind = data"
  sed -i 's/^mode = passthrough/mode = splice/' "$conf"
  if ! start_tandemd "$conf"; then
    fail "$addressing: tandemd starts with bind = data routes" "$(cat "$TDM_TANDEMD_LOG")"
    topo_down
    continue
  fi

  for name in a a b b; do
    cn=$(cn_via "$name.example")
    if [ "$cn" = "$name.example" ]; then
      pass "$addressing: s_client -servername $name.example reached the backend with CN $cn"
    else
      fail "$addressing: s_client -servername $name.example reached its backend" "CN '$cn'"
    fi
  done
  for name in b a b a; do
    who=$(https_get "$name.example" who)
    if [ "$who" = "backend-$name" ]; then
      pass "$addressing: curl https://$name.example/who answered by $who"
    else
      fail "$addressing: curl https://$name.example/who answered by backend-$name" "got '$who'"
    fi
  done
  for name in a b; do
    want=$sha_a
    [ "$name" = b ] && want=$sha_b
    got=$(https_get "$name.example" file | sha256sum | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then
      pass "$addressing: 1 MiB over TLS from the $name.example backend, sha256 matches"
    else
      fail "$addressing: 1 MiB over TLS from the $name.example backend, sha256 matches" "got $got"
    fi
  done

  for host in one.example www.two.example one.example www.two.example; do
    want=backend-a
    [ "$host" = www.two.example ] && want=backend-b
    who=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 10 -H "Host: $host" \
          "http://$VIP:8000/who")
    if [ "$who" = "$want" ]; then
      pass "$addressing: HTTP Host $host answered by $who"
    else
      fail "$addressing: HTTP Host $host answered by $want" "got '$who'"
    fi
  done
  who=$(in_ns "$NS_CLI" curl -s --noproxy '*' --max-time 10 -H "Host: nomatch.test" \
        "http://$VIP:8000/who")
  if [ "$who" = backend-a ] || [ "$who" = backend-b ]; then
    pass "$addressing: HTTP Host no rule matches: the scheduler chose ($who)"
  else
    fail "$addressing: HTTP Host no rule matches: the scheduler chose" "got '$who'"
  fi

  greeting=$(in_ns "$NS_CLI" timeout 10 "$PYTHON" -c "
import socket
c = socket.create_connection(('$VIP', 2525), timeout=8)
print(c.recv(100).decode().strip())")
  case "$greeting" in
    "220 greeting from backend-"[ab])
      pass "$addressing: server speaks first, bind = data: '$greeting' arrived" ;;
    *) fail "$addressing: server speaks first, bind = data: the greeting arrives" "got '$greeting'" ;;
  esac

  routed=$(metric tandem_splice_routed_total)
  misses=$(metric tandem_splice_route_misses_total)
  # 4 s_client + 4 + 2 curl over TLS + 4 HTTP, all routed; the unmatched Host at least one miss.
  if [ "$routed" -ge 14 ] && [ "$misses" -ge 1 ]; then
    pass "$addressing: $routed connections routed by rule, $misses by the scheduler"
  else
    fail "$addressing: routed connections counted" "routed=$routed misses=$misses"
  fi
  # The first data segment was held while its backend leg opened, then forwarded (not dropped
  # for the client to resend).
  released=$(metric tandem_nfq_hold_released_total)
  if [ "$released" -ge 15 ]; then
    pass "$addressing: $released first data segments held and forwarded once their leg was up"
  else
    fail "$addressing: first data segments held and forwarded" "hold_released=$released"
  fi
  bad=$(unexpected_drops)
  if [ "$bad" -eq 0 ]; then
    pass "$addressing: no drop but splice_bind_wait and splice_pending"
  else
    fail "$addressing: no drop but splice_bind_wait and splice_pending" "$bad other drops"
  fi
  stop_tandemd || fail "$addressing: tandemd exits cleanly"
  topo_down
done
finish
