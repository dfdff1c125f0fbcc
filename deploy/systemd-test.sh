#!/usr/bin/env bash
# Runs the Debian packages under a real systemd, on a machine (or in a
# container) where systemd is not PID 1: boots this machine's own root,
# seen through an overlay (writes go to a scratch folder), in a container
# with systemd-nspawn and a private network, then inside it:
#   dpkg -i both packages; nothing starts without the key;
#   key, gateway address, two folders (/srv/files and "/home/alice/my
#   files", a space and under /home); enable --now httpgw.service and one
#   fastfilesrv@ instance per folder; fetch files through the gateway;
#   check the sandbox (dynamic user, no capabilities, seccomp, served
#   folder read-only, hash cache in /var/cache/fastfilesrv);
#   dpkg -i again (upgrade: running services restart, conffiles kept);
#   dpkg --purge (services stopped and disabled, caches gone).
# By hand, as root, after deploy/build-deb.sh:
#   apt-get install systemd-container   # systemd-nspawn
#   deploy/systemd-test.sh
# Not in CI: it boots every service this machine has enabled, inside the
# container. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root"
command -v systemd-nspawn >/dev/null || fail "needs systemd-nspawn (apt-get install systemd-container)"
debs=(dist/httpgw_*.deb dist/fastfilesrv_*.deb)
[[ -f ${debs[0]} && -f ${debs[1]} ]] || fail "no packages in dist/: run deploy/build-deb.sh"

d=$(mktemp -d)
mkdir "$d/upper" "$d/work" "$d/root"
nspawn= runmount=
cleanup() {
	if [[ -n $nspawn ]]; then
		# SIGTERM: nspawn asks the container to power off; a second one
		# ends it at once.
		kill "$nspawn" 2>/dev/null || true
		for _ in $(seq 60); do
			kill -0 "$nspawn" 2>/dev/null || break
			sleep 0.5
		done
		kill "$nspawn" 2>/dev/null || true
		wait "$nspawn" 2>/dev/null || true
	fi
	umount "$d/root" 2>/dev/null || true
	[[ -z $runmount ]] || umount /run/systemd/nspawn 2>/dev/null || true
	rm -rf "$d"
}
trap cleanup EXIT
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root"
systemd-id128 new >"$d/root/etc/machine-id" # nspawn refuses the host's
cp "${debs[@]}" "$d/root/root/"
# nspawn keeps state in /run/systemd/nspawn and insists that it be a tmpfs.
if [[ $(stat -f -c %T /run/systemd/nspawn 2>/dev/null) != tmpfs ]]; then
	mkdir -p /run/systemd/nspawn
	mount -t tmpfs tmpfs /run/systemd/nspawn
	runmount=1
fi
# --keep-unit --register=no: no system bus needed on the host.
systemd-nspawn -D "$d/root" --private-network --machine="fschunk-test-$$" --register=no --keep-unit \
	--link-journal=no --console=pipe -b >"$d/boot.log" 2>&1 &
nspawn=$!
init=
for _ in $(seq 100); do
	init=$(ps -o pid= --ppid "$nspawn" | tr -d ' ' || true)
	[[ -n $init ]] && break
	sleep 0.1
done
[[ -n $init ]] || { cat "$d/boot.log"; fail "the container did not start"; }
inside() { nsenter -t "$init" -m -u -i -n -p -- "$@"; }
for _ in $(seq 120); do
	state=$(inside systemctl is-system-running 2>/dev/null || true)
	[[ $state == running || $state == degraded ]] && break
	sleep 0.5
done
echo "container booted ($state)"

inside bash -euo pipefail -s <<'EOF'
fail() { echo "FAIL: $*" >&2; journalctl --no-pager -n 30 -u httpgw.service -u 'fastfilesrv@*' >&2; exit 1; }
ip link set lo up
cd /root
dpkg -i httpgw_*.deb fastfilesrv_*.deb >/tmp/dpkg.log
systemctl start httpgw.service
[[ $(systemctl is-active httpgw.service) == inactive ]] || fail "httpgw started without a key"
echo "no key: httpgw.service not started (ConditionPathExists)"

