#!/bin/bash
# Boots a real systemd in a container over an overlay of this machine's own tree and runs
# a scenario against it, which prints one "CHECK name value" line per fact the test
# asserts.  Run inside `unshare --pid --mount --mount-proc --fork`: every mount and the
# container end with that namespace.
#   boot.sh SOURCE_TREE FILES_DIR WORK_DIR SCENARIO
# SOURCE_TREE is copied to /opt/stapled-src and FILES_DIR (certificates, the docs' blocks
# as files) to /opt/test inside; WORK_DIR (an empty directory the caller removes) gets a
# tmpfs for the overlay.  SCENARIO is sourced with $root (the container's tree) and
# `inside CMD...` (run CMD in the container) defined.
set -euo pipefail
src=$1 files=$2 base=$3 scenario=$4

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
# The source and files go into the container's own tree: other mounts (a tmpfs /tmp,
# say) are not part of the overlay, and the checkout may live on one.
mkdir -p "$root/opt/stapled-src" "$root/opt/test"
tar -C "$src" --exclude=./.venv --exclude=./.venv-newest --exclude=./.git --exclude=./dist \
    -cf - . | tar -C "$root/opt/stapled-src" -xf -
cp -a "$files/." "$root/opt/test/"

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

# Waits until "$@" succeeds, for at most $1 tenths of a second; the CHECK lines after it
# say whether it did.
until_ok() {
    local tenths=$1
    shift
    for _ in $(seq "$tenths"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 0
}

# shellcheck source=/dev/null
source "$scenario"

inside systemctl poweroff >/dev/null 2>&1 || true
wait "$nspawn" 2>/dev/null || true
trap - EXIT
