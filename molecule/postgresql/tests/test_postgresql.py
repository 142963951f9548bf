"""The converged database host: PostgreSQL runs, listens on loopback, admits only the app's role to
the app's database with its password, is tuned from the inventory's figures, and backs up daily."""

from conftest import (
    APP_DB,
    APP_USER,
    BACKUP_DIR,
    app_login,
    cluster_unit,
    group_vars,
    own_address,
    sql,
)

LOOPBACK = {"127.0.0.1", "::1"}


def expected_major(host) -> str:
    # Debian's own PostgreSQL: 15 in bookworm, 17 in trixie.
    return {"bookworm": "15", "trixie": "17"}[host.system_info.codename]


def test_cluster_runs_the_distribution_version(host):
    major = expected_major(host)
    clusters = host.check_output("pg_lsclusters --no-header").split()
    assert clusters[:4] == [major, "main", "5432", "online"]
    assert sql(host, "SHOW server_version_num", db="postgres").startswith(major)


def test_cluster_unit_is_active(host):
    assert host.service(cluster_unit(host)).is_running


def test_cluster_starts_at_boot(host):
    # postgresql.service is enabled and pulls in every `auto` cluster (Debian's generator).
    assert host.service("postgresql.service").is_enabled
    wants = host.check_output("systemctl show --property=Wants --value postgresql.service")
    assert cluster_unit(host) in wants.split()


def test_listens_on_loopback_only(host):
    listening = {
        address
        for address in host.check_output("ss -Htln 'sport = :5432' | awk '{print $4}'").split()
    }
    addresses = {address.rsplit(":", 1)[0].strip("[]") for address in listening}
    assert addresses, "nothing listens on port 5432"
    assert addresses <= LOOPBACK


def test_app_role_logs_in_over_tcp_with_its_password(host, app_password):
    login = app_login(host, app_password)
    assert login.rc == 0, login.stderr
    assert login.stdout == APP_USER


def test_app_role_is_refused_with_a_wrong_password(host, app_password):
    login = app_login(host, app_password + "-wrong")
    assert login.rc != 0
    assert "password authentication failed" in login.stderr


def test_app_role_cannot_reach_other_databases(host, app_password):
    result = host.run(
        "PGPASSWORD=%s psql -XAtq -h 127.0.0.1 -U %s -d postgres -c 'SELECT 1'",
        app_password,
        APP_USER,
    )
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr


def test_app_role_is_not_privileged(host):
    flags = sql(
        host,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        f"FROM pg_roles WHERE rolname = '{APP_USER}'",
    )
    assert flags == "f|f|f|f|f"


def test_app_role_owns_its_database(host):
    owner = sql(
        host,
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{APP_DB}'",
        db="postgres",
    )
    assert owner == APP_USER


def test_public_cannot_connect_to_the_app_database(host):
    acl = sql(host, f"SELECT datacl FROM pg_database WHERE datname = '{APP_DB}'", db="postgres")
    entries = acl.strip("{}").split(",")
    # An entry without a grantee before `=` is PUBLIC's.
    assert not [entry for entry in entries if entry.startswith("=")], acl


def test_no_remote_address_is_admitted_by_default(host):
    rules = sql(
        host,
        "SELECT type || ' ' || coalesce(address, '-') || ' ' || coalesce(error, 'ok') "
        "FROM pg_hba_file_rules",
        db="postgres",
    ).splitlines()
    tcp = [rule.split() for rule in rules if rule.split()[0].startswith("host")]
    assert {address for _, address, _ in tcp} == LOOPBACK, rules
    assert all(rule.endswith(" ok") for rule in rules), rules


def test_own_network_address_is_refused(host, app_password):
    login = app_login(host, app_password, own_address(host))
    assert login.rc != 0
    assert "Connection refused" in login.stderr


def test_local_administration_is_peer_only(host):
    # root has no database role of the same name, and peer authentication maps OS user to role.
    result = host.run("psql -XAtq -U postgres -d postgres -c 'SELECT 1'")
    assert result.rc != 0
    assert "Peer authentication failed" in result.stderr


def test_max_connections_follow_the_expected_connections(host):
    figures = group_vars("db")
    # Twice the workers' pools: a gunicorn handover briefly runs the old and the new workers.
    expected = (
        figures["postgresql_expected_web_hosts"]
        * figures["postgresql_expected_workers"]
        * figures["postgresql_pool_size"]
        * 2
        + figures["postgresql_connection_headroom"]
    )
    assert sql(host, "SHOW max_connections") == str(expected)


def planned_memory_mb(host) -> int:
    if host.system_info.codename == "trixie":
        return group_vars("debian13")["postgresql_memory_mb"]
    # Debian 12 keeps the default: the host's RAM as Ansible sees it.
    facts = host.ansible("setup", "gather_subset=!all,hardware")["ansible_facts"]
    return facts["ansible_memtotal_mb"]


def test_memory_settings_follow_the_planned_memory(host):
    memory = planned_memory_mb(host)
    connections = int(sql(host, "SHOW max_connections"))
    settings = dict(
        line.split("|")
        for line in sql(
            host,
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('shared_buffers', 'effective_cache_size', 'work_mem', 'maintenance_work_mem')",
        ).splitlines()
    )

    def size_mb(value: str) -> int:
        number, unit = int(value[:-2]), value[-2:]
        return number * {"MB": 1, "GB": 1024, "kB": 1 / 1024}[unit]

    assert size_mb(settings["shared_buffers"]) == memory // 4
    assert size_mb(settings["effective_cache_size"]) == memory * 3 // 4
    assert size_mb(settings["work_mem"]) == max(4, (memory - memory // 4) // (connections * 3))
    assert size_mb(settings["maintenance_work_mem"]) == max(64, min(2048, memory // 16))


def test_backup_timer_is_scheduled_daily(host):
    timer = host.service("postgresql-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    calendar = host.check_output("systemctl show --property=TimersCalendar postgresql-backup.timer")
    assert "OnCalendar=*-*-* 00:00:00" in calendar


def test_backup_directory_is_private(host):
    directory = host.file(BACKUP_DIR)
    assert directory.is_directory
    assert directory.user == "postgres"
    assert directory.mode == 0o700
