"""Certbot: webroot issuance from Pebble, renewal by the distribution's timer, our deploy hook."""

import re

import pytest

HOOK = "/etc/letsencrypt/renewal-hooks/deploy/50-reload-nginx"


def renewal_environment(host):
    """The environment certbot.service renews with (our drop-in adds the ACME CA bundle)."""
    env = host.run("systemctl show certbot.service --property=Environment --value").stdout.strip()
    assert env.startswith("REQUESTS_CA_BUNDLE="), env
    return env


def test_renewal_uses_the_webroot_authenticator_and_pebble(host):
    conf = host.file("/etc/letsencrypt/renewal/bookmarks.conf").content_string
    assert "authenticator = webroot" in conf
    assert "server = https://localhost:14000/dir" in conf
    assert "nginx" not in conf.replace("reload-nginx", "")


def test_nginx_config_is_only_ours(host):
    # The nginx plugin would have added "managed by Certbot" lines.
    site = host.file("/etc/nginx/sites-available/bookmarks.conf").content_string
    assert "Certbot" not in site
    assert "ssl_certificate /etc/ssl/bookmarks/fullchain.pem;" in site


def test_renewal_timer_is_the_distributions(host):
    timer = host.service("certbot.timer")
    assert timer.is_enabled
    assert timer.is_running
    assert host.run("grep -rl certbot /etc/cron.d /etc/crontab 2>/dev/null").stdout.strip() in (
        "",
        "/etc/cron.d/certbot",  # the package's, which stands down when systemd runs
    )


def test_deploy_hook_checks_nginx_before_reloading(host):
    hook = host.file(HOOK)
    assert hook.mode == 0o755
    assert hook.user == "root"
    text = hook.content_string
    assert text.index("nginx -t") < text.index("systemctl reload nginx.service")


def renewal_server(host):
    """The ACME server the lineage renews with (certbot's dry run would default to LE staging)."""
    conf = host.file("/etc/letsencrypt/renewal/bookmarks.conf").content_string
    return re.search(r"^server = (\S+)$", conf, re.MULTILINE).group(1)


def test_renew_dry_run_succeeds_and_names_our_hook(host):
    env = renewal_environment(host)
    server = renewal_server(host)
    host.run("rm -rf /var/tmp/edge-dry-run-logs")
    cmd = host.run(
        f"env {env} certbot renew --dry-run --server {server} --no-random-sleep-on-renew"
        " --logs-dir /var/tmp/edge-dry-run-logs 2>&1"
    )
    assert cmd.rc == 0, cmd.stdout
    assert "all simulated renewals succeeded" in cmd.stdout.lower()
    # Certbot logs the hooks a real renewal would run in this run's debug log.
    log = host.file("/var/tmp/edge-dry-run-logs/letsencrypt.log").content_string
    hooks = re.findall(r"Dry run: skipping deploy hook command: (\S+)", log)
    assert hooks == [HOOK]


def test_timer_service_runs_cleanly(host):
    # What the timer starts: `certbot -q renew` with the drop-in's CA bundle (nothing is due).
    cmd = host.run("systemctl start certbot.service")
    assert cmd.rc == 0, host.run("journalctl -u certbot.service -n 20 --no-pager").stdout


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/etc/ssl/bookmarks/self-signed", 0o700),
        ("/etc/ssl/bookmarks/self-signed/privkey.pem", 0o600),
    ],
)
def test_bootstrap_key_material_is_private(host, path, mode):
    assert host.file(path).mode == mode