(umask 077; head -c 32 /dev/urandom >/etc/fschunk/fschunk.key)
echo FASTFILESRV_GATEWAY=127.0.0.1:8888 >>/etc/fschunk/fastfilesrv.env
mkdir -p /srv/files "/home/alice/my files" /home/bob
head -c 5000000 /dev/urandom >/srv/files/big.bin
echo home >"/home/alice/my files/h.txt"
echo secret >/home/bob/secret.txt
chmod -R a+rX /srv/files /home/alice
srv=fastfilesrv@srv-files.service
home="fastfilesrv@$(systemd-escape --path "/home/alice/my files").service"
systemctl enable --now httpgw.service "$srv" "$home" 2>/dev/null
get() { # path, file to compare with
	for _ in $(seq 60); do
		if curl -fsS -o /tmp/got "http://127.0.0.1:8080/$1" 2>/dev/null; then
			cmp -s /tmp/got "$2" || fail "$1 differs"
			return
		fi
		sleep 0.5
	done
	fail "could not fetch $1"
}
get big.bin /srv/files/big.bin
get h.txt "/home/alice/my files/h.txt"
echo "fetched big.bin (5 MB) and h.txt through httpgw.service, $srv and $home"
[[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/metrics) == 200 ]] || fail "/metrics"

for u in httpgw.service "$srv" "$home"; do
	pid=$(systemctl show -p MainPID --value "$u")
	user=$(ps -o user= -p "$pid")
	[[ $user != root ]] || fail "$u runs as root"
	grep -q '^CapEff:.*0000000000000000$' "/proc/$pid/status" || fail "$u has capabilities"
	grep -q '^NoNewPrivs:.*1$' "/proc/$pid/status" || fail "$u may gain privileges"
	grep -q '^Seccomp:.*2$' "/proc/$pid/status" || fail "$u has no system call filter"
	echo "$u: user $user, no capabilities, no new privileges, seccomp filter"
done
pid=$(systemctl show -p MainPID --value "$srv")
findmnt -N "$pid" -no OPTIONS /srv/files | grep -q '^ro,' || fail "/srv/files is writable by $srv"
nsenter -t "$pid" -m ls /home | grep -q . && fail "$srv sees home folders: $(nsenter -t "$pid" -m ls /home)"
pid=$(systemctl show -p MainPID --value "$home")
[[ $(nsenter -t "$pid" -m ls /home) == alice ]] || fail "$home sees $(nsenter -t "$pid" -m ls /home) in /home"
echo "served folders read-only; /home is empty but for the served folder"
ls /var/cache/fastfilesrv/srv-files.state "/var/cache/fastfilesrv/home-alice-my\x20files.state" >/dev/null || fail "no hash caches"

before=$(systemctl show -p MainPID --value httpgw.service)
echo "# edited" >>/etc/fschunk/httpgw.env
dpkg -i httpgw_*.deb fastfilesrv_*.deb >/tmp/dpkg.log
[[ $(systemctl show -p MainPID --value httpgw.service) != "$before" ]] || fail "upgrade did not restart httpgw"
[[ $(tail -1 /etc/fschunk/httpgw.env) == "# edited" ]] || fail "upgrade replaced the edited httpgw.env"
systemctl is-active --quiet httpgw.service "$srv" "$home" || fail "not running after the upgrade"
get big.bin /srv/files/big.bin
echo "upgrade: services restarted, edited conffile kept"

dpkg --purge httpgw fastfilesrv >/tmp/dpkg.log 2>&1
[[ -z $(systemctl list-units --all --no-legend 'httpgw*' 'fastfilesrv@*') ]] || fail "units left: $(systemctl list-units --all --no-legend 'httpgw*' 'fastfilesrv@*')"
[[ -z $(ls /etc/systemd/system/multi-user.target.wants/ | grep -E 'httpgw|fastfilesrv') ]] || fail "enablement symlinks left"
[[ ! -e /var/cache/fastfilesrv && ! -e /var/cache/private/fastfilesrv ]] || fail "hash caches left"
[[ $(ls -A /etc/fschunk) == fschunk.key ]] || fail "/etc/fschunk holds $(ls -A /etc/fschunk)"
echo "purge: services stopped and disabled, caches removed, the key left to its owner"
EOF
echo "PASS: the packages under systemd"
