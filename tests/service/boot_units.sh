#!/bin/bash
# Boots a real systemd in a container over an overlay of this machine's own tree, installs
# stapled and its units the way docs/operations.md says, and prints one "CHECK name value"
# line per fact the test asserts.  Run inside `unshare --pid --mount --mount-proc --fork`:
# every mount and the container end with that namespace.
#   boot_units.sh SOURCE_TREE CERT_PEM OCSP_URL WORK_DIR
# WORK_DIR (an empty directory the caller removes) gets a tmpfs for the overlay.
set -euo pipefail
src=$1 cert=$2 url=$3 base=$4

mount -t tmpfs tmpfs "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
root=$base/root

# A target of our own: the machine's other services (web servers, databases) stay down.
cat >"$root/etc/systemd/system/stapled-test.target" <<'UNIT'
[Unit]
Description=stapled unit test
Requires=basic.target
After=basic.target
AllowIsolate=yes
UNIT
install -D -m 644 "$cert" "$root/etc/stapled/certs/site.pem"
# The source goes into the container's own tree: other mounts (a tmpfs /tmp, say) are
# not part of the overlay, and the checkout may live on one.
mkdir -p "$root/opt/stapled-src"
tar -C "$src" --exclude=./.venv --exclude=./.git -cf - . | tar -C "$root/opt/stapled-src" -xf -
cat >"$root/etc/stapled/stapled.toml" <<CONF
output_dir = "/var/lib/stapled"
certificates = [{ path = "/etc/stapled/certs", ocsp_url = "$url" }]
reload_request_file = "/var/lib/stapled/reload-request"
CONF
install -D -m 644 "$src"/systemd/stapled.sysusers "$root/etc/sysusers.d/stapled.conf"
install -m 644 "$src"/systemd/*.service "$src"/systemd/*.timer "$src"/systemd/*.path \
    "$root/etc/systemd/system/"

systemd-nspawn -D "$root" --keep-unit --register=no --link-journal=no -b --console=pipe \
    systemd.unit=stapled-test.target >"$base/console.log" 2>&1 </dev/null &
nspawn=$!
trap 'kill "$nspawn" 2>/dev/null || true; wait "$nspawn" 2>/dev/null || true' EXIT

init=""
for _ in $(seq 600); do
    init=$(pgrep -P "$nspawn" -x systemd || true)
    [ -n "$init" ] && break
    sleep 0.1
done
[ -n "$init" ] || { echo "no init"; cat "$base/console.log"; exit 1; }
inside() { nsenter -t "$init" -m -u -i -p -n -- "$@"; }
for _ in $(seq 600); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
done
echo "CHECK booted $state"

# As the docs install it: a venv under /opt (PEP 668), the sysusers user, the units.
inside /usr/bin/python3 -m venv /opt/stapled
inside /opt/stapled/bin/pip install -q --disable-pip-version-check /opt/stapled-src >"$base/pip.log" 2>&1 \
    || { echo "pip install failed"; tail -20 "$base/pip.log"; }
inside systemd-sysusers
inside systemctl daemon-reload

start=$(date +%s%N)
inside systemctl enable --now stapled.service stapled-reload.path >/dev/null 2>&1 || true
echo "CHECK service $(inside systemctl is-active stapled.service || true)"
if [ "$(inside systemctl is-active stapled.service || true)" != active ]; then
    inside journalctl -u stapled.service --no-pager -q | tail -20
fi
echo "CHECK ready_ms $(( ($(date +%s%N) - start) / 1000000 ))"
echo "CHECK staple $(test -s "$root/var/lib/stapled/site.der" && echo yes || echo no)"

# The staple was new: stapled asked for a reload through the path unit, which ran the
# reload unit while nginx is not running (it must succeed and do nothing).
for _ in $(seq 100); do
    ran=$(inside systemctl show stapled-reload.service -p ExecMainStartTimestampMonotonic --value)
    [ "$ran" != "0" ] && break
    sleep 0.1
done
for _ in $(seq 100); do
    [ "$(inside systemctl is-active stapled-reload.service || true)" != "activating" ] && break
    sleep 0.1
done
echo "CHECK reload_ran $([ "$ran" != "0" ] && echo yes || echo no)"
echo "CHECK reload_result $(inside systemctl show stapled-reload.service -p Result --value)"

echo "CHECK timer_unit $(inside systemctl show stapled.timer -p Unit --value)"
inside systemctl start stapled-once.service || true
echo "CHECK once_result $(inside systemctl show stapled-once.service -p Result --value)"
echo "CHECK journal $(inside journalctl -t stapled --no-pager -q | grep -c 'site: good staple' || true)"

start=$(date +%s%N)
inside systemctl stop stapled.service
echo "CHECK stop_ms $(( ($(date +%s%N) - start) / 1000000 ))"
echo "CHECK stopped $(inside systemctl is-active stapled.service || true)"
inside systemctl poweroff >/dev/null 2>&1 || true
wait "$nspawn" 2>/dev/null || true
trap - EXIT
