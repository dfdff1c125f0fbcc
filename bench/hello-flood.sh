#!/usr/bin/env bash
# Side by side: a download through httpgw calm, while a HELLO flood goes to
# a socket that only reads and discards (what the flood costs the machine:
# its sender, the kernel, one reader), and under the same flood aimed at
# the gateway, for two builds (before/after), rounds interleaved (issue 11:
# a flood of valid HELLOs at full loopback speed must not cut a running
# download by more than 20 %).
# Usage: bench/hello-flood.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS] [MIB]
#   each dir holds httpgw and fastfilesrv; AFTER_BIN_DIR also helloflood
#   (go build -o DIR ./bench/cmd/helloflood). Both builds must speak the
#   same protocol version as helloflood, or the flood is only garbage to
#   one of them (version 3 builds get key pairs and an allowed list here).
# Prints one line per download (MiB/s and the gateway's CPU seconds per
# GiB from /proc/PID/stat), the medians per build and condition, and the
# datagrams each of the gateway's reads (system calls) carried.
set -u
ROUNDS=${3:-9}; MIB=${4:-256}
B=$(mktemp -d); F=$B/files; K=$B/k.key
mkdir -p $B/before $B/after $F; cp "$1"/httpgw "$1"/fastfilesrv $B/before/; cp "$2"/httpgw "$2"/fastfilesrv $B/after/
FLOOD="$2"/helloflood
head -c 32 /dev/urandom >$K; chmod 600 $K; head -c ${MIB}M /dev/urandom >$F/f.bin
start_variant() { # name httpport udpport adminport
  local v=$1 hp=$2 up=$3 ap=$4 gwk= sk=() pub
  # Protocol version 3 (Noise handshake): key pairs, the allowed list and
  # the gateway's public key; version 2 builds have only the PSK.
  if $B/$v/httpgw -h 2>&1 | grep -q -- -private-key; then
    pub=$($B/$v/httpgw genkey -out $B/$v-gw.key); echo "$pub" > $B/$v.gwpub
    gwk="-private-key $B/$v-gw.key -allowed-servers $B/$v-allowed.txt"
    for i in 1 2 3; do
      echo "$($B/$v/fastfilesrv genkey -out $B/$v-s$i.key) s$i" >> $B/$v-allowed.txt
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
gwpub() { [[ -f $B/$1.gwpub ]] && echo "-gateway-public-key $(cat $B/$1.gwpub)"; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
start_variant before 29080 29888 29081
start_variant after 39080 39888 39081
for p in 29080 39080; do
  for i in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -r 0-0 http://127.0.0.1:$p/f.bin); [[ $code == 206 ]] && break; sleep 0.5
  done
  echo "port $p ready ($code)"
done
$FLOOD -sink 127.0.0.1:29999 & echo $! > $B/sink.pid
sleep 2
one() { # variant cond httpport udpport
  local pid t0 t1 out fp=
  pid=$(cat $B/$1-gw.pid)
  if [[ $2 == flood ]]; then $FLOOD -key-file $K $(gwpub $1) 127.0.0.1:$4 >>$B/flood.log & fp=$!; sleep 0.3; fi
  if [[ $2 == sink ]]; then $FLOOD -key-file $K $(gwpub $1) 127.0.0.1:29999 >/dev/null & fp=$!; sleep 0.3; fi
  t0=$(ticks $pid)
  out=$(curl -s -o /dev/null -w '%{size_download} %{time_total}' http://127.0.0.1:$3/f.bin)
  t1=$(ticks $pid)
  [[ -n $fp ]] && kill $fp && wait $fp 2>/dev/null
  echo "$1 $2 $out $((t1-t0))" | awk -v tck=$(getconf CLK_TCK) '{mib=$3/1048576; printf "%s %s MiB/s=%.1f cpu_s_per_GiB=%.2f\n", $1, $2, mib/$4, ($5/tck)/(mib/1024)}'
}
for r in $(seq 1 $ROUNDS); do
  for v in before after; do
    if [[ $v == before ]]; then hp=29080 up=29888; else hp=39080 up=39888; fi
    one $v calm $hp $up
    one $v sink $hp $up
    one $v flood $hp $up
  done
done | tee $B/results
echo "HELLOs sent per flooded download: $(awk '{printf "%s ", $2}' $B/flood.log)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - $B/results <<'PY'
import sys, statistics as st, collections
d = collections.defaultdict(list)
for l in open(sys.argv[1]):
    v, c, r, cpu = l.split()
    d[v, c].append((float(r.split('=')[1]), float(cpu.split('=')[1])))
for v in ("before", "after"):
    calm = [x[0] for x in d[v, "calm"]]; sink = [x[0] for x in d[v, "sink"]]; fl = [x[0] for x in d[v, "flood"]]
    ratios = [f / c for c, f in zip(calm, fl)]
    print(f"{v}: median MiB/s calm {st.median(calm):.0f} flood-to-sink {st.median(sink):.0f} flood {st.median(fl):.0f}; "
          f"flood/calm: ratio of medians {st.median(fl)/st.median(calm):.2f}, median of per-round ratios {st.median(ratios):.2f} (min {min(ratios):.2f}); "
          f"flood/flood-to-sink {st.median(fl)/st.median(sink):.2f}; "
          f"gateway CPU s/GiB calm {st.median([x[1] for x in d[v, 'calm']]):.2f} flood {st.median([x[1] for x in d[v, 'flood']]):.2f}")
PY
for v in before after; do
  echo "$v gateway handshake counters: $(curl -s http://127.0.0.1:$([[ $v == before ]] && echo 29081 || echo 39081)/api/stats | python3 -c 'import json,sys; g=json.load(sys.stdin)["udp"]; r=g.get("reads"); print({k: g[k] for k in g if "hand" in k or k in ("received","reads","challenges")}, "datagrams per read: %.1f" % (g["received"]/r) if r else "")' 2>/dev/null)"
done
for f in $B/*.pid; do kill $(cat $f) 2>/dev/null; done
sleep 1; rm -rf "$B"
