#!/usr/bin/env bash
# CI check of the Debian packages (called by .ci/run, step "Debian
# packages"): build them with deploy/build-deb.sh, install them with dpkg -i
# on a machine where they are not installed, check what they installed,
# run both programs from /usr/bin with their units' command lines and
# environment files, fetch a file through them, verify the units with
# systemd-analyze, and purge the packages, leaving the machine as found.
# Needs root (dpkg); skips with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]] || ! command -v dpkg >/dev/null; then
	echo "SKIP: needs root and dpkg"
	exit 0
fi
t0=$SECONDS
fail() { echo "FAIL: $*" >&2; exit 1; }

# A clean state: a leftover install (an earlier run that died) is purged
# first, and /etc/fschunk must not hold anything of an operator's.
for p in httpgw fastfilesrv; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed\|config-files'; then
		echo "purging a leftover $p package"
		dpkg --purge "$p" >/dev/null
	fi
done
[[ ! -e /etc/fschunk ]] || fail "/etc/fschunk exists before install: $(ls -A /etc/fschunk)"
[[ ! -e /etc/httpgw ]] || fail "/etc/httpgw exists before install: $(ls -A /etc/httpgw)"

bash deploy/build-deb.sh
echo "built in $((SECONDS - t0))s"
debs=(dist/httpgw_*.deb dist/fastfilesrv_*.deb)
version=$(dpkg-deb -f "${debs[0]}" Version)
revision=$(git rev-parse HEAD)

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	dpkg --purge httpgw fastfilesrv >/dev/null 2>&1 || true
	rm -rf "$work" /etc/fschunk/fschunk.key /etc/fschunk/httpgw.key /etc/fschunk/fastfilesrv.key /etc/httpgw/allowed-servers
	rmdir /etc/fschunk /etc/httpgw 2>/dev/null || true
}
trap cleanup EXIT

dpkg -i "${debs[@]}" >"$work/dpkg.log" || { cat "$work/dpkg.log"; fail "dpkg -i"; }
for p in httpgw fastfilesrv; do
	got=$(/usr/bin/$p -version)
	echo "$got"
	[[ $got == "$p $version ("*"revision $revision"* ]] || fail "$p -version: want version $version and revision $revision"
done
[[ $(stat -c %a /etc/fschunk) == 700 ]] || fail "/etc/fschunk is $(stat -c %a /etc/fschunk), want 700"
[[ $(stat -c %a /etc/httpgw) == 755 ]] || fail "/etc/httpgw is $(stat -c %a /etc/httpgw), want 755 (the service's dynamic user reads the allowed servers there)"
for f in /etc/fschunk/httpgw.env /etc/fschunk/fastfilesrv.env; do
	[[ $(stat -c %a "$f") == 600 ]] || fail "$f is $(stat -c %a "$f"), want 600"
	dpkg-query -W -f='${Conffiles}\n' httpgw fastfilesrv | grep -q " $f " || fail "$f is not a conffile"
done

# The units as systemd would read them.
if command -v systemd-analyze >/dev/null; then
	# verify warns on stderr but exits 0 on unknown keys and bad values:
	# any output is a failure.
	out=$(systemd-analyze verify httpgw.service fastfilesrv@srv-files.service 2>&1) || fail "systemd-analyze verify: $out"
	[[ -z $out ]] || fail "systemd-analyze verify: $out"
	echo "systemd-analyze verify: httpgw.service fastfilesrv@srv-files.service OK"
	for u in httpgw.service fastfilesrv@srv-files.service; do
		systemd-analyze security --offline=true "$u" 2>/dev/null | tail -1 || true
	done
else
	echo "SKIP systemd-analyze verify: systemd-analyze not installed"
fi

# Start both as their units would, by hand: systemd does not run as PID 1
# here. The unit's ExecStart= with its specifiers and the credential
# directory filled in, its environment file read, then a few settings for
# this test (loopback, any port) on top.
if [[ -d /run/systemd/system ]]; then
	echo "(systemd runs here, but CI does not start services on the build machine: run by hand)"
