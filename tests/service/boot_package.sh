# Scenario for boot.sh: README's install (the Debian package, built and installed as
# written), then README's nginx recipe end to end under the shipped units and user:
# certbot's tree made readable as docs/operations.md says, the configuration and the
# server block as written, nginx serving the staple, a renewal stapled and reloaded
# through the path unit, docs/monitoring.md's probe and metrics, the certbot hook and
# HAProxy's source.  /opt/test holds the certificates (v1, v2) and the docs' blocks.

inside bash -c 'cd /opt/stapled-src && bash -eu /opt/test/readme-install.sh' \
    >"$base/install.log" 2>&1 || { echo "install failed"; tail -30 "$base/install.log"; }
echo "CHECK package $(inside dpkg-query -W -f '${Status}' stapled 2>/dev/null || true)"
echo "CHECK default_active $(inside systemctl is-active stapled.service || true)"
echo "CHECK default_path $(inside systemctl is-active stapled-reload.path || true)"
echo "CHECK user $(inside id -u stapled >/dev/null 2>&1 && echo yes || echo no)"

# certbot's tree: live/ symlinks into archive/, both root-only, keys 0600.
lineage() {
    local v=$1
    # certbot makes the directories once; a renewal only adds files and relinks.
    [ "$v" = 1 ] && inside install -d -m 700 /etc/letsencrypt/live/www.example.com \
        /etc/letsencrypt/archive/www.example.com
    for kind in cert chain fullchain privkey; do
        inside install -m 644 "/opt/test/$kind$v.pem" "/etc/letsencrypt/archive/www.example.com/$kind$v.pem"
    done
    inside chmod 600 "/etc/letsencrypt/archive/www.example.com/privkey$v.pem"
    for kind in cert chain fullchain privkey; do
        # certbot replaces each link: unlink, then symlink.
        inside rm -f "/etc/letsencrypt/live/www.example.com/$kind.pem"
        inside ln -s "../../archive/www.example.com/$kind$v.pem" \
            "/etc/letsencrypt/live/www.example.com/$kind.pem"
    done
}
inside install -d -m 700 /etc/letsencrypt/live /etc/letsencrypt/archive
lineage 1
inside bash -eu /opt/test/readacl.sh >"$base/acl.log" 2>&1 || { echo "acl failed"; cat "$base/acl.log"; }
inside cp /opt/test/readme-nginx-config.toml /etc/stapled/stapled.toml
inside bash -eu /opt/test/readme-after-install.sh >"$base/after.log" 2>&1 && after=0 || after=$?
echo "CHECK after_install $after"
[ "$after" = 0 ] || cat "$base/after.log"
until_ok 300 test -s "$root/var/lib/stapled/www.example.com.der"
echo "CHECK staple $(test -s "$root/var/lib/stapled/www.example.com.der" && echo yes || echo no)"
echo "CHECK snippet $(grep -c ssl_stapling_file "$root/var/lib/stapled/www.example.com.nginx.conf" || true)"

# nginx with README's server block, and nothing else listening.
inside rm -f /etc/nginx/sites-enabled/default
inside cp /opt/test/readme-nginx-site.conf /etc/nginx/sites-enabled/www.example.com
inside systemctl start nginx.service >/dev/null 2>&1 || inside journalctl -u nginx --no-pager -q | tail -5
# Whole outputs in variables: with pipefail, `grep -q` closing a pipe early fails it.
served() {
    inside openssl s_client -connect 127.0.0.1:443 -servername www.example.com -status \
        </dev/null 2>/dev/null || true
}
serial() {
    local out
    out=$(served)
    inside openssl x509 -noout -serial <<<"$out" 2>/dev/null | sed 's/^serial=//' || true
}
staple_good() {
    local out
    out=$(served)
    [[ "$out" == *"Cert Status: good"* ]]
}
until_ok 100 staple_good
echo "CHECK served_v1 $(staple_good && echo good || echo none) $(serial)"

