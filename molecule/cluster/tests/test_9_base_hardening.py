"""The base role's host hardening after site.yml: the files that carry it (a container's kernel
settings are the host kernel's and read-only, so the sysctl file is checked, not the values), the
login defaults, the PAM modules, blocked kernel modules, the banner, and sshd's further settings
where openssh-server is installed. One remote call per test, to keep them quick."""

from __future__ import annotations

import pytest
from conftest import DB, LB, LB2, WEB1, WEB2, node

SYSCTL = "/etc/sysctl.d/50-base-hardening.conf"


def test_kernel_settings_are_written_for_systemd_sysctl():
    lines = node(WEB1).file(SYSCTL).content_string.splitlines()
    expected = [
        "kernel.kptr_restrict = 2",
        "kernel.dmesg_restrict = 1",
        "kernel.sysrq = 0",
        "kernel.yama.ptrace_scope = 1",
        "kernel.unprivileged_bpf_disabled = 1",
        "net.core.bpf_jit_harden = 2",
        "fs.protected_regular = 2",
        "fs.suid_dumpable = 0",
        "net.ipv4.conf.all.accept_redirects = 0",
        "net.ipv4.conf.all.accept_source_route = 0",
        "net.ipv4.conf.all.log_martians = 1",
        "net.ipv4.conf.all.rp_filter = 1",
        "net.ipv4.tcp_syncookies = 1",
        "net.ipv6.conf.all.accept_redirects = 0",
    ]
    assert [line for line in expected if line not in lines] == []
    # Docker and libvirt hosts forward packets: the role leaves forwarding alone.
    assert not [line for line in lines if "forwarding" in line]


def test_core_dumps_are_off():
    files = "/etc/security/limits.d/50-base-no-core.conf /etc/systemd/coredump.conf.d/50-base.conf"
    both = node(DB).check_output(f"cat {files}").splitlines()
    expected = ["*    soft    core    0", "*    hard    core    0"]
    expected += ["Storage=none", "ProcessSizeMax=0"]
    assert [line for line in expected if line not in both] == []


def test_login_shells_time_out_and_cannot_lift_it():
    # A login shell reads /etc/profile.d; the timeout is read-only there.
    out = node(DB).run("bash -lc 'echo $TMOUT; ulimit -c; TMOUT=0'")
    assert out.stdout.split()[:2] == ["900", "0"]
    assert "readonly variable" in out.stderr


def test_login_defaults():
    keys = "UMASK|PASS_MAX_DAYS|PASS_MIN_DAYS|SHA_CRYPT_MIN_ROUNDS"
    found = node(WEB2).check_output(f"grep -E '^({keys})[[:space:]]' /etc/login.defs")
    assert sorted(" ".join(line.split()) for line in found.splitlines()) == [
        "PASS_MAX_DAYS 365",
        "PASS_MIN_DAYS 1",
        "SHA_CRYPT_MIN_ROUNDS 65536",
        "UMASK 027",
    ]


def test_pam_checks_passwords_and_gives_each_session_its_own_tmpdir():
    found = node(WEB1).check_output(
        "grep -ho 'pam_pwquality.so\\|pam_tmpdir.so' /etc/pam.d/common-password"
        " /etc/pam.d/common-session; dpkg-query -W -f '${Status}' debsums"
    )
    assert "pam_pwquality.so" in found
    assert "pam_tmpdir.so" in found
    assert found.endswith("install ok installed")


def test_unused_kernel_modules_cannot_load():
    # `modprobe -n` would read the host kernel's module tree; the file is what the role owns.
    lines = node(LB).file("/etc/modprobe.d/50-base-hardening.conf").content_string.splitlines()
    for module in ("usb-storage", "firewire-core", "dccp", "sctp", "rds", "tipc"):
        assert f"blacklist {module}" in lines
        assert f"install {module} /bin/false" in lines


def test_the_legal_banner_is_shown_before_logins():
    both = node(LB2).check_output("cat /etc/issue /etc/issue.net")
    assert both.count("Authorised access only") == 2


@pytest.mark.parametrize("name", [LB2, DB])
def test_sshd_runs_with_the_further_settings(name):
    effective = node(name).check_output("sshd -T").splitlines()
    expected = [
        "allowagentforwarding no",
        "allowtcpforwarding no",
        "clientaliveinterval 300",
        "clientalivecountmax 2",
        "tcpkeepalive no",
        "compression no",
        "loglevel VERBOSE",
        "maxsessions 4",
    ]
    assert [setting for setting in expected if setting not in effective] == []