fi
head -c 32 /dev/urandom >/etc/fschunk/fschunk.key
chmod 600 /etc/fschunk/fschunk.key
# The key pairs as README's set-up makes them, with the installed tools.
gwpub=$(/usr/bin/httpgw genkey -out /etc/fschunk/httpgw.key)
srvpub=$(/usr/bin/fastfilesrv genkey -out /etc/fschunk/fastfilesrv.key)
[[ $(stat -c %a /etc/fschunk/httpgw.key) == 600 ]] || fail "genkey -out wrote mode $(stat -c %a /etc/fschunk/httpgw.key), want 600"
[[ $(/usr/bin/fastfilesrv pubkey </etc/fschunk/fastfilesrv.key) == "$srvpub" ]] || fail "pubkey does not give genkey's public key"
echo "$srvpub ci-server" >/etc/httpgw/allowed-servers
mkdir -p "$work/creds" "$work/cache" "$work/srv files"
cp /etc/fschunk/fschunk.key /etc/fschunk/httpgw.key /etc/fschunk/fastfilesrv.key "$work/creds/"
head -c 3000000 /dev/urandom >"$work/srv files/sample.bin"

execStart() { # unit [%f %i] -> cmd, the words of its ExecStart=
	local line f=${2:-} i=${3:-}
	line=$(sed -n 's/^ExecStart=//p' "/lib/systemd/system/$1")
	line=${line//'${CREDENTIALS_DIRECTORY}'/$work/creds}
	line=${line//%f/$f}
	line=${line//%i/$i}
	line=${line//%C/$work/cache}
	eval "cmd=($line)"
}
(
	set -a
	. /etc/fschunk/httpgw.env
	HTTPGW_HTTP=127.0.0.1:0 HTTPGW_UDP=127.0.0.1:0 HTTPGW_ADMIN=
	set +a
	execStart httpgw.service
	exec "${cmd[@]}"
) >"$work/httpgw.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	grep -q 'httpgw listening' "$work/httpgw.log" && break
	sleep 0.1
done
http=$(grep -o ' http=[^ ]*' "$work/httpgw.log" | head -1 | cut -d= -f2 || true)
udp=$(grep -o ' udp=[^ ]*' "$work/httpgw.log" | head -1 | cut -d= -f2 || true)
[[ -n $http && -n $udp ]] || { cat "$work/httpgw.log"; fail "httpgw did not start"; }
(
	set -a
	. /etc/fschunk/fastfilesrv.env
	FASTFILESRV_GATEWAY=$udp
	FASTFILESRV_GATEWAY_PUBLIC_KEY=$gwpub
	set +a
	mkdir -p "$work/cache/fastfilesrv"
	execStart fastfilesrv@.service "$work/srv files" srv-files
	exec "${cmd[@]}"
) >"$work/fastfilesrv.log" 2>&1 &
pids+=($!)
fetch() { # url, file: curl, or wget (which .ci/run installs)
	if command -v curl >/dev/null; then
		curl -fsS -o "$2" "$1"
	else
		wget -q -O "$2" "$1"
	fi
}
ok=
for _ in $(seq 300); do
	if fetch "http://$http/sample.bin" "$work/got.bin" 2>/dev/null; then
		ok=1
		break
	fi
	sleep 0.1
done
if [[ -z $ok ]] || ! cmp -s "$work/got.bin" "$work/srv files/sample.bin"; then
	echo "--- httpgw log"; cat "$work/httpgw.log"
	echo "--- fastfilesrv log"; cat "$work/fastfilesrv.log"
	fail "could not fetch sample.bin through the installed programs"
fi
[[ -s $work/cache/fastfilesrv/srv-files.state ]] || fail "no hash cache at the unit's -state path"
grep -q "server joined.*name=ci-server.*key=${srvpub:0:8}" "$work/httpgw.log" || { cat "$work/httpgw.log"; fail "the gateway did not name the server by its allowed-servers line and key"; }
echo "fetched sample.bin (3000000 bytes, identical) through /usr/bin/httpgw and /usr/bin/fastfilesrv run by their units' command lines"
for pid in "${pids[@]}"; do kill "$pid"; done
wait || true
pids=()

rm /etc/fschunk/fschunk.key /etc/fschunk/httpgw.key /etc/fschunk/fastfilesrv.key /etc/httpgw/allowed-servers # the operator's: purge leaves them
dpkg --purge httpgw fastfilesrv >"$work/dpkg.log" || { cat "$work/dpkg.log"; fail "dpkg --purge"; }
[[ ! -e /etc/fschunk ]] || fail "/etc/fschunk left after purge: $(ls -A /etc/fschunk)"
[[ ! -e /etc/httpgw ]] || fail "/etc/httpgw left after purge: $(ls -A /etc/httpgw)"
for f in /usr/bin/httpgw /usr/bin/fastfilesrv /lib/systemd/system/httpgw.service /lib/systemd/system/fastfilesrv@.service; do
	[[ ! -e $f ]] || fail "$f left after purge"
done
echo "purged; Debian packages checked in $((SECONDS - t0))s"