# docs/monitoring.md: one endpoint, then the [[probe]] and [metrics] tables.
inside bash -c "$(sed -n 2p "$root/opt/test/monitoring-probe.sh")" >/dev/null 2>&1 && p=0 || p=$?
echo "CHECK probe_one $p"
inside bash -c 'cat /opt/test/monitoring-probe-config.toml /opt/test/monitoring-metrics.toml >>/etc/stapled/stapled.toml'
inside stapled check --quiet && c=0 || c=$?
echo "CHECK check_monitoring $c"
inside systemctl restart stapled.service
until_ok 100 inside curl -sf http://127.0.0.1:9477/metrics
echo "CHECK metrics_http $(inside curl -sf http://127.0.0.1:9477/metrics | grep -c '^stapled_staple_valid{cert="www.example.com"} 1' || true)"
inside bash -c "$(sed -n 1p "$root/opt/test/monitoring-probe.sh")" >/dev/null 2>&1 && p=0 || p=$?
echo "CHECK probe_config $p"

# A renewal as certbot makes it: the daemon notices, staples, and nginx is reloaded by
# the root reload unit.
v1=$(serial)
lineage 2
served_v2() { [ "$(serial)" != "$v1" ] && staple_good; }
until_ok 300 served_v2
echo "CHECK served_v2 $(served_v2 && echo yes || echo no)"
served_v2 || inside journalctl -u stapled -u stapled-reload -u nginx --no-pager -q | tail -25
echo "CHECK reload_result $(inside systemctl show stapled-reload.service -p Result --value)"
until_ok 100 inside stapled probe
inside stapled probe >/dev/null 2>&1 && p=0 || p=$?
echo "CHECK probe_after_renewal $p"

# The certbot hook, installed as written and run as certbot would (root).
inside bash -c 'cd /opt/stapled-src && bash -eu /opt/test/operations-certbot-hook.sh'
inside env RENEWED_LINEAGE=/etc/letsencrypt/live/www.example.com \
    /etc/letsencrypt/renewal-hooks/deploy/stapled && h=0 || h=$?
echo "CHECK hook $h"
# The hook's pass wrote the textfile of docs/monitoring.md's [metrics] too.
echo "CHECK textfile $(grep -c '^stapled_build_info' "$root/var/lib/stapled/metrics/stapled.prom" || true)"
echo "CHECK state_owner $(inside stat -c %U /var/lib/stapled/.stapled/state.json 2>/dev/null || echo none)"
inside stapled status >/dev/null 2>&1 && s=0 || s=$?
echo "CHECK status $s"

# HAProxy's source from docs/web-servers.md, with the output_dir every example uses.
inside install -d /etc/haproxy/certs
inside bash -c '{ echo "output_dir = \"/var/lib/stapled\""; cat /opt/test/web-haproxy.toml; } >/opt/test/haproxy.toml'
inside stapled check --quiet --config /opt/test/haproxy.toml >/dev/null 2>&1 && c=0 || c=$?
echo "CHECK haproxy_config $c"

# docs/revocation.md: revoked_command as written, a certificate without OCSP that its CRL
# revokes (served by nginx here), and certbot as a stub (renewing needs an ACME CA).
echo "CHECK renew_path $(inside systemctl is-active stapled-renew.path || true)"
inside bash -c 'printf "#!/bin/sh\necho \"\$@\" >>/var/log/certbot-stub.log\n" >/usr/bin/certbot'
inside chmod 755 /usr/bin/certbot
inside cp /opt/test/crl-site.conf /etc/nginx/sites-enabled/crl
inside systemctl reload nginx.service
# A new lineage, made as certbot makes one: it takes the default ACL of live/.
inside mkdir /etc/letsencrypt/live/revoked.example
inside install -m 644 /opt/test/revoked-cert.pem /etc/letsencrypt/live/revoked.example/cert.pem
inside install -m 644 /opt/test/revoked-chain.pem /etc/letsencrypt/live/revoked.example/chain.pem
inside bash -c '{ cat /opt/test/revocation-config.toml; cat /etc/stapled/stapled.toml; } >/tmp/s.toml && cat /tmp/s.toml >/etc/stapled/stapled.toml'
inside systemctl reload stapled.service || inside journalctl -u stapled --no-pager -q | tail -5
until_ok 300 test -s "$root/var/log/certbot-stub.log"
echo "CHECK certbot $(cat "$root/var/log/certbot-stub.log" 2>/dev/null || echo none)"
[ -s "$root/var/log/certbot-stub.log" ] ||
    inside journalctl -u stapled -u stapled-renew --no-pager -q | tail -25
echo "CHECK renew_result $(inside systemctl show stapled-renew.service -p Result --value)"
inside stapled status >/dev/null 2>&1 && s=0 || s=$?
echo "CHECK status_revoked $s"
