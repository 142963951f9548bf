"""TLS: a certificate issued by Pebble over real HTTP-01, and only TLS 1.2 and 1.3."""

import pytest
from conftest import ALIAS, DOMAIN

S_CLIENT = "openssl s_client -connect 127.0.0.1:443 -servername {name} {options} </dev/null"


def test_served_certificate_chains_to_pebbles_root_and_names_the_domain(host, pebble_root):
    for name in (DOMAIN, ALIAS):
        cmd = host.run(
            S_CLIENT.format(
                name=name,
                options=f"-CAfile {pebble_root} -verify_return_error -verify_hostname {name}",
            )
        )
        assert cmd.rc == 0, cmd.stderr
        assert "Verify return code: 0 (ok)" in cmd.stdout


def test_served_certificate_is_certbots_not_the_bootstrap_one(host):
    served = host.run(
        S_CLIENT.format(name=DOMAIN, options="") + " 2>/dev/null | openssl x509 -noout -issuer"
    )
    assert "Pebble Intermediate CA" in served.stdout, served.stdout
    for name in ("fullchain", "privkey"):
        target = host.run("readlink /etc/ssl/bookmarks/%s.pem", name).stdout.strip()
        assert target == f"/etc/letsencrypt/live/bookmarks/{name}.pem"


def test_certificate_is_not_trusted_without_pebbles_root(host):
    # The check above can fail: the same handshake against the system CAs is refused.
    cmd = host.run(
        S_CLIENT.format(name=DOMAIN, options="-CApath /etc/ssl/certs -verify_return_error")
    )
    assert cmd.rc != 0


@pytest.fixture(scope="module")
def legacy_client_works(host):
    """Proof that this openssl client still speaks TLS 1.0/1.1 when a server allows it.

    A throwaway `openssl s_server` that allows them answers the same client options that nginx
    must refuse, so the refusal below is nginx's and not the client's.
    """
    host.run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
        "-subj /CN=legacy -keyout /var/tmp/legacy.key -out /var/tmp/legacy.pem 2>/dev/null"
    )
    host.run(
        "systemd-run --unit=edge-legacy-tls --collect openssl s_server -accept 127.0.0.1:8443 "
        "-cert /var/tmp/legacy.pem -key /var/tmp/legacy.key -cipher DEFAULT@SECLEVEL=0 -www"
    )
    host.run("timeout 10 sh -c 'until ss -ltn | grep -q :8443; do sleep 0.2; done'")
    yield
    host.run("systemctl stop edge-legacy-tls")


@pytest.mark.parametrize(("flag", "name"), [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")])
def test_old_tls_versions_are_refused(host, legacy_client_works, flag, name):
    options = f"{flag} -cipher DEFAULT@SECLEVEL=0"
    control = host.run(
        f"openssl s_client -connect 127.0.0.1:8443 {options} </dev/null 2>&1"
        " | grep -E '^ *Protocol *:'"
    )
    assert name in control.stdout, f"client cannot speak {name}: {control.stdout}"
    cmd = host.run(S_CLIENT.format(name=DOMAIN, options=options))
    assert cmd.rc != 0
    assert "Cipher is (NONE)" in cmd.stdout or "no protocols available" in cmd.stderr


@pytest.mark.parametrize(("flag", "name"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_current_tls_versions_are_served(host, flag, name):
    cmd = host.run(S_CLIENT.format(name=DOMAIN, options=flag) + " 2>&1")
    assert cmd.rc == 0, cmd.stdout
    assert f"Protocol  : {name}" in cmd.stdout or f"New, {name}" in cmd.stdout


def test_dhe_ciphers_are_not_offered(host):
    cmd = host.run(S_CLIENT.format(name=DOMAIN, options="-tls1_2 -cipher DHE"))
    assert cmd.rc != 0


def test_unknown_names_get_no_tls_handshake(host):
    cmd = host.run(S_CLIENT.format(name="unknown.test", options=""))
    assert cmd.rc != 0
