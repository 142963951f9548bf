"""The clusters' units run in the role's systemd sandbox: as postgres with no capabilities, a
read-only system, and an exposure score of 5 or below; the cluster still writes its data and logs,
archives WAL through pgBackRest from inside the sandbox, and is refused a write elsewhere."""

from __future__ import annotations

import re

from conftest import APP_DB, cluster_unit, sql

DROP_IN = "/etc/systemd/system/postgresql@.service.d/50-hardening.conf"
TARGET = 5.0


def exposure(host, unit: str) -> float:
    report = host.check_output("systemd-analyze security --no-pager %s", unit)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", report)
    assert found, report
    return float(found.group(1))


def test_cluster_exposure_is_at_most_the_target(host):
    unit = cluster_unit(host)
    score = exposure(host, unit)
    print(f"\n{host.backend.get_hostname()}: systemd-analyze security {unit} {score}")
    assert score <= TARGET


def test_the_sandbox_is_the_roles_drop_in(host):
    unit = cluster_unit(host)
    assert DROP_IN in host.check_output("systemctl show %s -p DropInPaths --value", unit)
    f = host.file(DROP_IN)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert host.check_output("systemctl show %s -p ProtectSystem --value", unit) == "strict"


def test_every_process_of_the_cluster_runs_as_postgres_without_capabilities(host):
    main = host.check_output("systemctl show %s -p MainPID --value", cluster_unit(host))
    assert main != "0"
    # The postmaster (the unit's main process, from its pid file) and every process it started,
    # read in one go; a backend that ends meanwhile is skipped.
    lines = host.check_output(
        "for p in %s $(ps -o pid= --ppid %s); do "
        "awk -v p=$p '/^Uid:/ {u=$2} /^CapEff:/ {c=$2} END {if (u != \"\") print p, u, c}' "
        "/proc/$p/status 2>/dev/null; done",
        main,
        main,
    ).splitlines()
    postgres = host.check_output("id -u postgres")
    assert len(lines) > 1, lines
    for line in lines:
        _, uid, capabilities = line.split()
        assert (uid, capabilities) == (postgres, "0000000000000000"), line


def test_the_cluster_writes_and_archives_from_the_sandbox(host):
    sql(host, "DROP TABLE IF EXISTS sandbox_probe; CREATE TABLE sandbox_probe (id int)")
    sql(host, "INSERT INTO sandbox_probe VALUES (1)")
    assert sql(host, "SELECT count(*) FROM sandbox_probe") == "1"
    sql(host, "DROP TABLE sandbox_probe", db=APP_DB)
    # check switches WAL and waits until archive_command, run inside the unit, has pushed it.
    assert host.run("runuser -u postgres -- pgbackrest --stanza=%s check", APP_DB).rc == 0


def test_the_cluster_cannot_write_outside_its_paths(host):
    # COPY TO a file runs in the server process. Outside the sandbox the kernel would answer
    # "Permission denied"; inside, the read-only mount answers first.
    result = host.run(
        "runuser -u postgres -- psql -XAtq -d postgres -c %s",
        "COPY (SELECT 1) TO '/var/lib/sandbox-probe'",
    )
    assert result.rc != 0
    assert "Read-only file system" in result.stderr
    assert not host.file("/var/lib/sandbox-probe").exists
