# shellcheck shell=bash
# keepalived + conntrackd + Linux DNAT on the proxy pair topology (tests/integration/pair_lib.sh),
# shared by bench/failover_bench.sh and bench/zeroloss_bench.sh. Functions only: source lib.sh,
# pair_lib.sh and call pair_init first. DNAT of VIP:80 to be1/be2 port 8080, alternately.

CTD_PORT=3780

# ka_node X NS MY_BACK PEER_BACK PRIORITY STATE MODE: configs, DNAT rules and daemons on one node.
ka_node() {
  local x=$1 ns=$2 me=$3 peer=$4 prio=$5 state=$6 mode=$7
  local d=$TDM_TMP/ka-$x
  mkdir -p "$d"
  local loose=1
  [ "$mode" = strict ] && loose=0
  in_ns "$ns" sysctl -qw net.netfilter.nf_conntrack_tcp_loose=$loose || return 1
  # DNAT of new flows to the pool, alternately (a standby without the synced entry would guess).
  in_ns "$ns" iptables -t nat -A PREROUTING -d "$VIP/32" -p tcp --dport 80 \
    -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination "$BE1_IP:8080" || return 1
  in_ns "$ns" iptables -t nat -A PREROUTING -d "$VIP/32" -p tcp --dport 80 \
    -j DNAT --to-destination "$BE2_IP:8080" || return 1
  in_ns "$ns" iptables -t mangle -A PREROUTING -m conntrack --ctstate INVALID -j DROP || return 1
  cat >"$d/conntrackd.conf" <<EOF
Sync {
  Mode FTFW {
    DisableExternalCache Off
    CommitTimeout 1800
    PurgeTimeout 5
  }
  UDP {
    IPv4_address $me
    IPv4_Destination_Address $peer
    Port $CTD_PORT
    Interface back
    SndSocketBuffer 1249280
    RcvSocketBuffer 1249280
    Checksum on
  }
}
General {
  Systemd off
  HashSize 32768
  HashLimit 1048576
  LogFile $d/conntrackd.log
  Syslog off
  LockFile $d/conntrackd.lock
  UNIX {
    Path $d/conntrackd.sock
  }
  NetlinkBufferSize 2097152
  NetlinkBufferSizeMaxGrowth 8388608
  Filter From Userspace {
    Protocol Accept {
      TCP
    }
    Address Ignore {
      IPv4_address 127.0.0.1
      IPv4_address $me
      IPv4_address $peer
    }
  }
}
EOF
  # The notify script of conntrack-tools' primary-backup.sh, with our config file.
  cat >"$d/notify.sh" <<EOF
#!/bin/sh
C="conntrackd -C $d/conntrackd.conf"
echo "\$(date +%s%N) \$1 begin" >>$d/notify.log
case "\$1" in
  master) \$C -c; \$C -f; \$C -R; \$C -B ;;
  backup) \$C -c; \$C -f; \$C -R; \$C -n ;;
  fault) \$C -t ;;
esac
echo "\$(date +%s%N) \$1 end" >>$d/notify.log
EOF
  chmod 755 "$d/notify.sh"
  cat >"$d/keepalived.conf" <<EOF
global_defs {
  router_id node-$x
  script_user root
  vrrp_version 3
  vrrp_rt_priority 50
  vrrp_rlimit_rttime 5000000
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 5
  vrrp_garp_lower_prio_repeat 0
  vrrp_min_garp true
}
vrrp_instance pair {
  state $state
  interface front
  virtual_router_id 51
  priority $prio
  advert_int 0.01
  nopreempt
  virtual_ipaddress {
    $VIP/32 dev front
    $GATEWAY_IP/32 dev back
  }
  notify_master "$d/notify.sh master"
  notify_backup "$d/notify.sh backup"
  notify_fault "$d/notify.sh fault"
}
EOF
  bg_start "conntrackd-$x" "$ns" conntrackd -C "$d/conntrackd.conf"
  eval "CTD_PID_$x=\$BG_PID"
  for _ in $(seq 1 50); do [ -S "$d/conntrackd.sock" ] && break; sleep 0.1; done
  [ -S "$d/conntrackd.sock" ] || { echo "conntrackd $x did not start" >&2; return 1; }
  bg_start "keepalived-$x" "$ns" keepalived -n -l -D -P -R -f "$d/keepalived.conf" \
    -p "$d/keepalived.pid" -r "$d/vrrp.pid" -c "$d/checkers.pid" -b "$d/bfd.pid"
  eval "KA_PID_$x=\$BG_PID"
}

# ka_pair MODE: A master (holds VIP and gateway), B backup; conntrackd on both.
ka_pair() {
  ka_node a "$NS_PA" "$A_BACK" "$B_BACK" 200 MASTER "$1" || return 1
  wait_for 5 has_addr "$NS_PA" front "$VIP" || return 1
  ka_node b "$NS_PB" "$B_BACK" "$A_BACK" 100 BACKUP "$1" || return 1
  # B backup: its notify ran, it holds no address.
  wait_for 5 grep -q 'backup end' "$TDM_TMP/ka-b/notify.log" || return 1
  ! has_addr "$NS_PB" front "$VIP"
}

# ka_crash X: SIGKILL of node X's keepalived (parent and VRRP child) and conntrackd, then its
# links down.
ka_crash() {
  local x=$1 ns=$NS_PA vrrp parent ctd
  [ "$x" = b ] && ns=$NS_PB
  parent=$(eval echo "\$KA_PID_$x")
  ctd=$(eval echo "\$CTD_PID_$x")
  vrrp=$(cat "$TDM_TMP/ka-$x/vrrp.pid" 2>/dev/null)
  # The VRRP child: from its PID file, killed only if it really is our keepalived's child.
  if [ -n "$vrrp" ] && [ "$(awk '{print $4}' "/proc/$vrrp/stat" 2>/dev/null)" = "$parent" ]; then
    kill -KILL "$vrrp"
  fi
  kill -KILL "$parent" "$ctd"
  wait "$parent" "$ctd" 2>/dev/null
  ip -n "$ns" link set front down
  ip -n "$ns" link set back down
}
