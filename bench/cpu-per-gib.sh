#!/usr/bin/env bash
# Side-by-side CPU per GiB: httpgw before/after verification, HAProxy -> nginx.
set -u
# Usage: bench/cpu-per-gib.sh BEFORE_BIN_DIR AFTER_BIN_DIR (each with httpgw and fastfilesrv)
# Needs nginx and haproxy; makes a 1 GiB file, 3 servers per variant, 4 interleaved rounds.
B=$(mktemp -d); F=$B/files; K=$B/k.key
chmod 755 $B  # nginx workers run as nobody and must reach $F
mkdir -p $B/before $B/after $F; cp "$1"/httpgw "$1"/fastfilesrv $B/before/; cp "$2"/httpgw "$2"/fastfilesrv $B/after/
head -c 32 /dev/urandom >$K; chmod 600 $K; head -c 1G /dev/urandom >$F/big.bin
# Protocol version 3 (Noise handshake) key pairs, made with the AFTER
# build's genkey (an old "before" build may have none): one for each
# gateway, one per server, and each gateway's allowed-servers list.
GENKEY="$B/after/httpgw genkey -out"
start_variant() { # name httpport udpport adminport
  local v=$1 hp=$2 up=$3 ap=$4 gwk= sk=() pub i
  # Only builds whose -h lists -private-key get the new flags; version 2
  # builds have only the PSK.
  if $B/$v/httpgw -h 2>&1 | grep -q -- -private-key; then
    pub=$($GENKEY $B/$v-gw.key) || { echo "genkey failed" >&2; exit 1; }
    gwk="-private-key $B/$v-gw.key -allowed-servers $B/$v-allowed.txt"
    : > $B/$v-allowed.txt
    for i in 1 2 3; do
      echo "$($GENKEY $B/$v-s$i.key) s$i" >> $B/$v-allowed.txt
      sk[$i]="-private-key $B/$v-s$i.key -gateway-public-key $pub"
    done
  fi
  $B/$v/httpgw -key-file $K $gwk -http 127.0.0.1:$hp -udp 127.0.0.1:$up -admin 127.0.0.1:$ap -log-level warn -rate-limit 0 >$B/$v-gw.log 2>&1 &
  echo $! > $B/$v-gw.pid
  for i in 1 2 3; do
    $B/$v/fastfilesrv -key-file $K ${sk[$i]:-} -root $F -state $B/$v-s$i.state -log-level warn 127.0.0.1 $up >$B/$v-s$i.log 2>&1 &
    echo $! > $B/$v-s$i.pid
  done
}
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
start_variant before 28080 28888 28081
start_variant after 38080 38888 38081
mkdir -p $B/ng $B/ha
cat > $B/ng/nginx.conf <<NG
daemon off; master_process on; worker_processes 2; pid $B/ng/nginx.pid; error_log $B/ng/error.log warn;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; client_body_temp_path $B/ng/cb; proxy_temp_path $B/ng/pt; fastcgi_temp_path $B/ng/ft; uwsgi_temp_path $B/ng/ut; scgi_temp_path $B/ng/st;
 server { listen 127.0.0.1:48090; root $F; } }
NG
nginx -p $B/ng -c $B/ng/nginx.conf >$B/ng.log 2>&1 & echo $! > $B/ng.pid
cat > $B/ha/haproxy.cfg <<HA
global
    nbthread 2
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:48080
    default_backend be
backend be
    server origin 127.0.0.1:48090
HA
haproxy -db -f $B/ha/haproxy.cfg >$B/ha.log 2>&1 & echo $! > $B/ha.pid
# A child that exits while starting (a bad flag, a missing key) ends the
# run at once with its log, instead of polling for minutes.
stop_all() { for f in $B/*.pid; do kill $(cat $f) 2>/dev/null; done; }
check_alive() {
  local f
  for f in $B/*.pid; do
    kill -0 $(cat $f) 2>/dev/null && continue
    f=${f%.pid}.log
    echo "$(basename ${f%.log}) exited early; its log:" >&2; tail -n 20 $f >&2
    stop_all; rm -rf "$B"; exit 1
  done
}
for p in 28080 38080 48080; do
  for i in $(seq 1 600); do
    check_alive
    code=$(curl -s -o /dev/null -w '%{http_code}' -r 0-0 http://127.0.0.1:$p/big.bin); [[ $code == 206 ]] && break; sleep 0.5
  done
  [[ $code == 206 ]] || { echo "port $p not ready after 300 s ($code)" >&2; stop_all; rm -rf "$B"; exit 1; }
  echo "port $p ready ($code)"
done
sleep 2
one() { # name port pid
  local t0 t1 out
  t0=$(ticks $3)
  out=$(curl -s -o /dev/null -w '%{size_download} %{time_total} %{speed_download}' http://127.0.0.1:$2/big.bin)
  t1=$(ticks $3)
  echo "$1 ticks=$((t1-t0)) $out"
}
for r in 1 2 3 4; do
  one before 28080 $(cat $B/before-gw.pid)
  one after 38080 $(cat $B/after-gw.pid)
  one haproxy 48080 $(cat $B/ha.pid)
done
# Field names differ between builds (CamelCase before issue 13, snake_case after): print every byte and request counter.
show_engine() { curl -s http://127.0.0.1:$2/api/stats | python3 -c 'import json,sys; e=json.load(sys.stdin)["engine"]; print(sys.argv[1], "engine:", {k:v for k,v in e.items() if "byte" in k.lower() or "request" in k.lower()})' "$1"; }
show_engine after 38081
show_engine before 28081
stop_all
rm -rf "$B"
