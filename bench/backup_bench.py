#!/usr/bin/env python3
"""Figures for pgBackRest: full and differential backups, restores, recovery point, repository.

For a database of a stated size (--size-mb, default 1024: a `bench` database beside the app's,
generated with generate_series, random hex text that zstd compresses about 2:1), it prints one
table:
  - full backup: `systemctl start` of the unit the weekly timer starts, and pgBackRest's own time
    (its log's "backup command end" line), with the backup's size and its size in the repository;
  - differential backup after updating a stated fraction of the rows (--change-fraction, default
    0.1: a contiguous range of ids, so about that fraction of the table's pages change and the
    new row versions go to its end), same figures;
  - recovery point, before any restore: a writer inserts a timestamped row every ~0.2 s (plus
    psql's start) for --writer-seconds (default 75), then the cluster is killed (SIGKILL to its
    unit) and its data directory removed; restore.yml restores to the end of the archive; the
    seconds (and rows) between the last row the writer saw committed and the last row restored
    are what the loss cost (archive_timeout bounds it); that restore's time too;
  - restore to a time: playbooks/restore.yml -e restore_from=pgbackrest -e restore_target_time=T
    (app stopped, restored into a fresh data directory, swapped in, migrated, gated), with its
    pgBackRest part (the restore command, from its log) and PostgreSQL's start and WAL replay
    until it promotes (the role's two tasks, from profile_tasks); a row written just before T
    must be there and one written just after must not;
  - the repository's size on disk (du), its backups and its WAL archive.
The parallelism is pgBackRest's own `process-max` as the roles expose it
(postgresql_pgbackrest_process_max on the db host: restores and archive-push; pgbackrest_repo_
process_max on the backup host: backups), read back from each host's /etc/pgbackrest.conf.

Topologies (stated in the output):
  split (default)   two Debian 12 systemd containers on a Docker network of their own: an
                    all-in-one host (web + db) and a `backup` host holding the repository over
                    SSH, converged by playbooks/site.yml with the repository's ansible.cfg
  local             the all-in-one host alone: the repository on the db host (the role warns)
The all-in-one host gets the default scenario's fixtures (Pebble, ...), both get sshd (as any
server Ansible reaches over SSH has); not timed. Containers are named <prefix>-db and
<prefix>-backup, the network <prefix>; removed at the end, also on failure, unless --keep.
Needs `make setup` and `make images`.
Usage: .venv/bin/python bench/backup_bench.py [--size-mb 1024] [--change-fraction 0.1]
           [--topology split|local] [--writer-seconds 75] [--prefix P] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_bench import task_spans  # noqa: E402
from stack_bench import ROOT, SCENARIO, Runner, sh  # noqa: E402

STANZA = "bookmarks"
BENCH_DB = "bench"
# One row: a bigint and 512 characters of hex from random(); 14 rows fill an 8 kB page.
ROW_BYTES = 8192 / 14
PAYLOAD = " || ".join(["md5(random()::text)"] * 16)
# PostgreSQL replays WAL from its start (systemd's start returns once it accepts connections)
# until the recovery ends and it promotes.
REPLAY_TASKS = (
    "TASK [postgresql : Start the cluster on the restored data]",
    "TASK [postgresql : Wait until the recovery has ended]",
)
RESTORE_TASK = "TASK [postgresql : Restore the backup into the fresh data directory]"


class BenchError(RuntimeError):
    """A step failed; the message says which."""


@dataclass(frozen=True)
class Hosts:
    prefix: str
    topology: str

    @property
    def db(self) -> str:
        return f"{self.prefix}-db"

    @property
    def backup(self) -> str:
        """Where the repository is (the db host itself without a backup host)."""
        return f"{self.prefix}-backup" if self.topology == "split" else self.db

    @property
    def names(self) -> list[str]:
        return sorted({self.db, self.backup})

    @property
    def repo_user(self) -> str:
        return "pgbackrest" if self.topology == "split" else "postgres"

    @property
    def repo_path(self) -> str:
        return "/var/lib/pgbackrest/repo" if self.topology == "split" else "/var/lib/pgbackrest"

    def backup_unit(self, kind: str) -> str:
        if self.topology == "split":
            return f"pgbackrest-{kind}@{STANZA}.service"
        return f"pgbackrest-backup@{kind}.service"

    def describe(self) -> str:
        if self.topology == "split":
            return (
                f"split: {self.db} (web + db, all-in-one) and {self.backup} (backup: the "
                f"pgBackRest repository, over SSH), Debian 12 containers on Docker network "
                f"{self.prefix}"
            )
        return f"local: {self.db} (web + db, all-in-one) with the repository on itself"


def run_in(name: str, *cmd: str, user: str = "", check: bool = True) -> str:
    argv = ["docker", "exec", name]
    if user:
        argv += ["runuser", "-u", user, "--"]
    done = sh(*argv, *cmd, check=False)
    if check and done.returncode != 0:
        raise BenchError(f"{name}: {' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def psql(hosts: Hosts, sql: str, db: str = BENCH_DB) -> str:
    return run_in(hosts.db, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql,
                  user="postgres").strip()  # fmt: skip


# --- the containers and the inventory ---------------------------------------------------------


def remove(hosts: Hosts) -> None:
    sh("docker", "rm", "-f", "-v", f"{hosts.prefix}-db", f"{hosts.prefix}-backup", check=False)
    if sh("docker", "network", "inspect", hosts.prefix, check=False).returncode == 0:
        sh("docker", "network", "rm", hosts.prefix, check=False)


def start(hosts: Hosts, image: str) -> None:
    """stack_bench's container, on a network of its own (unpublished, no molecule label)."""
    remove(hosts)
    sh("docker", "network", "create", hosts.prefix)
    for name in hosts.names:
        sh(
            "docker", "run", "-d", "--name", name, "--hostname", name, "--network", hosts.prefix,
            "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "--stop-signal", "SIGRTMIN+3", image, "/lib/systemd/systemd",
        )  # fmt: skip


