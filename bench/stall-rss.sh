#!/usr/bin/env bash
# stall-rss.sh: the gateway's memory with clients that stop reading, and a
# normal client's rate meanwhile (issue 11; docs/BENCHMARKS.md, "Hostile
# clients").
#
#   bench/stall-rss.sh                  # build ./cmd/httpgw and measure it
#   bench/stall-rss.sh path/to/httpgw   # measure another build (e.g. an older commit)
#
# Environment: STALL_HOLD (default 40s), STALL_CONNS (100), STALL_STREAMS
# (32), STALL_ROOT (a folder with big.bin to reuse; default a fresh
# 256 MiB file in a temp dir), STALL_OUT (where logs and profiles go;
# default a temp dir, printed).
#
# Two runs, each against a fresh `httpgw -demo` (three embedded servers,
# TLS with a self-signed certificate, rate and per-IP limits off, standing
# for many client addresses):
#   calm:  one normal download of big.bin (HTTP/1.1 over TLS), alone;
#   stall: STALL_CONNS HTTP/2 connections x STALL_STREAMS streams ask for
#          big.bin and never read; the gateway's VmRSS is sampled every
#          second; a normal download starts 1 s after every stalled
#          stream has its response headers; heap and goroutine profiles
#          are taken at 30 s from the admin listener.
set -euo pipefail
cd "$(dirname "$0")/.."

hold=${STALL_HOLD:-40s}
conns=${STALL_CONNS:-100}
streams=${STALL_STREAMS:-32}
out=${STALL_OUT:-$(mktemp -d /tmp/stall-rss.XXXXXX)}
mkdir -p "$out"
bin=${1:-}
if [[ -z $bin ]]; then
	bin=$out/httpgw
	go build -o "$bin" ./cmd/httpgw
fi
go build -o "$out/stallclient" ./bench/cmd/stallclient
root=${STALL_ROOT:-}
if [[ -z $root ]]; then
	root=$out/root
	mkdir -p "$root"
	head -c 256M /dev/urandom >"$root/big.bin"
fi

# A free port pair: HTTP on p, UDP on p+1, admin on p+2.
port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		if ! ss -Htan "sport = :$p or sport = :$((p + 2))" | grep -q . &&
			! ss -Huan "sport = :$((p + 1))" | grep -q .; then
			echo "$p"
			return
		fi
	done
	echo "no free port" >&2
	exit 1
}

gw=
stop() {
	if [[ -n $gw ]]; then
		kill "$gw" 2>/dev/null || true
		wait "$gw" 2>/dev/null || true
		gw=
	fi
}
trap stop EXIT

# start NAME: a fresh gateway; sets gw and url.
start() {
	local p
	p=$(port)
	"$bin" -demo -demo-root "$root" -tls-self-signed \
		-rate-limit 0 -max-conns-per-ip 0 -max-requests-per-ip 0 \
		-http "127.0.0.1:$p" -udp "127.0.0.1:$((p + 1))" -admin "127.0.0.1:$((p + 2))" \
		-log-level warn >"$out/gw-$1.log" 2>&1 &
	gw=$!
	url=https://127.0.0.1:$p/big.bin
	admin=127.0.0.1:$((p + 2))
	for i in $(seq 180); do
		if curl -sk -o /dev/null -w '%{http_code}' -r 0-0 "$url" 2>/dev/null | grep -q 206; then
			echo "$1: gateway $gw ready after ${i}s, RSS $(grep VmRSS /proc/$gw/status | tr -s ' ')"
			return
		fi
		sleep 1
	done
	echo "$1: gateway not ready after 180 s (log: $out/gw-$1.log)" >&2
	exit 1
}

start calm
"$out/stallclient" -url "$url" -pid "$gw" -conns 0 -normal-after 0 -hold 10m | tee "$out/client-calm.log" | grep normal
stop

start stall
mkdir -p "$out/profiles"
"$out/stallclient" -url "$url" -pid "$gw" -conns "$conns" -streams "$streams" -hold "$hold" \
	-admin "$admin" -profile-dir "$out/profiles" >"$out/client-stall.log"
grep -E '^t=( 1|10|20|30)s|normal|summary|first failure|profile' "$out/client-stall.log"
stop
echo "logs and profiles in $out (go tool pprof -top $out/profiles/heap.pprof)"
