"""The test targets behave like booted Debian VMs: systemd is up and Ansible can use Python."""


def test_systemd_finished_booting_without_failed_units(host):
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    # `degraded` would mean a unit failed; name it so the failure explains itself.
    assert state == "running", f"systemd is {state!r}; failed units:\n{failed}"


def test_systemd_is_pid_1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_python_is_usable_by_ansible(host):
    facts = host.ansible("setup", "gather_subset=!all,min")["ansible_facts"]
    assert facts["ansible_python"]["version"]["major"] == 3
    assert facts["ansible_distribution"] == "Debian"


def test_release_matches_platform(host):
    release = host.system_info.release
    name = host.backend.get_hostname()
    expected = "12" if name.endswith("bookworm") else "13"
    assert release.split(".")[0] == expected, f"{name} runs Debian {release}"


def test_apt_sources_name_the_release_and_its_security_updates(host):
    codename = host.system_info.codename
    sources = host.file("/etc/apt/sources.list").content_string
    assert f"{codename} main" in sources
    assert f"{codename}-security main" in sources
