#!/usr/bin/env bash
# bench/run.sh: the benchmark harness of HttpGw + FastFileSrv.
#
# One command measures the gateway side by side with nginx, HAProxy and
# aria2 on this machine and prints one table of absolute figures and ratios:
#
#   bench/run.sh                 # everything, 1 GiB file (~10 min on 2 cores)
#   bench/run.sh --quick         # smoke run, smaller sizes and durations
#   bench/run.sh --only a,b      # some scenarios only
#   bench/run.sh --size 512M     # the large file's size
#   bench/run.sh --update-docs   # also rewrite the marked section of docs/BENCHMARKS.md
#
# Scenarios (see bench/README.md):
#   a  loopback, one large file, one curl: httpgw (3 servers, 1452-B and auto
#      datagrams) vs nginx proxy_pass vs HAProxy vs nginx direct
#   b  4 KiB files, wrk -t2 -c64: req/s and p99, same four
#   c  (root) three 100 Mbit/s links in network namespaces: httpgw vs aria2
#      on three nginx mirrors vs one link
#   d  (root) same links with 2% and 5% loss, and with one link 10x slower
#   e  one of three servers SIGKILLed halfway through a download
#   f  gateway peak RSS while 10 clients fetch the large file at once
#   g  (root) the WAN grid over emulated links with delay and loss: a Go
#      program of its own, go run ./bench/wan (see bench/README.md)
#
# Traffic goes only to 127.0.0.0/8 and to addresses inside the network
# namespaces this script creates; every process it starts and every
# namespace it creates is removed on exit, even on failure.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR=$BENCH_DIR/out
DOCS=$REPO/docs/BENCHMARKS.md
ORIG_ARGS=("$@")

QUICK=0
ONLY=""
SIZE_ARG=""
UPDATE_DOCS=0
KEEP_TMP=0

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --quick          smaller sizes and durations (a smoke run of a few minutes)
  --only a,b,...   run only these scenarios (a b c d e f)
  --size SIZE      large file size for a, e, f (e.g. 512M, 1G; default 1G, 256M with --quick)
  --update-docs    replace the bench section of docs/BENCHMARKS.md with this run's table
  --keep-tmp       keep the temporary directory (files, configs, logs)
  -h, --help       this help
EOF
}

while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--only) [[ $# -ge 2 ]] || { echo "run.sh: --only needs a list, e.g. --only a,b" >&2; exit 2; }; ONLY=$2; shift ;;
	--only=*) ONLY=${1#--only=} ;;
	--size) [[ $# -ge 2 ]] || { echo "run.sh: --size needs a value, e.g. --size 512M" >&2; exit 2; }; SIZE_ARG=$2; shift ;;
	--size=*) SIZE_ARG=${1#--size=} ;;
	--update-docs) UPDATE_DOCS=1 ;;
	--keep-tmp) KEEP_TMP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done

# ---------------------------------------------------------------- helpers

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%T)" "$*" >&2; }
die() {
	printf '[%s] ERROR: %s\n' "$(date +%T)" "$*" >&2
	exit 1
}

# parse_size 512M -> bytes (K/M/G are binary units; KiB/MiB/GiB accepted).
parse_size() {
	local s=$1 n unit
	if [[ ! $s =~ ^([0-9]+)([KkMmGg]?)(i?[Bb])?$ ]]; then
		die "invalid size '$s' (want e.g. 4096, 200M, 1G)"
	fi
	n=${BASH_REMATCH[1]}
	unit=${BASH_REMATCH[2]}
	case $unit in
	K | k) n=$((n << 10)) ;;
	M | m) n=$((n << 20)) ;;
	G | g) n=$((n << 30)) ;;
	esac
	((n > 0)) || die "size must be positive: '$s'"
	echo "$n"
}

human_size() { # bytes -> "1 GiB" / "200 MiB" / "4 KiB"
	awk -v b="$1" 'BEGIN{
		if (b >= 1073741824 && b % 1073741824 == 0) printf "%d GiB", b/1073741824;
		else if (b >= 1048576) printf "%g MiB", b/1048576;
		else if (b >= 1024) printf "%g KiB", b/1024;
		else printf "%d B", b }'
}

calc() { awk "BEGIN{ printf \"%s\", $* }"; }
# fmt_rate BYTES_PER_S -> "1234 MB/s" (decimal MB)
fmt_rate() { awk -v r="$1" 'BEGIN{ if (r >= 100e6) printf "%.0f MB/s", r/1e6; else printf "%.1f MB/s", r/1e6 }'; }
# fmt_x A B -> "1.23×"; 3 decimals near a one-decimal value (every goal is
# one), so that "1.00×" never stands for 0.996 next to NOT MET.
fmt_x() {
	awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) { printf "n/a"; exit }
		r = a / b; d = r * 10 - int(r * 10 + 0.5); if (d < 0) d = -d
		if (d < 0.05) printf "%.3f×", r; else printf "%.2f×", r }'
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a <= b) }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN{ print (a > b) ? a : b }'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.3f", b - a }'; }

selected() { [[ ",$SCENARIOS," == *",$1,"* ]]; }

# ----------------------------------------------------------- parameters