def write_inventory(workdir: Path, hosts: Hosts) -> Path:
    """web + db on one host, `backup` on the other (split), over nsenter as stack_bench does."""

    def connection(name: str) -> str:
        pid = sh("docker", "inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
        return f"{{ansible_connection: community.docker.nsenter, ansible_nsenter_pid: {pid}}}"

    inventory = workdir / "inventory"
    inventory.mkdir()
    lines = [
        "all:", "  children:",
        "    web:", f"      hosts: {{{hosts.db}: {connection(hosts.db)}}}",
        "    db:", f"      hosts: {{{hosts.db}: }}",
    ]  # fmt: skip
    if hosts.topology == "split":
        lines += ["    backup:", f"      hosts: {{{hosts.backup}: {connection(hosts.backup)}}}"]
    (inventory / "hosts.yml").write_text("\n".join(lines) + "\n")
    (inventory / "group_vars").symlink_to(SCENARIO / "group_vars")
    return inventory


def prepare(hosts: Hosts, runner: Runner) -> None:
    """The default scenario's fixtures on the all-in-one host; sshd wherever pgBackRest logs in."""
    runner.playbook(SCENARIO / "prepare.yml", "--limit", hosts.db)
    if hosts.topology != "split":
        return
    for name in hosts.names:
        run_in(name, "systemctl", "is-system-running", "--wait", check=False)
        run_in(name, "sh", "-c", "apt-get update -q && apt-get install -qy openssh-server")
        # A container lacks the capability pam_loginuid needs (molecule/cluster/prepare.yml).
        run_in(name, "sed", "-i", r"s/^session\s\+required\s\+pam_loginuid\.so/session optional "
               "pam_loginuid.so/", "/etc/pam.d/sshd")  # fmt: skip


# --- pgBackRest's own figures ------------------------------------------------------------------


def command_ms(host: str, command: str) -> float:
    """Seconds of the last completed `command` in pgBackRest's log file for the stanza."""
    log = run_in(host, "sh", "-c", f"cat /var/log/pgbackrest/{STANZA}-{command}.log", check=False)
    found = re.findall(rf"{command} command end: completed successfully \((\d+)ms\)", log)
    if not found:
        raise BenchError(f"{host}: no completed {command} in pgBackRest's {command} log")
    return int(found[-1]) / 1000


def info(hosts: Hosts) -> dict:
    out = run_in(hosts.backup, "pgbackrest", f"--stanza={STANZA}", "--output=json", "info",
                 user=hosts.repo_user)  # fmt: skip
    return json.loads(out)[0]


def du_mb(host: str, path: str) -> float:
    return int(run_in(host, "du", "-sb", path).split()[0]) / 2**20


def process_max(host: str) -> str:
    conf = run_in(host, "cat", "/etc/pgbackrest.conf")
    found = re.search(r"^process-max=(\d+)", conf, re.M)
    return found.group(1) if found else "unset (pgBackRest's default 1)"


@dataclass
class Backup:
    wall: float
    own: float
    size_mb: float
    delta_mb: float
    repo_mb: float
    repo_delta_mb: float

    def notes(self) -> str:
        return (
            f"pgBackRest {self.own:.1f} s; {self.delta_mb:.0f} of {self.size_mb:.0f} MB copied, "
            f"{self.repo_delta_mb:.0f} MB in the repository"
        )


def backup(hosts: Hosts, kind: str) -> Backup:
    started = time.monotonic()
    run_in(hosts.backup, "systemctl", "start", hosts.backup_unit(kind))
    wall = time.monotonic() - started
    newest = info(hosts)["backup"][-1]
    if newest["type"] != kind:
        raise BenchError(f"the newest backup is {newest['type']}, not {kind}")
    sizes = newest["info"]
    return Backup(
        wall=wall,
        own=command_ms(hosts.backup, "backup"),
        size_mb=sizes["size"] / 2**20,
        delta_mb=sizes["delta"] / 2**20,
        repo_mb=sizes["repository"]["size"] / 2**20,
        repo_delta_mb=sizes["repository"]["delta"] / 2**20,
    )


@dataclass
class Restore:
    wall: float
    own: float
    restore_task: float
    replay: float

    def notes(self) -> str:
        return (
            f"of which pgBackRest restore {self.own:.1f} s (its task {self.restore_task:.1f} s), "
            f"cluster start and WAL replay to promotion {self.replay:.1f} s"
        )


def restore(hosts: Hosts, runner: Runner, target_time: str = "") -> Restore:
    extra = {"restore_confirm": "yes", "restore_from": "pgbackrest"}
    if target_time:
        extra["restore_target_time"] = target_time
    wall, output = runner.playbook(ROOT / "playbooks" / "restore.yml", "-e", json.dumps(extra))
    spans = {span.banner: span.end - span.start for span in task_spans(output)}
    return Restore(
        wall=wall,
        own=command_ms(hosts.db, "restore"),
        restore_task=spans.get(RESTORE_TASK, float("nan")),
        replay=sum(spans.get(task, float("nan")) for task in REPLAY_TASKS),
    )


# --- the data ---------------------------------------------------------------------------------


def generate(hosts: Hosts, size_mb: int) -> tuple[int, float]:
    """The bench database: `filler` of about size_mb, `markers` and `writes`; (rows, MB)."""
    rows = int(size_mb * 2**20 / ROW_BYTES)
    run_in(hosts.db, "psql", "-XAtq", "-c", f"DROP DATABASE IF EXISTS {BENCH_DB}", user="postgres")
    run_in(hosts.db, "psql", "-XAtq", "-c", f"CREATE DATABASE {BENCH_DB}", user="postgres")
    psql(hosts, "CREATE TABLE filler (id bigint NOT NULL, payload text NOT NULL)")
    stamp = "at timestamptz DEFAULT clock_timestamp()"
    psql(hosts, f"CREATE TABLE markers (name text PRIMARY KEY, {stamp})")
    psql(hosts, f"CREATE TABLE writes (id bigserial PRIMARY KEY, {stamp})")
    step = 200_000
    for low in range(1, rows + 1, step):
        high = min(low + step - 1, rows)
        psql(hosts, f"INSERT INTO filler SELECT i, {PAYLOAD} FROM generate_series({low}, {high}) i")
    psql(hosts, "VACUUM (ANALYZE) filler")
    return rows, int(psql(hosts, f"SELECT pg_database_size('{BENCH_DB}')")) / 2**20


def utc_now(hosts: Hosts) -> str:
    """The database's clock, as restore_target_time takes it."""
    return psql(hosts, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")  # fmt: skip


@dataclass
class Loss:
    seconds: float
    rows: int
    written: int
    restore: Restore


def recovery_point(hosts: Hosts, runner: Runner, writer_seconds: int) -> Loss:
    """Write a row every ~0.2 s, lose the data directory, restore to the end, compare.

    Run before any restore: for up to checkpoint_timeout after a restore's promotion the
    checkpointer may sleep without heeding archive_timeout (README, Figures), which would measure
    that window instead of the steady state.
    """
    data_dir = psql(hosts, "SHOW data_directory")
    version = psql(hosts, "SHOW server_version_num")[:2]
    unit = f"postgresql@{version}-main.service"
    run_in(hosts.db, "rm", "-f", "/var/tmp/bench-writes.txt")
    loop = (
        f"while :; do psql -XAtq -d {BENCH_DB} -c 'INSERT INTO writes DEFAULT VALUES "
        "RETURNING id, extract(epoch FROM at)' >>/var/tmp/bench-writes.txt; sleep 0.2; done"
    )
    run_in(hosts.db, "systemd-run", "--unit=bench-writer", "-p", "User=postgres", "sh", "-c", loop)
    time.sleep(writer_seconds)
    # The loss: every process of the cluster killed at once, then its data directory gone.
    run_in(hosts.db, "systemctl", "kill", "--signal=KILL", unit)
    run_in(hosts.db, "rm", "-rf", data_dir)
    run_in(hosts.db, "systemctl", "stop", "bench-writer", check=False)
    lines = run_in(hosts.db, "cat", "/var/tmp/bench-writes.txt").split()
    first_at = float(lines[0].split("|")[1])
    last_id, last_at = lines[-1].split("|")
    done = restore(hosts, runner)
    restored = psql(hosts, "SELECT coalesce(max(id), 0), coalesce(extract(epoch FROM max(at)), 0) "
                           "FROM writes")  # fmt: skip
    restored_id, restored_at = restored.split("|")
    # Nothing restored: every row since the writer's first is lost.
    return Loss(
        seconds=float(last_at) - (float(restored_at) if int(restored_id) else first_at),
        rows=int(last_id) - int(restored_id),
        written=len(lines),
        restore=done,
    )


# --- the run ----------------------------------------------------------------------------------


def commit() -> str:
    rev = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").stdout.strip()
    dirty = sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no").stdout
    return rev + (" (with uncommitted changes)" if dirty.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated table")
    parser.add_argument(
        "--change-fraction", type=float, default=0.1,
        help="fraction of the rows updated before the differential backup",
    )  # fmt: skip
    parser.add_argument("--topology", default="split", choices=["split", "local"])
    parser.add_argument(
        "--writer-seconds", type=int, default=75,
        help="how long the writer runs before the data directory is lost",
    )  # fmt: skip
    parser.add_argument("--prefix", default="bm-bench-backup", help="container and network names")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument(
        "--reuse", action="store_true",
        help="use the converged containers a --keep run left (no start, prepare or site.yml)",
    )  # fmt: skip
    args = parser.parse_args()
    hosts = Hosts(args.prefix, args.topology)
    image = f"{os.environ.get('BM_IMAGE_PREFIX', 'bookmarks-stack/debian-systemd')}:bookworm"
    workdir = Path(tempfile.mkdtemp(prefix="bm-backup-bench-"))
    log = workdir / "ansible-output.log"
    started_at = datetime.datetime.now(datetime.UTC)
    uptime_start = sh("uptime").stdout.strip()
    load_start = os.getloadavg()
    rows: list[tuple[str, str, str]] = []
    try:
        if not args.reuse:
            start(hosts, image)
        runner = Runner(write_inventory(workdir, hosts), log)
        # Fresh containers: facts an earlier run cached under the same names would be stale.
        runner.env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(workdir / "facts")
        if not args.reuse:
            prepare(hosts, runner)
        converge_s, _ = runner.playbook(ROOT / "playbooks" / "site.yml")
        print(f"site.yml: {converge_s:.0f} s", file=sys.stderr)

        generate_start = time.monotonic()
        row_count, db_mb = generate(hosts, args.size_mb)
        generate_s = time.monotonic() - generate_start
        print(f"generated {db_mb:.0f} MB in {generate_s:.0f} s", file=sys.stderr)
        full = backup(hosts, "full")
        print(f"full: {full.wall:.1f} s", file=sys.stderr)

        changed = int(row_count * args.change_fraction)
        psql(hosts, f"UPDATE filler SET payload = {PAYLOAD} WHERE id <= {changed}")
        diff = backup(hosts, "diff")
        print(f"diff: {diff.wall:.1f} s", file=sys.stderr)

        # The loss first, while the cluster runs as it does between restores (see recovery_point).
        loss = recovery_point(hosts, runner, args.writer_seconds)
        print(f"recovery point: {loss.seconds:.1f} s lost", file=sys.stderr)

        psql(hosts, "INSERT INTO markers (name) VALUES ('before')")
        time.sleep(1)
        target = utc_now(hosts)
        time.sleep(1)
        psql(hosts, "INSERT INTO markers (name) VALUES ('after')")
        to_time = restore(hosts, runner, target)
        markers = psql(hosts, "SELECT string_agg(name, ',' ORDER BY name) FROM markers")
        print(f"restore to time: {to_time.wall:.1f} s ({markers})", file=sys.stderr)
        archive_timeout = psql(hosts, "SHOW archive_timeout")
        repo_mb = du_mb(hosts.backup, hosts.repo_path)
        backup_mb = du_mb(hosts.backup, f"{hosts.repo_path}/backup")
        archive_mb = du_mb(hosts.backup, f"{hosts.repo_path}/archive")
        versions = run_in(hosts.db, "pgbackrest", "version").strip()
        pg_version = psql(hosts, "SHOW server_version")
        restored_rows = psql(hosts, "SELECT count(*) FROM filler")
        rows = [
            ("site.yml" + (" again" if args.reuse else ", bare containers"),
             f"{converge_s:.0f} s", "converge, for context"),
            ("generate the data", f"{generate_s:.0f} s",
             f"{row_count} rows of 512 hex characters; database {db_mb:.0f} MB"),
            ("full backup", f"{full.wall:.1f} s", full.notes()),
            (f"differential ({args.change_fraction:g} of rows)", f"{diff.wall:.1f} s",
             f"{changed} rows updated (ids 1..{changed}); " + diff.notes()),
            ("recovery point (writes lost)", f"{loss.seconds:.1f} s",
             f"{loss.rows} of {loss.written} rows written in {args.writer_seconds} s lost; "
             f"archive_timeout {archive_timeout}"),
            ("restore to the end (restore.yml)", f"{loss.restore.wall:.1f} s",
             f"after that loss; {loss.restore.notes()}"),
            ("restore to a time (restore.yml)", f"{to_time.wall:.1f} s",
             f"{to_time.notes()}; markers restored: {markers or 'none'} (want: before); "
             f"filler rows {restored_rows} of {row_count}"),
            ("repository size", f"{repo_mb:.0f} MB",
             f"backups {backup_mb:.0f} MB, WAL archive {archive_mb:.0f} MB (zstd)"
             + ("; with earlier runs' backups and WAL" if args.reuse else "")),
        ]  # fmt: skip
        parallel = f"process-max: db host {process_max(hosts.db)}" + (
            f", backup host {process_max(hosts.backup)}" if args.topology == "split" else ""
        )
    finally:
        if not args.keep:
            remove(hosts)
    print(f"\nbookmarks-stack pgBackRest, {started_at:%Y-%m-%d %H:%M} UTC, commit {commit()}")
    print(f"topology {hosts.describe()}")
    print(f"{versions}, PostgreSQL {pg_version}, {os.cpu_count()} cores; {parallel}")
    print(f"database: --size-mb {args.size_mb} requested, {db_mb:.0f} MB generated in `{BENCH_DB}`")
    print(f"load average at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(f"  uptime at start: {uptime_start}\n  uptime at end:   {sh('uptime').stdout.strip()}")
    print(f"| {'measure':<34} | {'time':>8} | notes |")
    print(f"| {'-' * 34} | {'-' * 8} | ----- |")
    for row_name, value, note in rows:
        print(f"| {row_name:<34} | {value:>8} | {note} |")
    print(f"(Ansible output: {log})")
    if args.keep:
        print(f"kept: docker rm -f {' '.join(hosts.names)}; docker network rm {hosts.prefix}")


if __name__ == "__main__":
    main()
