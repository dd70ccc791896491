# Scenario for boot.sh: docs/operations.md's install from a checkout, run as written, then
# the service, the reload through the path unit, the timer's one-shot pass, the journal
# name, the cron line and a quick stop.  /opt/test holds site.pem (a leaf whose OCSP URL
# is the test responder) and the docs' blocks.

# A certbot tree as certbot leaves it (root-only), for the block's setfacl lines.
inside install -d -m 700 /etc/letsencrypt/live /etc/letsencrypt/archive
inside install -d -m 700 /etc/letsencrypt/archive/site /etc/letsencrypt/live/site
inside install -m 600 /opt/test/site.pem /etc/letsencrypt/archive/site/privkey1.pem
inside bash -c 'cd /opt/stapled-src && bash -eu /opt/test/operations-install.sh' \
    >"$base/install.log" 2>&1 || { echo "install failed"; tail -30 "$base/install.log"; }
echo "CHECK installed $(inside test -x /opt/stapled/bin/stapled && echo yes || echo no)"
echo "CHECK key_hidden $(inside runuser -u stapled -- cat /etc/letsencrypt/archive/site/privkey1.pem >/dev/null 2>&1 && echo no || echo yes)"
echo "CHECK live_readable $(inside runuser -u stapled -- ls /etc/letsencrypt/live/site >/dev/null 2>&1 && echo yes || echo no)"

# The configuration as the block leaves it names /etc/stapled/certs; a certificate there.
inside install -D -m 644 /opt/test/site.pem /etc/stapled/certs/site.pem
start=$(date +%s%N)
inside systemctl restart stapled.service >/dev/null 2>&1 || true
echo "CHECK service $(inside systemctl is-active stapled.service || true)"
if [ "$(inside systemctl is-active stapled.service || true)" != active ]; then
    inside journalctl -u stapled.service --no-pager -q | tail -20
fi
echo "CHECK ready_ms $(( ($(date +%s%N) - start) / 1000000 ))"
echo "CHECK staple $(test -s "$root/var/lib/stapled/site.der" && echo yes || echo no)"

# The staple was new: stapled asked for a reload through the path unit, which ran the
# reload unit while nginx is not running (it must succeed and do nothing).
ran=0
for _ in $(seq 100); do
    ran=$(inside systemctl show stapled-reload.service -p ExecMainStartTimestampMonotonic --value)
    [ "$ran" != "0" ] && break
    sleep 0.1
done
until_ok 100 test "$(inside systemctl is-active stapled-reload.service || true)" != activating
echo "CHECK reload_ran $([ "$ran" != "0" ] && echo yes || echo no)"
echo "CHECK reload_result $(inside systemctl show stapled-reload.service -p Result --value)"

# A broken configuration: `systemctl reload` fails, and the service keeps running.
pid=$(inside systemctl show stapled.service -p MainPID --value)
inside cp /etc/stapled/stapled.toml /etc/stapled/stapled.toml.good
echo 'refresh_at = 7' | inside tee -a /etc/stapled/stapled.toml >/dev/null
inside systemctl reload stapled.service >/dev/null 2>&1 && r=ok || r=refused
echo "CHECK broken_reload $r"
echo "CHECK same_pid $([ "$(inside systemctl show stapled.service -p MainPID --value)" = "$pid" ] && echo yes || echo no)"
echo "CHECK broken_logged $(inside journalctl -u stapled.service --no-pager -q | grep -c "key 'refresh_at'" || true)"
inside mv /etc/stapled/stapled.toml.good /etc/stapled/stapled.toml

# `systemctl reload` adding a local responder: it listens, in the same process.
printf '\n[responder]\nlisten = "127.0.0.1:47999"\n' | inside tee -a /etc/stapled/stapled.toml >/dev/null
inside systemctl reload stapled.service >/dev/null 2>&1 && r=ok || r=refused
echo "CHECK responder_reload $r"
answers() { inside curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:47999/ | grep -q '^[0-9]'; }
until_ok 100 answers
echo "CHECK responder_answers $(answers && echo yes || echo no)"
echo "CHECK responder_same_pid $([ "$(inside systemctl show stapled.service -p MainPID --value)" = "$pid" ] && echo yes || echo no)"

echo "CHECK timer_unit $(inside systemctl show stapled.timer -p Unit --value)"
inside systemctl start stapled-once.service || true
echo "CHECK once_result $(inside systemctl show stapled-once.service -p Result --value)"
echo "CHECK journal $(inside journalctl -t stapled --no-pager -q | grep -c 'site: good staple' || true)"

# The cron line as written: fields 7 on, as the user in field 6.
read -r _ _ _ _ _ user command <"$root/opt/test/operations-cron.txt"
# shellcheck disable=SC2086
inside runuser -u "$user" -- $command && cron=0 || cron=$?
echo "CHECK cron_exit $cron"

start=$(date +%s%N)
inside systemctl stop stapled.service
echo "CHECK stop_ms $(( ($(date +%s%N) - start) / 1000000 ))"
echo "CHECK stopped $(inside systemctl is-active stapled.service || true)"