ALL="a,b,c,d,e,f"
SCENARIOS=${ONLY:-$ALL}
SCENARIOS=${SCENARIOS// /}
IFS=, read -r -a _sel <<<"$SCENARIOS"
for s in "${_sel[@]}"; do
	[[ ",$ALL," == *",$s,"* ]] || die "unknown scenario '$s' in --only (choose from $ALL)"
done

if ((QUICK)); then
	SIZE=$(parse_size "${SIZE_ARG:-256M}")
	NS_SIZE=$(parse_size 32M)
	REPS=2        # curl runs per target in (a), best kept
	NS_REPS=1     # runs per target on the namespace links
	WRK_DUR=3     # seconds per wrk run in (b)
	WRK_REPS=1    # wrk runs per target in (b), best kept
	E_REPS=1      # undisturbed/disturbed pairs in (e), best of each kept
	F_CLIENTS=10
else
	SIZE=$(parse_size "${SIZE_ARG:-1G}")
	NS_SIZE=$(parse_size 200M)
	REPS=3
	NS_REPS=2
	WRK_DUR=10
	WRK_REPS=2
	E_REPS=2
	F_CLIENTS=10
fi
((NS_SIZE <= SIZE)) || NS_SIZE=$SIZE
NFILES=100
SMALL=4096
LINK_RATE=100mbit
SLOW_RATE=10mbit

# A transfer that moves less than 1 MB/s for 15 s is abandoned; none lasts
# longer than this many seconds.
big_timeout() { echo $((60 + $1 / 10000000)); } # bytes -> seconds (≥10 MB/s)

# ------------------------------------------------ processes and cleanup

TMP=""
DL=""
PIDS=()
NETNS=()
POLICY_RC_CREATED=0
LAST_PID=""

# spawn LOGFILE CMD...: run CMD in the background in its own process group.
spawn() {
	local logf=$1
	shift
	setsid "$@" >"$logf" 2>&1 </dev/null 9>&- &
	LAST_PID=$!
	disown "$LAST_PID" # no "Killed" job notices; still reaped by this shell
	PIDS+=("$LAST_PID")
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop_pid PID [SIGNAL]: signal the process group, then KILL it after 5 s.
stop_pid() {
	local pid=$1 sig=${2:-TERM} i
	if alive "$pid"; then
		kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local rc=$? i ns
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		log "stopping ${#PIDS[@]} background processes"
		for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
			stop_pid "${PIDS[i]}" || true
		done
	fi
	for ns in "${NETNS[@]}"; do
		ip netns del "$ns" 2>/dev/null || warn "could not delete network namespace $ns"
	done
	if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
	if [[ -n $DL && -d $DL && $DL != "$TMP"/* ]]; then rm -rf "$DL"; fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ -d $TMP/logs ]]; then
			rm -rf "$OUT_DIR/logs"
			mkdir -p "$OUT_DIR"
			cp -r "$TMP/logs" "$OUT_DIR/logs" 2>/dev/null || true
		fi
		if ((KEEP_TMP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
	fi
	if ((rc != 0)); then
		if ((${#ROWS[@]})) && [[ -n ${START_DATE:-} ]]; then
			write_report "INCOMPLETE: the run stopped with status $rc" 2>/dev/null || true
			echo
			cat "$OUT_DIR/results.md" 2>/dev/null || true
			echo
		fi
		log "exit status $rc (logs in bench/out/logs/; the table so far, if any, in bench/out/results.md)"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ set-up steps

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

install_packages() {
	local missing=() c
	local -A pkg_of=([nginx]=NGINX [haproxy]=haproxy [wrk]=wrk [aria2c]=aria2 [curl]=curl [ip]=iproute2 [tc]=iproute2 [nft]=nftables [ss]=iproute2 [setsid]=util-linux)
	for c in nginx haproxy wrk aria2c curl ip tc nft ss setsid; do
		command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}")
	done
	((${#missing[@]})) || return 0
	((IS_ROOT)) || die "missing commands for packages: ${missing[*]}; run as root (or install them) first"
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
	log "installing Debian packages: ${missing[*]} (apt-get update first)"
	apt-get update -q >"$TMP/logs/apt.log" 2>&1 || die "apt-get update failed (see bench/out/logs/apt.log)"
	local pkgs=() p
	for p in "${missing[@]}"; do
		if [[ $p == NGINX ]]; then
			if apt-cache show nginx-light >/dev/null 2>&1; then p=nginx-light; else p=nginx; fi
		fi
		[[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
	done
	# Services already running before the install are not ours to stop.
	local pidf pid
	local -A before=()
	for pidf in /run/nginx.pid /run/haproxy.pid; do
		[[ -s $pidf ]] && before[$pidf]=$(head -n1 "$pidf")
	done
	# Keep the packages' maintainer scripts from starting system services.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >>"$TMP/logs/apt.log" 2>&1 ||
		die "apt-get install ${pkgs[*]} failed (see bench/out/logs/apt.log)"
	if ((POLICY_RC_CREATED)); then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=0
	fi
	# If the install started a service anyway, stop it (by the pid it wrote).
	for pidf in /run/nginx.pid /run/haproxy.pid; do
		[[ -s $pidf ]] || continue
		pid=$(head -n1 "$pidf")
		[[ $pid != "${before[$pidf]:-}" ]] || continue
		if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
			log "stopping the system service the package started (pid $pid from $pidf)"
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for c in nginx haproxy wrk aria2c curl; do
		command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"
	done
}

build() {
	command -v go >/dev/null || die "go not found: install Go 1.26 first"
	log "building httpgw and fastfilesrv into $BIN"
	if ! (cd "$REPO" && go build -o "$BIN/" ./cmd/httpgw ./cmd/fastfilesrv) >"$TMP/logs/build.log" 2>&1; then
		cat "$TMP/logs/build.log" >&2
		die "go build failed (output above)"
	fi
	# The same binaries under other names: on a shared machine a broad
	# "pkill httpgw" from someone else's test must not end this run's
	# processes (seen here while writing this script).
	mv "$BIN/httpgw" "$GW_BIN"
	mv "$BIN/fastfilesrv" "$SRV_BIN"
}

# make_keys: protocol version 3 (Noise handshake) key pairs: one for the
# gateway and one per server index (1-3, shared by the loopback and the
# namespace stacks: each gateway admits the same three servers), and the
# allowed-servers list. Sets GW_KEYS and SRV_KEYS[1..3] (flag words, no
# spaces inside paths: $TMP comes from mktemp).
GW_KEYS=""
declare -a SRV_KEYS=()
make_keys() {
	local gwpub pub i
	gwpub=$("$GW_BIN" genkey -out "$TMP/gw.key") || die "httpgw genkey failed"
	: >"$TMP/allowed-servers.txt"
	for i in 1 2 3; do
		pub=$("$GW_BIN" genkey -out "$TMP/srv$i.key") || die "httpgw genkey failed"
		echo "$pub s$i" >>"$TMP/allowed-servers.txt"
		SRV_KEYS[i]="-private-key $TMP/srv$i.key -gateway-public-key $gwpub"
	done
	GW_KEYS="-private-key $TMP/gw.key -allowed-servers $TMP/allowed-servers.txt"
}

make_files() {
	log "creating test files: big.bin $(human_size "$SIZE"), $NFILES files of 4 KiB, ns.bin $(human_size "$NS_SIZE")"
	mkdir -p "$FILES/small" "$NSFILES"
	head -c "$SIZE" /dev/urandom >"$FILES/big.bin"
	local i
	for ((i = 0; i < NFILES; i++)); do
		head -c "$SMALL" /dev/urandom >"$FILES/small/$(printf 'f%03d.bin' "$i")"
	done
	head -c "$NS_SIZE" "$FILES/big.bin" >"$NSFILES/ns.bin"
	BIG_SHA=$(sha256sum "$FILES/big.bin" | cut -d' ' -f1)
	NS_SHA=$(sha256sum "$NSFILES/ns.bin" | cut -d' ' -f1)
}

# ------------------------------------------------------------------ ports

declare -A USED_PORTS=()
# alloc_port VAR: a TCP+UDP port free on this host, below the ephemeral
# range, never 8080/8081/8888, not handed out before in this run.
alloc_port() {
	local -n _out=$1
	local p tries
	for ((tries = 0; tries < 1000; tries++)); do
		p=$((20000 + RANDOM % 12000))
		[[ -z ${USED_PORTS[$p]:-} ]] || continue
		if ss -Hlntu "( sport = :$p )" 2>/dev/null | grep -q .; then continue; fi
		USED_PORTS[$p]=1
		_out=$p
		return 0
	done
	die "no free port found"
}

# log_of PID: the tail of the log file noted for PID.
log_of() {
	local v="LOGF_OF_PID_$1"
	if [[ -n ${!v:-} && -s ${!v} ]]; then
		tail -n 20 "${!v}" 2>/dev/null
	else
		echo "(its log ${!v:-} is empty: no panic or error was printed; killed by a signal from another process?)"
	fi
	return 0
}

# in_ns NS CMD...: run CMD in network namespace NS ("" = this one).
in_ns() {
	local ns=$1
	shift
	if [[ -n $ns ]]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# wait_http NS URL WHAT PID [TIMEOUT]: poll until URL answers any HTTP status.
wait_http() {
	local ns=$1 url=$2 what=$3 pid=$4 timeout=${5:-20} t0 code
	t0=$SECONDS
	while ((SECONDS - t0 < timeout)); do
		alive "$pid" || die "$what exited while starting; its log: $(log_of "$pid")"
		code=$(in_ns "$ns" curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
		[[ $code != 000 && -n $code ]] && return 0
		sleep 0.1
	done
	die "$what did not answer on $url within ${timeout}s"
}

# ----------------------------------------------------- nginx and HAProxy

NGINX_USER_LINE=""
((IS_ROOT)) && NGINX_USER_LINE="user root;"

# start_nginx NAME NS LISTEN SERVER_BLOCK_BODY [HTTP_EXTRA] -> LAST_PID
start_nginx() {
	local name=$1 ns=$2 listen=$3 body=$4 extra=${5:-} dir=$TMP/nginx-$1
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
$NGINX_USER_LINE
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    $extra
    server {
        listen $listen;
        $body
    }
}
EOF
	in_ns "$ns" nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$LOGS/nginx-$name-test.log" 2>&1 ||
		die "nginx config $name invalid: $(cat "$LOGS/nginx-$name-test.log")"
	if [[ -n $ns ]]; then
		spawn "$LOGS/nginx-$name.log" ip netns exec "$ns" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	else
		spawn "$LOGS/nginx-$name.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	fi
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$dir/error.log"
	wait_http "$ns" "http://$listen/" "nginx $name" "$LAST_PID"
}

start_haproxy() { # NAME LISTEN BACKEND_ADDR -> LAST_PID
	local name=$1 listen=$2 backend=$3 dir=$TMP/haproxy-$1
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind $listen
    default_backend be
backend be
    server origin $backend
EOF
	haproxy -c -q -f "$dir/haproxy.cfg" >"$LOGS/haproxy-$name-test.log" 2>&1 ||
		die "haproxy config invalid: $(cat "$LOGS/haproxy-$name-test.log")"
	spawn "$LOGS/haproxy-$name.log" haproxy -db -f "$dir/haproxy.cfg"
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$LOGS/haproxy-$name.log"
	wait_http "" "http://$listen/" "haproxy $name" "$LAST_PID"
}

ORIGIN=""
PROXY=""
HAPROXY=""
start_loopback_peers() {
	[[ -z $ORIGIN ]] || return 0
	local op pp hp
	alloc_port op
	alloc_port pp
	alloc_port hp
	log "starting nginx origin (127.0.0.1:$op), nginx proxy_pass (:$pp), HAProxy (:$hp)"
	start_nginx origin "" "127.0.0.1:$op" "root $FILES;"
	ORIGIN=127.0.0.1:$op
	start_nginx proxy "" "127.0.0.1:$pp" "location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" \
		"upstream origin { server $ORIGIN; keepalive 64; }"
	PROXY=127.0.0.1:$pp
	start_haproxy lo "127.0.0.1:$hp" "$ORIGIN"
	HAPROXY=127.0.0.1:$hp
}

# ----------------------------------------------------------- gateway stacks

declare -A GW_HTTP=() GW_ADMIN=() GW_PID=() GW_NS=() GW_SRV=() GW_UDP=() GW_ROOT=()

# gw_servers_ready NS ADMIN FILE: how many servers have files > 0, and the
# holders count of FILE in /api/files.
gw_ready_counts() {
	local ns=$1 admin=$2 file=$3 s f
	s=$(in_ns "$ns" curl -s --max-time 2 "http://$admin/api/servers" 2>/dev/null | grep -o '"files": *[0-9]*' | awk '$2 > 0' | wc -l || true)
	f=$(in_ns "$ns" curl -s --max-time 2 "http://$admin/api/files" 2>/dev/null |
		awk -v want="$file" '/"path":/ { p = $0; gsub(/.*"path": *"|",? *$/, "", p) } /"holders":/ && p == want { h = $0; gsub(/[^0-9]/, "", h); print h; exit }' || true)
	echo "${s:-0} ${f:-0}"
}

wait_gw() { # NAME NSERVERS FILE [TIMEOUT]
	local name=$1 n=$2 file=$3 timeout=${4:-120} t0 counts srv holders pid
	t0=$SECONDS
	while ((SECONDS - t0 < timeout)); do
		alive "${GW_PID[$name]}" || die "httpgw ($name) exited: $(log_of "${GW_PID[$name]}")"
		for pid in ${GW_SRV[$name]}; do
			alive "$pid" || die "a fastfilesrv of $name exited: $(log_of "$pid")"
		done
		counts=$(gw_ready_counts "${GW_NS[$name]}" "${GW_ADMIN[$name]}" "$file")
		read -r srv holders <<<"$counts"
		if ((srv >= n && holders >= n)); then return 0; fi
		sleep 0.25
	done
	die "gateway $name: $n servers with files and $file on $n holders not seen within ${timeout}s (last: servers=$srv holders=$holders; logs in bench/out/logs/$name-*.log)"
}

# start_gw_stack NAME ROOT FILE [httpgw flags...]: gateway + 3 fastfilesrv on 127.0.0.1.
start_gw_stack() {
	local name=$1 root=$2 file=$3 hp up ap i st srvs=""
	shift 3
	alloc_port hp
	alloc_port up
	alloc_port ap
	log "starting gateway $name (http 127.0.0.1:$hp, udp :$up, admin :$ap${*:+, $*}) and 3 fastfilesrv"
	# -rate-limit 0: (b) drives ~40k req/s from one IP (wrk -t2 -c64), far
	# above the default per-client rate limit of 100 req/s; the connection
	# limits (128 per IP, 4096 in all) stay at their defaults, above the 64
	# connections of (b) and the 10 downloads of (f).
	spawn "$LOGS/$name-gw.log" "$GW_BIN" -http "127.0.0.1:$hp" -udp "127.0.0.1:$up" -admin "127.0.0.1:$ap" -key-file "$KEY" $GW_KEYS -log-level warn -rate-limit 0 "$@"
	GW_PID[$name]=$LAST_PID
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$LOGS/$name-gw.log"
	GW_HTTP[$name]=127.0.0.1:$hp
	GW_ADMIN[$name]=127.0.0.1:$ap
	GW_NS[$name]=""
	wait_http "" "http://127.0.0.1:$ap/api/servers" "httpgw $name" "$LAST_PID"
	GW_UDP[$name]=$up
	GW_ROOT[$name]=$root
	for i in 1 2 3; do
		start_lo_server "$name" "$i"
		srvs+="$LAST_PID "
	done
	GW_SRV[$name]=$srvs
	wait_gw "$name" 3 "$file"
	[[ -e $STATE/seed-lo.state || ! -s $STATE/$name-1.state ]] || cp "$STATE/$name-1.state" "$STATE/seed-lo.state"
}

start_lo_server() { # STACK N -> LAST_PID
	local name=$1 i=$2 st=$STATE/$1-$2.state
	[[ -e $STATE/seed-lo.state && ! -e $st ]] && cp "$STATE/seed-lo.state" "$st"
	spawn "$LOGS/$name-srv$i.log" "$SRV_BIN" -root "${GW_ROOT[$name]}" -key-file "$KEY" ${SRV_KEYS[i]} -listen 127.0.0.1:0 -state "$st" 127.0.0.1 "${GW_UDP[$name]}"
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$LOGS/$name-srv$i.log"
}

stop_gw_stack() {
	local name=$1 pid
	for pid in ${GW_SRV[$name]}; do stop_pid "$pid"; done
	stop_pid "${GW_PID[$name]}"
	unset "GW_PID[$name]"
}

gw_snapshot() { # NAME TAG: keep the pool's view for diagnosis
	local name=$1 tag=$2
	in_ns "${GW_NS[$name]}" curl -s --max-time 2 "http://${GW_ADMIN[$name]}/api/servers" >"$LOGS/$name-servers-$tag.json" 2>/dev/null || true
	in_ns "${GW_NS[$name]}" curl -s --max-time 2 "http://${GW_ADMIN[$name]}/api/stats" >"$LOGS/$name-stats-$tag.json" 2>/dev/null || true
}

# ------------------------------------------------------------ measuring

# fetch NS URL OUT EXPECTED_BYTES -> prints "ok RATE TIME" or "fail DESCRIPTION"
fetch() {
	local ns=$1 url=$2 out=$3 want=$4 res code size speed t rc=0
	res=$(in_ns "$ns" curl -sS -o "$out" --max-time "$(big_timeout "$want")" --speed-limit 1000000 --speed-time 15 \
		-w '%{http_code} %{size_download} %{speed_download} %{time_total}' "$url" 2>>"$LOGS/curl.log") || rc=$?
	read -r code size speed t <<<"$res"
	if ((rc != 0)) || [[ $code != 200 ]] || [[ $size != "$want" ]]; then
		echo "fail curl-exit=$rc,http=${code:-?},bytes=${size:-?}/$want,t=${t:-?}s"
		echo "$(date +%T) FAIL $url -> rc=$rc $res" >>"$LOGS/curl.log"
		return 0
	fi
	echo "ok $speed $t"
}

# stack_dead NAME...: whether a process of gateway stack NAME (httpgw or
# one of its fastfilesrv) has exited; prints which, with its log tail, so a
# scenario can fail at once instead of letting every later download time out.
stack_dead() {
	local name pid
	for name in "$@"; do
		[[ -n ${GW_PID[$name]:-} ]] || continue
		if ! alive "${GW_PID[$name]}"; then
			warn "httpgw ($name) exited early; its log: $(log_of "${GW_PID[$name]}")"
			return 0
		fi
		for pid in ${GW_SRV[$name]:-}; do
			if ! alive "$pid"; then
				warn "a fastfilesrv of $name (pid $pid) exited early; its log: $(log_of "$pid")"
				return 0
			fi
		done
	done
	return 1
}

# best_of N NS URL BYTES -> prints best rate (bytes/s) or "fail ..."
declare -A BEST=() BEST_FAIL=()
record_best() { # KEY RESULT_LINE
	local key=$1 status rate rest
	read -r status rate rest <<<"$2"
	if [[ $status == ok ]]; then
		if [[ -z ${BEST[$key]:-} ]] || ge "$rate" "${BEST[$key]}"; then BEST[$key]=$rate; fi
		log "  $key: $(fmt_rate "$rate") (${rest}s)"
	else
		BEST_FAIL[$key]="${BEST_FAIL[$key]:-}$rate "
		log "  $key: FAILED $rate"
	fi
}

# --------------------------------------------------------------- results

ROWS=()
# row SCEN SETUP RESULT [VS] [GOAL] [VERDICT]
row() { ROWS+=("| $1 | $2 | $3 | ${4:-} | ${5:-} | ${6:-} |"); }
verdict() { if [[ $1 == 1 ]]; then echo "MET"; else echo "NOT MET"; fi; } # COND(0/1)
rate_cell() { # KEY
	if [[ -n ${BEST[$1]:-} ]]; then
		fmt_rate "${BEST[$1]}"
		[[ -z ${BEST_FAIL[$1]:-} ]] || printf ' (some runs failed: %s)' "${BEST_FAIL[$1]% }"
	else
		printf 'FAILED (%s)' "${BEST_FAIL[$1]:-not run}"
	fi
}

# ============================================================ scenario a
scenario_a() {
	log "== (a) loopback, one $(human_size "$SIZE") file, one curl, best of $REPS"
	start_loopback_peers
	[[ -n ${GW_PID[lo-auto]:-} ]] || start_gw_stack lo-auto "$FILES" big.bin
	[[ -n ${GW_PID[lo-mtu]:-} ]] || start_gw_stack lo-mtu "$FILES" big.bin -datagram-size 1452
	local -A urls=([direct]="http://$ORIGIN/big.bin" [proxy]="http://$PROXY/big.bin" [haproxy]="http://$HAPROXY/big.bin"
		[gw-mtu]="http://${GW_HTTP[lo-mtu]}/big.bin" [gw-auto]="http://${GW_HTTP[lo-auto]}/big.bin")
	local order=(direct proxy haproxy gw-mtu gw-auto) r i k n=5
	for ((r = 0; r < REPS; r++)); do
		log " round $((r + 1))/$REPS"
		for ((i = 0; i < n; i++)); do
			k=${order[(i + r) % n]}
			if stack_dead lo-auto lo-mtu; then
				row a "$(human_size "$SIZE"), httpgw + 3 fastfilesrv" "FAILED: a gateway-stack process exited (log tail above and in bench/out/logs/)" "" "" "$(verdict 0)"
				return 0
			fi
			record_best "a-$k" "$(fetch "" "${urls[$k]}" /dev/null "$SIZE")"
		done
	done
	gw_snapshot lo-mtu a
	gw_snapshot lo-auto a
	local better="" bname="" cell
	if [[ -n ${BEST[a-proxy]:-} || -n ${BEST[a-haproxy]:-} ]]; then
		better=$(max "${BEST[a-proxy]:-0}" "${BEST[a-haproxy]:-0}")
		if [[ $better == "${BEST[a-haproxy]:-x}" ]]; then bname=HAProxy; else bname="nginx proxy_pass"; fi
	fi
	local sz
	sz=$(human_size "$SIZE")
	row a "$sz, nginx direct (sendfile, 2 workers)" "$(rate_cell a-direct)" "$(fmt_x "${BEST[a-direct]:-0}" "${BEST[a-proxy]:-0}") nginx proxy_pass"
	row a "$sz, nginx proxy_pass → nginx (default buffering)" "$(rate_cell a-proxy)"
	row a "$sz, HAProxy (mode http, 2 threads) → nginx" "$(rate_cell a-haproxy)" "$(fmt_x "${BEST[a-haproxy]:-0}" "${BEST[a-proxy]:-0}") nginx proxy_pass"
	local k2 label goal
	for k2 in gw-mtu gw-auto; do
		if [[ $k2 == gw-mtu ]]; then label="$sz, httpgw + 3 fastfilesrv, 1452-B datagrams"; goal=1.0; else label="$sz, httpgw + 3 fastfilesrv, auto (32 KiB) datagrams"; goal=1.5; fi
		if [[ -n ${BEST[a-$k2]:-} && -n $better ]]; then
			cell=0
			ge "$(calc "${BEST[a-$k2]} / $better")" "$goal" && cell=1
			row a "$label" "$(rate_cell "a-$k2")" "$(fmt_x "${BEST[a-$k2]}" "$better") $bname" "≥${goal}× better proxy" "$(verdict "$cell")"
		else
			row a "$label" "$(rate_cell "a-$k2")" "" "≥${goal}× better proxy" "$(verdict 0)"
		fi
	done
}

# ============================================================ scenario b
# wrk_run NAME HOSTPORT ROUND: one warm-up and one measured wrk run; keeps
# the best req/s and the best p99 over rounds in WRK_RPS[NAME], WRK_P99[NAME]
# (ms), and problems in WRK_ERR[NAME].
declare -A WRK_RPS=() WRK_P99=() WRK_ERR=()
wrk_run() {
	local name=$1 hp=$2 round=$3 out=$LOGS/wrk-$1-$3.txt warm rps p99 avg non2xx errs
	warm=$(((WRK_DUR + 4) / 5))
	NFILES=$NFILES timeout $((warm + 30)) wrk -t2 -c64 -d"${warm}s" --timeout 5s -s "$BENCH_DIR/wrk-rotate.lua" "http://$hp/" >"$LOGS/wrk-$name-$round-warmup.txt" 2>&1 || true
	if ! NFILES=$NFILES timeout $((WRK_DUR + 60)) wrk -t2 -c64 -d"${WRK_DUR}s" --timeout 5s --latency -s "$BENCH_DIR/wrk-rotate.lua" "http://$hp/" >"$out" 2>&1; then
		WRK_ERR[$name]+="wrk failed: $(tail -n 3 "$out" | tr '\n' ' '); "
		return 0
	fi
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
	avg=$(awk '$1 == "Latency" && NF >= 3 { print $2; exit }' "$out")
	p99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
		if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000; printf "%.2f", v }' "$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
	errs=$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' "$out")
	[[ -z $non2xx ]] || WRK_ERR[$name]+="non-2xx: $non2xx; "
	[[ -z $errs ]] || WRK_ERR[$name]+="socket errors: $errs; "
	log "  $name: $rps req/s, p99 $p99 ms, avg $avg ${non2xx:+non-2xx $non2xx }${errs:+socket errors $errs}"
	[[ -n $rps && -n $p99 ]] || { WRK_ERR[$name]+="unparsable wrk output ($out); "; return 0; }
	if [[ -z ${WRK_RPS[$name]:-} ]] || ge "$rps" "${WRK_RPS[$name]}"; then WRK_RPS[$name]=$rps; fi
	if [[ -z ${WRK_P99[$name]:-} ]] || le "$p99" "${WRK_P99[$name]}"; then WRK_P99[$name]=$p99; fi
}

check_small() { # NAME HOSTPORT: one 4 KiB file must come back whole
	local res
	res=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' "http://$2/small/f007.bin" || true)
	[[ $res == "200 $SMALL" ]] || { WRK_ERR[$1]="GET /small/f007.bin -> '$res' (want 200 $SMALL); "; return 1; }
}

scenario_b() {
	log "== (b) $NFILES files of 4 KiB, wrk -t2 -c64 -d${WRK_DUR}s --latency (rotating URLs), best of $WRK_REPS"
	start_loopback_peers
	[[ -n ${GW_PID[lo-auto]:-} ]] || start_gw_stack lo-auto "$FILES" big.bin
	wait_gw lo-auto 3 small/f099.bin 60
	local -A hp=([direct]=$ORIGIN [proxy]=$PROXY [haproxy]=$HAPROXY [gw]=${GW_HTTP[lo-auto]})
	local k r i order=(direct proxy haproxy gw) ok=()
	for k in "${order[@]}"; do
		if check_small "$k" "${hp[$k]}"; then ok+=("$k"); fi
	done
	for ((r = 0; r < WRK_REPS; r++)); do
		log " round $((r + 1))/$WRK_REPS"
		for ((i = 0; i < ${#ok[@]}; i++)); do
			k=${ok[(i + r) % ${#ok[@]}]}
			wrk_run "$k" "${hp[$k]}" "$r"
		done
	done
	gw_snapshot lo-auto b
	cell_b() { # NAME
		if [[ -n ${WRK_RPS[$1]:-} ]]; then
			printf '%.0f req/s, p99 %s ms' "${WRK_RPS[$1]}" "${WRK_P99[$1]}"
		else printf 'FAILED'; fi
		[[ -z ${WRK_ERR[$1]:-} ]] || printf '; %s' "${WRK_ERR[$1]}"
	}
	local bname="" bk=""
	if [[ -n ${WRK_RPS[proxy]:-} || -n ${WRK_RPS[haproxy]:-} ]]; then
		if ge "${WRK_RPS[haproxy]:-0}" "${WRK_RPS[proxy]:-0}"; then bk=haproxy; bname=HAProxy; else bk=proxy; bname="nginx proxy_pass"; fi
	fi
	row b "4 KiB ×$NFILES, nginx direct" "$(cell_b direct)"
	row b "4 KiB, nginx proxy_pass (upstream keepalive 64)" "$(cell_b proxy)"
	row b "4 KiB, HAProxy" "$(cell_b haproxy)"
	local ok1=0 ok2=0 vs1="" vs2=""
	if [[ -n ${WRK_RPS[gw]:-} && -n $bk ]]; then
		ge "${WRK_RPS[gw]}" "${WRK_RPS[$bk]}" && ok1=1
		le "${WRK_P99[gw]}" "${WRK_P99[$bk]}" && ok2=1
		[[ -z ${WRK_ERR[gw]:-} ]] || { ok1=0; ok2=0; }
		vs1="$(fmt_x "${WRK_RPS[gw]}" "${WRK_RPS[$bk]}") $bname req/s"
		vs2="p99 ${WRK_P99[gw]} vs ${WRK_P99[$bk]} ms ($bname)"
	fi
	row b "4 KiB, httpgw + 3 fastfilesrv (req/s)" "$(cell_b gw)" "$vs1" "≥1.0× better proxy" "$(verdict $ok1)"
	row b "4 KiB, httpgw p99" "${WRK_P99[gw]:-n/a} ms" "$vs2" "p99 ≤ better proxy's" "$(verdict $ok2)"
}

# ================================================= namespace topology (c, d, e)
NSG=""
NS_SRV=()
NS_MIRROR=()
NS_MIRROR_PORT=80

setup_topology() {
	local base i
	base=fsb$$
	NSG=$base-gw
	log "creating network namespaces $NSG, $base-s1..3 with $LINK_RATE tbf veth links (10.77.N.0/24 inside them only)"
	ip netns add "$NSG" || die "ip netns add failed"
	NETNS+=("$NSG")
	ip -n "$NSG" link set lo up
	for i in 1 2 3; do
		NS_SRV[i]=$base-s$i
		ip netns add "${NS_SRV[i]}"
		NETNS+=("${NS_SRV[i]}")
		ip -n "${NS_SRV[i]}" link set lo up
		ip link add "vg$i" netns "$NSG" type veth peer name "vs$i" netns "${NS_SRV[i]}"
		ip -n "$NSG" addr add "10.77.$i.1/24" dev "vg$i"
		ip -n "${NS_SRV[i]}" addr add "10.77.$i.2/24" dev "vs$i"
		ip -n "$NSG" link set "vg$i" up
		ip -n "${NS_SRV[i]}" link set "vs$i" up
		set_link_rate "$i" "$LINK_RATE" add
	done
}

set_link_rate() { # N RATE [add|replace]
	local i=$1 rate=$2 op=${3:-replace}
	ip netns exec "$NSG" tc qdisc "$op" dev "vg$i" root tbf rate "$rate" burst 64kb latency 50ms
	ip netns exec "${NS_SRV[i]}" tc qdisc "$op" dev "vs$i" root tbf rate "$rate" burst 64kb latency 50ms
}

set_loss() { # PERMILLE (0 = none): random drop of tcp+udp, in and out, in each server namespace
	local pm=$1 i ns
	for i in 1 2 3; do
		ns=${NS_SRV[i]}
		ip netns exec "$ns" nft delete table inet fsblossy 2>/dev/null || true
		((pm > 0)) || continue
		ip netns exec "$ns" nft -f - <<EOF
table inet fsblossy {
    chain in {
        type filter hook input priority 0; policy accept;
        meta l4proto { tcp, udp } numgen random mod 1000 < $pm drop
    }
    chain out {
        type filter hook output priority 0; policy accept;
        meta l4proto { tcp, udp } numgen random mod 1000 < $pm drop
    }
}
EOF
	done
}

start_mirrors() {
	local i
	[[ ${#NS_MIRROR[@]} -eq 0 ]] || return 0
	for i in 1 2 3; do
		start_nginx "mirror$i" "${NS_SRV[i]}" "10.77.$i.2:$NS_MIRROR_PORT" "root $NSFILES;"
		NS_MIRROR[i]=$LAST_PID
	done
}

NS_UDP=0
start_ns_server() { # N: fastfilesrv in server namespace N, registering with 10.77.N.1
	local i=$1 st=$STATE/ns-$1.state
	[[ -e $STATE/seed-ns.state && ! -e $st ]] && cp "$STATE/seed-ns.state" "$st"
	spawn "$LOGS/ns-srv$i.log" ip netns exec "${NS_SRV[i]}" "$SRV_BIN" -root "$NSFILES" -key-file "$KEY" ${SRV_KEYS[i]} \
		-listen "10.77.$i.2:0" -state "$st" "10.77.$i.1" "$NS_UDP"
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$LOGS/ns-srv$i.log"
	NS_SRV_PID[i]=$LAST_PID
}
declare -a NS_SRV_PID=()

refresh_ns_srv_list() { GW_SRV[ns]="${NS_SRV_PID[*]}"; }

start_ns_stack() {
	[[ -z ${GW_PID[ns]:-} ]] || return 0
	local hp ap i
	alloc_port hp
	alloc_port ap
	alloc_port NS_UDP
	log "starting gateway in $NSG (udp 0.0.0.0:$NS_UDP, auto = 1452-B datagrams) and one fastfilesrv per server namespace"
	spawn "$LOGS/ns-gw.log" ip netns exec "$NSG" "$GW_BIN" -http "127.0.0.1:$hp" -udp "0.0.0.0:$NS_UDP" -admin "127.0.0.1:$ap" -key-file "$KEY" $GW_KEYS -log-level warn
	GW_PID[ns]=$LAST_PID
	printf -v "LOGF_OF_PID_$LAST_PID" '%s' "$LOGS/ns-gw.log"
	GW_HTTP[ns]=127.0.0.1:$hp
	GW_ADMIN[ns]=127.0.0.1:$ap
	GW_NS[ns]=$NSG
	wait_http "$NSG" "http://127.0.0.1:$ap/api/servers" "httpgw (ns)" "$LAST_PID"
	for i in 1 2 3; do start_ns_server "$i"; done
	refresh_ns_srv_list
	wait_gw ns 3 ns.bin
	[[ -e $STATE/seed-ns.state || ! -s $STATE/ns-1.state ]] || cp "$STATE/ns-1.state" "$STATE/seed-ns.state"
}

ns_gw_fetch() { fetch "$NSG" "http://${GW_HTTP[ns]}/ns.bin" /dev/null "$NS_SIZE"; }

aria2_fetch() { # -> "ok RATE TIME" or "fail ..."
	local dl=$DL t0 t1 rc=0 got
	rm -f "$dl/aria.bin" "$dl/aria.bin.aria2"
	t0=$(now)
	timeout "$(big_timeout "$NS_SIZE")" ip netns exec "$NSG" aria2c --no-conf -q -x1 -s3 -k1M \
		--file-allocation=none --allow-overwrite=true --auto-file-renaming=false \
		--connect-timeout=5 --timeout=20 --max-tries=5 --retry-wait=1 \
		-d "$dl" -o aria.bin \
		"http://10.77.1.2:$NS_MIRROR_PORT/ns.bin" "http://10.77.2.2:$NS_MIRROR_PORT/ns.bin" "http://10.77.3.2:$NS_MIRROR_PORT/ns.bin" \
		>>"$LOGS/aria2.log" 2>&1 || rc=$?
	t1=$(now)
	got=$(stat -c %s "$dl/aria.bin" 2>/dev/null || echo 0)
	if ((rc != 0)) || [[ $got != "$NS_SIZE" ]]; then
		echo "fail aria2c-exit=$rc,bytes=$got/$NS_SIZE"
		return 0
	fi
	local t
	t=$(elapsed "$t0" "$t1")
	echo "ok $(calc "$NS_SIZE / $t") $t"
	rm -f "$dl/aria.bin"
}

time_of() { # KEY -> seconds for NS_SIZE at BEST[KEY]
	calc "$NS_SIZE / ${BEST[$1]}"
}

scenario_c() {
	log "== (c) three $LINK_RATE links, $(human_size "$NS_SIZE") file, best of $NS_REPS"
	start_mirrors
	start_ns_stack
	local r
	for ((r = 0; r < NS_REPS; r++)); do
		log " round $((r + 1))/$NS_REPS"
		record_best c-gw "$(ns_gw_fetch)"
		record_best c-aria2 "$(aria2_fetch)"
		record_best c-one "$(fetch "$NSG" "http://10.77.1.2:$NS_MIRROR_PORT/ns.bin" /dev/null "$NS_SIZE")"
	done
	gw_snapshot ns c
	local sz ok1=0 ok2=0 vs1="" vs2=""
	sz=$(human_size "$NS_SIZE")
	row c "$sz over one $LINK_RATE link, curl from one nginx mirror" "$(rate_cell c-one)"
	row c "$sz, aria2c -x1 -s3 -k1M on three nginx mirrors" "$(rate_cell c-aria2)" "$(fmt_x "${BEST[c-aria2]:-0}" "${BEST[c-one]:-0}") one link"
	if [[ -n ${BEST[c-gw]:-} ]]; then
		[[ -n ${BEST[c-aria2]:-} ]] && ge "$(calc "${BEST[c-gw]} / ${BEST[c-aria2]}")" 1.0 && ok1=1
		[[ -n ${BEST[c-one]:-} ]] && ge "$(calc "${BEST[c-gw]} / ${BEST[c-one]}")" 2.7 && ok2=1
		vs1="$(fmt_x "${BEST[c-gw]}" "${BEST[c-aria2]:-0}") aria2"
		vs2="$(fmt_x "${BEST[c-gw]}" "${BEST[c-one]:-0}") one link"
	fi
	row c "$sz, curl → httpgw + 3 fastfilesrv (one per link)" "$(rate_cell c-gw)" "$vs1" "≥1.0× aria2" "$(verdict $ok1)"
	row c "$sz, httpgw vs one link" "" "$vs2" "≥2.7× one link" "$(verdict $ok2)"
}

scenario_d() {
	log "== (d) the same links with random loss, and with one link 10× slower"
	start_mirrors
	start_ns_stack
	local r pm
	if [[ -z ${BEST[c-gw]:-} ]]; then
		log " lossless reference"
		for ((r = 0; r < NS_REPS; r++)); do
			record_best c-gw "$(ns_gw_fetch)"
			record_best c-aria2 "$(aria2_fetch)"
		done
	fi
	for pm in 20 50; do
		log " loss $((pm / 10))% (nftables numgen drop, tcp+udp, both directions, all three links)"
		set_loss "$pm"
		for ((r = 0; r < NS_REPS; r++)); do
			record_best "d-gw-$pm" "$(ns_gw_fetch)"
			record_best "d-aria2-$pm" "$(aria2_fetch)"
		done
		gw_snapshot ns "loss$pm"
	done
	set_loss 0
	log " link 3 at $SLOW_RATE (server 3 is 10× slower)"
	set_link_rate 3 "$SLOW_RATE"
	for ((r = 0; r < NS_REPS; r++)); do
		record_best d-gw-slow "$(ns_gw_fetch)"
		record_best d-aria2-slow "$(aria2_fetch)"
	done
	gw_snapshot ns slow
	log " without server 3 (stopped; two fast servers)"
	stop_pid "${NS_SRV_PID[3]}"
	NS_SRV_PID[3]=""
	refresh_ns_srv_list
	local t0=$SECONDS cnt
	while ((SECONDS - t0 < 60)); do
		cnt=$(ip netns exec "$NSG" curl -s --max-time 2 "http://${GW_ADMIN[ns]}/api/servers" | grep -c '"id"' || true)
		((cnt <= 2)) && break
		sleep 0.25
	done
	((cnt <= 2)) || warn "gateway still lists $cnt servers 60 s after server 3 stopped"
	for ((r = 0; r < NS_REPS; r++)); do
		record_best d-gw-two "$(ns_gw_fetch)"
	done
	log " restoring link 3 and server 3"
	set_link_rate 3 "$LINK_RATE"
	start_ns_server 3
	refresh_ns_srv_list
	wait_gw ns 3 ns.bin

	local lossless=${BEST[c-gw]:-} a_lossless=${BEST[c-aria2]:-} ok cellv
	for pm in 20 50; do
		cellv="$(fmt_x "${BEST[d-gw-$pm]:-0}" "${lossless:-0}") lossless"
		if ((pm == 20)); then
			ok=0
			[[ -n ${BEST[d-gw-20]:-} && -n $lossless ]] && ge "$(calc "${BEST[d-gw-20]} / $lossless")" 0.90 && ok=1
			row d "$((pm / 10))% loss, httpgw" "$(rate_cell "d-gw-$pm")" "$cellv" "≥0.90× lossless" "$(verdict $ok)"
		else
			row d "$((pm / 10))% loss, httpgw" "$(rate_cell "d-gw-$pm")" "$cellv"
		fi
		row d "$((pm / 10))% loss, aria2c three mirrors" "$(rate_cell "d-aria2-$pm")" "$(fmt_x "${BEST[d-aria2-$pm]:-0}" "${a_lossless:-0}") lossless; httpgw $(fmt_x "${BEST[d-gw-$pm]:-0}" "${BEST[d-aria2-$pm]:-0}") aria2"
	done
	local ts tt t3
	ok=0
	if [[ -n ${BEST[d-gw-slow]:-} && -n ${BEST[d-gw-two]:-} ]]; then
		ts=$(time_of d-gw-slow)
		tt=$(time_of d-gw-two)
		le "$(calc "$ts / $tt")" 1.15 && ok=1
		t3=""
		[[ -z $lossless ]] || t3="; $(fmt_x "$ts" "$(time_of c-gw)") the 3-fast-links time"
		row d "link 3 at $SLOW_RATE, httpgw (3 servers)" "$(rate_cell d-gw-slow), $(printf '%.2f' "$ts") s" "$(fmt_x "$ts" "$tt") the time without server 3$t3" "time ≤1.15× without it" "$(verdict $ok)"
		row d "server 3 stopped, httpgw (2 servers)" "$(rate_cell d-gw-two), $(printf '%.2f' "$tt") s"
	else
		row d "link 3 at $SLOW_RATE, httpgw" "$(rate_cell d-gw-slow)" "without server 3: $(rate_cell d-gw-two)" "time ≤1.15× without it" "$(verdict 0)"
	fi
	row d "link 3 at $SLOW_RATE, aria2c three mirrors" "$(rate_cell d-aria2-slow)" "$(fmt_x "${BEST[d-aria2-slow]:-0}" "${a_lossless:-0}") lossless"
}

# ============================================================ scenario e
# kill_halfway STACK NS URL OUT BYTES SHA VICTIM_PID: one undisturbed and
# one disturbed download (VICTIM_PID SIGKILLed once half the bytes arrived);
# accumulates into E_TU / E_TD (best seconds), E_SU / E_SD / E_KILLED (1:
# every run ok) and E_NOTE.
E_TU="" E_TD="" E_SU=1 E_SD=1 E_KILLED=1 E_NOTE="" E_ROUND=0
e_reset() { E_TU="" E_TD="" E_SU=1 E_SD=1 E_KILLED=1 E_NOTE=""; }
kill_halfway() {
	local stack=$1 ns=$2 url=$3 out=$4 bytes=$5 sha=$6 victim=$7
	local res rc=0 code size t pid half got killed=0 t0
	half=$((bytes / 2))
	# warm-up, then the undisturbed reference
	fetch "$ns" "$url" /dev/null "$bytes" >/dev/null
	rm -f "$out"
	res=$(fetch "$ns" "$url" "$out" "$bytes")
	if [[ $res == ok* ]]; then
		t=$(awk '{ print $3 }' <<<"$res")
		if [[ -z $E_TU ]] || le "$t" "$E_TU"; then E_TU=$t; fi
		[[ $(sha256sum "$out" | cut -d' ' -f1) == "$sha" ]] || { E_SU=0; E_NOTE+="undisturbed download differs from the file; "; }
		log "  undisturbed: ${t}s"
	else
		E_SU=0
		E_NOTE+="undisturbed run failed: $res; "
	fi
	rm -f "$out"
	# disturbed: SIGKILL one server once half the bytes arrived
	in_ns "$ns" curl -sS -o "$out" --max-time "$(big_timeout "$bytes")" --speed-limit 1000000 --speed-time 15 \
		-w '%{http_code} %{size_download} %{speed_download} %{time_total}' "$url" >"$TMP/e.res" 2>>"$LOGS/curl.log" &
	pid=$!
	t0=$SECONDS
	while alive "$pid" && ((SECONDS - t0 < 600)); do
		got=$(stat -c %s "$out" 2>/dev/null || echo 0)
		if ((got >= half)); then
			kill -KILL -- "-$victim" 2>/dev/null || kill -KILL "$victim" 2>/dev/null || true
			killed=1
			log "  SIGKILLed fastfilesrv pid $victim at $got of $bytes bytes"
			break
		fi
		sleep 0.005
	done
	wait "$pid" || rc=$?
	stop_pid "$victim"
	((killed)) || { E_KILLED=0; E_NOTE+="download ended before half way: server not killed; "; }
	read -r code size _ t <"$TMP/e.res" || true
	if ((rc == 0)) && [[ $code == 200 && $size == "$bytes" ]]; then
		if [[ -z $E_TD ]] || le "$t" "$E_TD"; then E_TD=$t; fi
		[[ $(sha256sum "$out" | cut -d' ' -f1) == "$sha" ]] || { E_SD=0; E_NOTE+="disturbed download differs from the file; "; }
		log "  disturbed: ${t}s"
	else
		E_SD=0
		E_NOTE+="disturbed run failed (curl exit $rc, http ${code:-?}, ${size:-?}/$bytes bytes); "
	fi
	E_ROUND=$((E_ROUND + 1))
	gw_snapshot "$stack" "e$E_ROUND"
	rm -f "$out"
}

e_rows() { # LABEL
	local label=$1 ok=0 shas
	shas="sha256 of every download $([[ $E_SU == 1 && $E_SD == 1 ]] && echo identical to the file || echo NOT identical)"
	if [[ -n $E_TU && -n $E_TD ]]; then
		[[ $E_KILLED == 1 && $E_SD == 1 && $E_SU == 1 ]] && le "$(calc "$E_TD / $E_TU")" 1.2 && ok=1
		row e "$label" "$(printf '%.2f s vs %.2f s undisturbed' "$E_TD" "$E_TU"); $shas${E_NOTE:+; $E_NOTE}" "$(fmt_x "$E_TD" "$E_TU") undisturbed" "≤1.2×, bytes identical" "$(verdict $ok)"
	else
		row e "$label" "FAILED: ${E_NOTE}" "" "≤1.2×, bytes identical" "$(verdict 0)"
	fi
}

scenario_e() {
	log "== (e) one of three servers SIGKILLed halfway through a download"
	start_gw_stack lo-e "$FILES" big.bin
	local victim r
	e_reset
	for ((r = 0; r < E_REPS; r++)); do
		log " loopback, round $((r + 1))/$E_REPS"
		victim=$(awk '{ print $1 }' <<<"${GW_SRV[lo-e]}")
		kill_halfway lo-e "" "http://${GW_HTTP[lo-e]}/big.bin" "$DL/e.bin" "$SIZE" "$BIG_SHA" "$victim"
		# a fresh server 1 for the next round
		start_lo_server lo-e 1
		GW_SRV[lo-e]="$LAST_PID $(awk '{ print $2, $3 }' <<<"${GW_SRV[lo-e]}")"
		wait_gw lo-e 3 big.bin
	done
	e_rows "loopback, $(human_size "$SIZE"), 1 of 3 fastfilesrv SIGKILLed at 50%"
	stop_gw_stack lo-e
	if ((HAVE_NS)); then
		start_ns_stack
		e_reset
		for ((r = 0; r < E_REPS; r++)); do
			log " $LINK_RATE links, round $((r + 1))/$E_REPS"
			kill_halfway ns "$NSG" "http://${GW_HTTP[ns]}/ns.bin" "$DL/e-ns.bin" "$NS_SIZE" "$NS_SHA" "${NS_SRV_PID[1]}"
			start_ns_server 1
			refresh_ns_srv_list
			wait_gw ns 3 ns.bin
		done
		e_rows "$LINK_RATE links, $(human_size "$NS_SIZE"), server 1 SIGKILLed at 50% (two links carry the second half: ≥1.25× if three links were saturated)"
	else
		row e "$LINK_RATE links (namespaces)" "skipped: $NS_SKIP"
	fi
}

# ============================================================ scenario f
scenario_f() {
	log "== (f) gateway peak RSS, $F_CLIENTS curls of $(human_size "$SIZE") at once (fresh gateway)"
	start_gw_stack lo-f "$FILES" big.bin
	local url="http://${GW_HTTP[lo-f]}/big.bin" i pids=() t0 t1 ok=0 fails=0 hwm rss_mb note=""
	t0=$(now)
	for ((i = 0; i < F_CLIENTS; i++)); do
		fetch "" "$url" /dev/null "$SIZE" >"$TMP/f-$i.res" &
		pids+=("$!")
	done
	for i in "${pids[@]}"; do wait "$i" || true; done
	t1=$(now)
	for ((i = 0; i < F_CLIENTS; i++)); do
		if grep -q '^ok' "$TMP/f-$i.res"; then ok=$((ok + 1)); else fails=$((fails + 1)); note+="$(cat "$TMP/f-$i.res") "; fi
	done
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/${GW_PID[lo-f]}/status" 2>/dev/null || echo "")
	gw_snapshot lo-f f
	stop_gw_stack lo-f
	local agg
	agg=$(calc "$ok * $SIZE / $(elapsed "$t0" "$t1")")
	if [[ -n $hwm ]]; then
		rss_mb=$(calc "$hwm * 1024 / 1e6")
		local cond=0
		le "$rss_mb" 100 && ((fails == 0)) && cond=1
		row f "$F_CLIENTS × $(human_size "$SIZE") at once through httpgw (loopback)" "VmHWM $(printf '%.1f' "$rss_mb") MB; $ok/$F_CLIENTS complete, $(fmt_rate "$agg") aggregate${note:+; failures: $note}" "" "RSS <100 MB" "$(verdict $cond)"
	else
		row f "$F_CLIENTS × $(human_size "$SIZE") at once" "FAILED: gateway gone" "" "RSS <100 MB" "$(verdict 0)"
	fi
}

# write_report [NOTE]: the table so far into bench/out/results.md.
write_report() {
	local cmd machine
	cmd="bench/run.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}"
	machine="$(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), $(go version | awk '{ print $3, $4 }'), nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), aria2 $(aria2c --version | awk 'NR == 1 { print $3 }')"
	{
		echo "Command: \`$cmd\` (scenarios $SCENARIOS) — $START_DATE, code at $REV${1:+ — $1}"
		echo
		echo "Machine: $machine. Client, proxies and servers share the cores. MB/s = 10^6 bytes/s. Best of $REPS curl runs per target on loopback (rounds interleaved), of $NS_REPS on the namespace links, of $E_REPS in (e); wrk: best req/s and best p99 of $WRK_REPS runs of ${WRK_DUR} s. httpgw runs with -log-level warn (nginx and HAProxy log no requests either) and, on loopback, -rate-limit 0 (wrk makes ~40k req/s from one IP; the default is 100 per IP)."
		echo
		echo "| | setup | result | ratio | goal | verdict |"
		echo "|---|---|---|---|---|---|"
		((${#ROWS[@]} == 0)) || printf '%s\n' "${ROWS[@]}"
		echo
		echo "Goals met: $(printf '%s\n' "${ROWS[@]}" | grep -c '| MET |' || true) of $(printf '%s\n' "${ROWS[@]}" | grep -c '| \(NOT \)\{0,1\}MET |' || true)."
	} >"$OUT_DIR/results.md"
}

# ================================================================== main

mkdir -p "$OUT_DIR"
# One run at a time: two would share the cores and bench/out/.
exec 9>"$OUT_DIR/.lock"
flock -n 9 || die "another bench/run.sh is running (lock bench/out/.lock); wait for it to finish"
TMP=$(mktemp -d /tmp/fschunk-bench.XXXXXX)
chmod 755 "$TMP"
BIN=$TMP/bin
FILES=$TMP/files
NSFILES=$TMP/nsfiles
STATE=$TMP/state
LOGS=$TMP/logs
KEY=$TMP/fschunk.key
GW_BIN=$BIN/fsb-gateway
SRV_BIN=$BIN/fsb-fileserver
mkdir -p "$BIN" "$STATE" "$LOGS"
# Downloads that must be kept (aria2, the sha256 checks of e) go to tmpfs, so
# disk writeback does not disturb the timings.
if [[ -d /dev/shm && -w /dev/shm ]]; then DL=$(mktemp -d /dev/shm/fschunk-bench.XXXXXX); else DL=$TMP/dl; mkdir -p "$DL"; fi

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
if [[ -n $(cd "$REPO" && git status --porcelain --untracked-files=no -- . ':!docs/BENCHMARKS.md' 2>/dev/null) ]]; then REV+=" + uncommitted changes"; fi
log "bench/run.sh ${ORIG_ARGS[*]}: scenarios $SCENARIOS, large file $(human_size "$SIZE"), namespace file $(human_size "$NS_SIZE")$( ((QUICK)) && echo ', quick')"
install_packages
build
head -c 32 /dev/urandom >"$KEY"
make_keys
make_files

HAVE_NS=0
NS_SKIP=""
if selected c || selected d || selected e; then
	if ((!IS_ROOT)); then
		NS_SKIP="needs root (network namespaces, tc, nftables)"
		log "scenarios c, d and the namespace half of e are skipped: $NS_SKIP"
	elif ! ip netns add "fsb$$-probe" 2>/dev/null; then
		NS_SKIP="cannot create network namespaces here"
		log "scenarios c, d and the namespace half of e are skipped: $NS_SKIP"
	else
		ip netns del "fsb$$-probe"
		setup_topology
		HAVE_NS=1
	fi
fi

sync
selected a && scenario_a
sync
selected b && scenario_b
# free the loopback stacks before the namespace and memory runs
for _s in lo-auto lo-mtu; do [[ -z ${GW_PID[$_s]:-} ]] || stop_gw_stack "$_s"; done
if selected c; then
	if ((HAVE_NS)); then scenario_c; else row c "three $LINK_RATE links" "skipped: $NS_SKIP"; fi
fi
if selected d; then
	if ((HAVE_NS)); then scenario_d; else row d "loss and slow link" "skipped: $NS_SKIP"; fi
fi
selected e && scenario_e
selected f && scenario_f

# ---------------------------------------------------------------- report
write_report
echo
cat "$OUT_DIR/results.md"
echo
log "written bench/out/results.md (logs in bench/out/logs/)"

if ((UPDATE_DOCS)); then
	[[ -f $DOCS ]] || die "$DOCS not found"
	new=$(mktemp)
	if grep -q '^<!-- bench:begin -->' "$DOCS" && grep -q '^<!-- bench:end -->' "$DOCS"; then
		awk -v f="$OUT_DIR/results.md" '
			/^<!-- bench:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
			/^<!-- bench:end -->/ { skip = 0 }
			!skip { print }' "$DOCS" >"$new"
	else
		{
			cat "$DOCS"
			echo
			echo "## End-to-end comparison (bench/run.sh)"
			echo
			echo "<!-- bench:begin -->"
			cat "$OUT_DIR/results.md"
			echo "<!-- bench:end -->"
		} >"$new"
	fi
	cat "$new" >"$DOCS"
	rm -f "$new"
	log "updated the bench section of docs/BENCHMARKS.md"
fi
