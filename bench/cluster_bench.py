#!/usr/bin/env python3
"""Figures for the split topology: site.yml for one vs several web hosts, and a rolling deploy.

For each topology in --web-hosts (default 1,3: a balancer, N web hosts and a database, Debian 12)
it starts its own systemd containers on its own Docker network, the way molecule/cluster does,
prepares them with the cluster scenario's test fixtures (Pebble on the balancer, curl, hey; timed
apart), then times the operator's commands against them:
  - playbooks/site.yml from the bare containers (the provisioning time);
  - on topologies with more than one web host, a rolling deploy of a forced new release
    (deploy.yml -e app_force_release=true -e app_serial=1): total, the release install and
    migration before the first batch, and each batch from "Take this batch out of the load
    balancers" to the end of "Put this batch back into the load balancers" (read from the
    profile_tasks timestamps that ansible.cfg turns on), and the batch cycle;
  - while that deploy runs, hey on the balancer against https://bookmarks.test/health/ready
    (nginx, then a web host's gunicorn, then PostgreSQL): requests, failed, p99 and slowest.
Topologies run one after another, each removed before the next (the machine may be shared).
It prints a table, a JSON summary and the load averages at start and end: figures depend on load.
Containers are named bm-bench-cluster-*, labelled org.bookmarks-stack.molecule=true (so
scripts/clean-molecule.sh removes leftovers), and publish no ports. They and the network are
removed at the end, also on failure or Ctrl-C, unless --keep. Needs `make setup` and `make images`.
Usage: .venv/bin/python bench/cluster_bench.py [--web-hosts 1,3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "molecule" / "cluster"
VAULT_PASSWORD_FILE = ROOT / "molecule" / "default" / "vault-password.test-only"
DOMAIN = "bookmarks.test"
LABEL = "org.bookmarks-stack.molecule=true"
PREFIX = "bm-bench-cluster"
NETWORK = PREFIX
TAKE_OUT = "TASK [app : Take this batch out of the load balancers]"
PUT_BACK = "TASK [app : Put this batch back into the load balancers]"


class BenchError(RuntimeError):
    """A step failed; the message says which and where its output is."""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


def loadavg(values: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# --- the containers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """A balancer, `web_count` web hosts and a database host, named after this script."""

    web_count: int

    @property
    def lb(self) -> str:
        return f"{PREFIX}-lb"

    @property
    def webs(self) -> list[str]:
        return [f"{PREFIX}-web{i}" for i in range(1, self.web_count + 1)]

    @property
    def db(self) -> str:
        return f"{PREFIX}-db"

    @property
    def hosts(self) -> list[str]:
        return [self.lb, *self.webs, self.db]

    @property
    def label(self) -> str:
        return f"lb + {self.web_count} web + db"


def our_containers() -> list[str]:
    """Containers this script made (by name prefix and label), also those a run left behind."""
    out = sh(
        "docker", "ps", "-a", "--filter", f"label={LABEL}",
        "--filter", f"name={PREFIX}-", "--format", "{{.Names}}",
    ).stdout  # fmt: skip
    return [name for name in out.split() if name.startswith(f"{PREFIX}-")]


def remove_containers() -> None:
    names = our_containers()
    if names:
        sh("docker", "rm", "-f", "-v", *names, check=False)


def remove_network() -> None:
    if sh("docker", "network", "inspect", NETWORK, check=False).returncode == 0:
        sh("docker", "network", "rm", NETWORK, check=False)


def create_network() -> None:
    remove_network()
    sh("docker", "network", "create", "--label", LABEL, NETWORK)


def start_container(name: str, image: str) -> None:
    """A systemd-booted container as molecule/cluster/molecule.yml describes one, unpublished."""
    sh(
        "docker", "run", "-d", "--name", name, "--hostname", name, "--label", LABEL,
        "--network", NETWORK,
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        "--stop-signal", "SIGRTMIN+3", image, "/lib/systemd/systemd",
    )  # fmt: skip


# --- the inventory and Ansible ----------------------------------------------------------------


def write_inventory(workdir: Path, topo: Topology) -> Path:
    """hosts.yml with lb/web/db over the docker connection, and the cluster scenario's
    group_vars with app_database_host pointing at this topology's database container."""
    inventory = workdir / "inventory"
    group_all = inventory / "group_vars" / "all"
    group_all.mkdir(parents=True)
    lines = ["all:", "  children:"]
    for group, names in (("lb", [topo.lb]), ("web", topo.webs), ("db", [topo.db])):
        lines += [f"    {group}:", "      hosts:"]
        lines += [
            f"        {name}: {{ansible_connection: community.docker.docker}}" for name in names
        ]
    (inventory / "hosts.yml").write_text("\n".join(lines) + "\n")

    scenario_vars = (SCENARIO / "group_vars" / "all" / "vars.yml").read_text()
    ours, count = re.subn(
        r"^app_database_host:.*$", f"app_database_host: {topo.db}", scenario_vars, flags=re.M
    )
    if count != 1:
        raise BenchError("molecule/cluster/group_vars/all/vars.yml: no app_database_host line")
    (group_all / "vars.yml").write_text(ours)
    # The test-only vault, where the scenario's link points (molecule/default's).
    vault = (SCENARIO / "group_vars" / "all" / "vault.yml").resolve()
    (group_all / "vault.yml").symlink_to(vault)
    return inventory


@dataclass
class PlaybookRun:
    seconds: float
    output: str


class Ansible:
    """ansible-playbook against one topology's inventory, with its own fact cache; every run's
    output goes to the log file."""

    def __init__(self, inventory: Path, facts: Path, log: Path):
        self.inventory = inventory
        self.log = log
        env = {
            **os.environ,
            "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD_FILE),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            # Fresh containers each time: facts cached by an earlier run would be stale.
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        env.pop("ANSIBLE_LOG_PATH", None)
        self.env = env

    def playbook(self, path: Path, *extra: str) -> PlaybookRun:
        cmd = ["ansible-playbook", "-i", str(self.inventory), str(path), *extra]
        start = time.monotonic()
        done = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        took = time.monotonic() - start
        output = done.stdout + done.stderr
        with self.log.open("a") as log:
            log.write(f"\n===== {' '.join(cmd)} ({took:.1f} s, rc {done.returncode})\n{output}")
        if done.returncode != 0:
            sys.stderr.write(output[-4000:])
            raise BenchError(f"{path.name} failed after {took:.0f} s (output in {self.log})")
        return PlaybookRun(took, output)


@dataclass
class Recap:
    hosts: int
    ok: int
    changed: int


def recap(output: str) -> Recap:
    """Totals of the PLAY RECAP over every host."""
    rows = re.findall(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s", output, re.M)
    if not rows:
        raise BenchError("no PLAY RECAP in the output")
    return Recap(len(rows), sum(int(ok) for ok, _ in rows), sum(int(ch) for _, ch in rows))


# --- reading the profile_tasks timestamps -----------------------------------------------------

# "Sunday 22 November 2026  10:36:15 +0000 (0:00:25.790)       0:00:28.506 *******"
# (the previous task's duration, then the time since the playbook started).
TIMESTAMP = re.compile(r"\(\d+:\d{2}:\d{2}\.\d+\)\s+(\d+):(\d{2}):(\d{2}\.\d+)\s+\*+\s*$")


@dataclass
class TaskSpan:
    banner: str
    start: float
    end: float


def task_spans(output: str) -> list[TaskSpan]:
    """Each shown task with its start and end, in seconds since the playbook started.

    profile_tasks prints a timestamp line when a task starts. With display_skipped_hosts off
    (ansible.cfg) the default callback prints a task's banner only with its first result, so the
    timestamp comes just before the banner; with eager banners it comes just after. A task ends
    at the next timestamp (the next task's start, or the final one profile_tasks prints).
    """
    lines = [line for line in output.splitlines() if line.strip()]
    stamps: list[float] = []
    stamp_at: dict[int, int] = {}  # line index -> index into stamps
    for i, line in enumerate(lines):
        found = TIMESTAMP.search(line)
        if found:
            hours, minutes, seconds = found.groups()
            stamp_at[i] = len(stamps)
            stamps.append(int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    spans = []
    last = -1  # index into stamps of the latest timestamp seen
    for i, line in enumerate(lines):
        if i in stamp_at:
            last = stamp_at[i]
            continue
        if not line.startswith(("TASK [", "RUNNING HANDLER [")):
            continue
        own = stamp_at.get(i + 1, last)  # eager banner: its timestamp follows
        if own < 0 or own + 1 >= len(stamps):
            continue
        spans.append(TaskSpan(line.rstrip(" *"), stamps[own], stamps[own + 1]))
    return spans


@dataclass
class Batches:
    """Per-batch figures of a rolling switch, in seconds."""

    before_first: float  # from the playbook's start to the first batch's drain
    out_to_back: list[float]  # each batch: drain, switch, health gate, back in the balancers
    cycle: list[float]  # from one batch's drain to the next one's (the last: to its put-back)


def batches(output: str) -> Batches:
    spans = task_spans(output)
    outs = [span for span in spans if span.banner == TAKE_OUT]
    backs = [span for span in spans if span.banner == PUT_BACK]
    if not outs or len(outs) != len(backs):
        raise BenchError(
            f"found {len(outs)} '{TAKE_OUT}' and {len(backs)} '{PUT_BACK}' banners with timestamps"
        )
    starts = [span.start for span in outs]
    ends = [span.end for span in backs]
    return Batches(
        before_first=starts[0],
        out_to_back=[end - start for start, end in zip(starts, ends, strict=True)],
        cycle=[b - a for a, b in zip(starts, starts[1:], strict=False)] + [ends[-1] - starts[-1]],
    )


# --- load through the balancer ----------------------------------------------------------------


@dataclass
class LoadReport:
    requests: int
    failed: int
    p99_ms: float | None
    slowest_ms: float | None
    statuses: dict[int, int]
    errors: int

    def __str__(self) -> str:
        p99 = f"{self.p99_ms:.0f} ms" if self.p99_ms is not None else "?"
        slowest = f"{self.slowest_ms:.0f} ms" if self.slowest_ms is not None else "?"
        return f"{self.requests} requests, {self.failed} failed, p99 {p99}, slowest {slowest}"


def parse_hey(text: str) -> LoadReport:
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors_part = text.split("Error distribution:")[1] if "Error distribution:" in text else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors_part, re.M))
    if not statuses and not errors:
        raise BenchError(f"no report from hey:\n{text}")
    p99 = re.search(r"99%+ in ([\d.]+) secs", text)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    return LoadReport(
        requests=sum(statuses.values()) + errors,
        failed=errors + sum(n for code, n in statuses.items() if code != 200),
        p99_ms=float(p99.group(1)) * 1000 if p99 else None,
        slowest_ms=float(slowest.group(1)) * 1000 if slowest else None,
        statuses=statuses,
        errors=errors,
    )


class Load:
    """hey on the balancer in a transient systemd unit, for as long as the `with` block runs;
    interrupted with SIGINT at the end, when it prints its report (as molecule/cluster does)."""

    unit = "bm-bench-load"

    def __init__(self, lb: str, concurrency: int, rate: int):
        self.lb = lb
        self.concurrency = concurrency
        self.rate = rate
        self.report: LoadReport | None = None

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", self.lb, *cmd, check=check)

    def __enter__(self) -> Load:
        self.exec("sh", "-c", f"systemctl stop {self.unit}; systemctl reset-failed {self.unit}",
                  check=False)  # fmt: skip
        self.exec(
            "systemd-run", f"--unit={self.unit}",
            "-p", f"StandardOutput=truncate:/var/tmp/{self.unit}.txt",
            "-p", "StandardError=journal",
            "hey", "-z", "1800s", "-c", str(self.concurrency), "-q", str(self.rate),
            "-t", "10", f"https://{DOMAIN}/health/ready",
        )  # fmt: skip
        time.sleep(2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)
        self.exec("systemctl", "kill", "-s", "INT", self.unit, check=False)
        for _ in range(60):
            if self.exec("systemctl", "is-active", "--quiet", self.unit, check=False).returncode:
                break
            time.sleep(0.5)
        if exc[0] is None:
            self.report = parse_hey(self.exec("cat", f"/var/tmp/{self.unit}.txt").stdout)


# --- one topology -----------------------------------------------------------------------------


@dataclass
class DeployFigures:
    seconds: float
    batches: int
    per_batch_avg: float  # total / batches
    before_first_batch: float
    batch_out_to_back: list[float]
    batch_cycle: list[float]
    load: dict[str, Any] | None
    load1_at_start: float


@dataclass
class TopologyFigures:
    topology: str
    web_hosts: int
    containers_up_s: float = 0.0
    prepare_s: float = 0.0
    site_s: float = 0.0
    site_tasks_ok: int = 0
    site_changed: int = 0
    load1_at_site_start: float = 0.0
    deploy: DeployFigures | None = None
    error: str | None = None


def bench_topology(
    topo: Topology, image: str, workdir: Path, args: argparse.Namespace
) -> TopologyFigures:
    figures = TopologyFigures(topo.label, topo.web_count)
    print(f"== {topo.label}: starting {len(topo.hosts)} containers", flush=True)
    start = time.monotonic()
    create_network()
    for name in topo.hosts:
        start_container(name, image)
    figures.containers_up_s = time.monotonic() - start

    workdir.mkdir(parents=True)
    ansible = Ansible(
        write_inventory(workdir, topo), workdir / "facts", workdir / "ansible-output.log"
    )
    print(f"== {topo.label}: prepare.yml (test fixtures)", flush=True)
    figures.prepare_s = ansible.playbook(SCENARIO / "prepare.yml").seconds

    print(f"== {topo.label}: site.yml", flush=True)
    figures.load1_at_site_start = load1()
    site = ansible.playbook(ROOT / "playbooks" / "site.yml")
    figures.site_s = site.seconds
    site_recap = recap(site.output)
    figures.site_tasks_ok, figures.site_changed = site_recap.ok, site_recap.changed
    print(f"   site.yml: {site.seconds:.0f} s", flush=True)

    if topo.web_count > 1 and not args.no_deploy:
        print(f"== {topo.label}: rolling deploy under load", flush=True)
        load_at_start = load1()
        load = Load(topo.lb, args.load_concurrency, args.load_rate)
        with load:
            deploy = ansible.playbook(
                ROOT / "playbooks" / "deploy.yml",
                "-e", "app_force_release=true", "-e", f"app_serial={args.serial}",
            )  # fmt: skip
        parts = batches(deploy.output)
        count = len(parts.out_to_back)
        figures.deploy = DeployFigures(
            seconds=deploy.seconds,
            batches=count,
            per_batch_avg=deploy.seconds / count,
            before_first_batch=parts.before_first,
            batch_out_to_back=parts.out_to_back,
            batch_cycle=parts.cycle,
            load=asdict(load.report) if load.report else None,
            load1_at_start=load_at_start,
        )
        print(f"   deploy.yml: {deploy.seconds:.0f} s, {count} batches", flush=True)
    return figures


# --- output -----------------------------------------------------------------------------------


def table(results: list[TopologyFigures], serial: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for r in results:
        t = r.topology
        if r.error:
            rows.append((t, "FAILED", r.error))
        if not r.site_s:
            continue
        rows.append((t, "containers started", f"{r.containers_up_s:.1f} s"))
        rows.append((t, "prepare.yml (fixtures, not provisioning)", f"{r.prepare_s:.0f} s"))
        rows.append(
            (
                t,
                "site.yml from bare containers",
                f"{r.site_s:.0f} s ({r.site_s / 60:.1f} min; {r.site_tasks_ok} ok, "
                f"{r.site_changed} changed over all hosts; load1 at start {r.load1_at_site_start})",
            )
        )
        d = r.deploy
        if d is None:
            continue
        rows.append(
            (
                t,
                f"deploy.yml serial={serial}, total",
                f"{d.seconds:.0f} s, {d.batches} batches, {d.per_batch_avg:.1f} s per batch "
                f"(total / batches; load1 at start {d.load1_at_start})",
            )
        )
        rows.append(
            (t, "  before batch 1 (checks, install, migrate)", f"{d.before_first_batch:.0f} s")
        )
        rows.append(
            (
                t,
                "  per batch: drain to back in service",
                ", ".join(f"{s:.1f}" for s in d.batch_out_to_back)
                + f" s (mean {sum(d.batch_out_to_back) / d.batches:.1f} s)",
            )
        )
        rows.append(
            (
                t,
                "  per batch: cycle (drain to next drain)",
                ", ".join(f"{s:.1f}" for s in d.batch_cycle)
                + f" s (mean {sum(d.batch_cycle) / d.batches:.1f} s)",
            )
        )
        if d.load:
            rows.append((t, "  load through the balancer", str(LoadReport(**d.load))))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    print(f"| {'topology':<{widths[0]}} | {'measure':<{widths[1]}} | figure |")
    print(f"| {'-' * widths[0]} | {'-' * widths[1]} | ------ |")
    for topo, measure, figure in rows:
        print(f"| {topo:<{widths[0]}} | {measure:<{widths[1]}} | {figure} |")


def parse_web_hosts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text}") from err
    if not counts or any(n < 1 or n > 9 for n in counts):
        raise argparse.ArgumentTypeError("each web host count must be between 1 and 9")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--web-hosts", type=parse_web_hosts, default=[1, 3], metavar="N,M",
        help="web host counts, one topology each, run in this order (default 1,3)",
    )  # fmt: skip
    parser.add_argument("--release", default="bookworm", choices=["bookworm", "trixie"])
    parser.add_argument("--serial", type=int, default=1, help="app_serial of the deploy")
    parser.add_argument("--no-deploy", action="store_true", help="only time site.yml")
    parser.add_argument("--load-concurrency", type=int, default=4, help="hey -c (default 4)")
    parser.add_argument(
        "--load-rate", type=int, default=50, help="hey -q, requests/s per worker (default 50)"
    )
    parser.add_argument(
        "--keep", action="store_true",
        help="leave the last topology's containers, network and inventory for debugging",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the JSON summary to this file")
    args = parser.parse_args()

    image = f"{os.environ.get('BM_IMAGE_PREFIX', 'bookmarks-stack/debian-systemd')}:{args.release}"
    if sh("docker", "image", "inspect", image, check=False).returncode != 0:
        print(f"image {image} is missing: run `make images` first", file=sys.stderr)
        return 2

    # SIGTERM cleans up like Ctrl-C does.
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)

    workroot = Path(tempfile.mkdtemp(prefix="bm-cluster-bench-"))
    load_start = os.getloadavg()
    started = time.monotonic()
    results: list[TopologyFigures] = []
    failed = False
    print(f"bench output under {workroot}; load average {loadavg(load_start)}", flush=True)
    kept = False
    try:
        for count in args.web_hosts:
            topo = Topology(count)
            remove_containers()  # the previous topology's, or what a killed run left
            try:
                results.append(bench_topology(topo, image, workroot / f"web{count}", args))
            except BenchError as err:
                results.append(TopologyFigures(topo.label, count, error=str(err)))
                failed = True
                break
    except KeyboardInterrupt:
        failed = True
        print("\ninterrupted", file=sys.stderr)
    finally:
        # --keep leaves the last topology as it is (finished or failed) for debugging; any other
        # end removes it. Ignore a second Ctrl-C meanwhile, so nothing is left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        kept = args.keep and bool(our_containers())
        if not kept:
            remove_containers()
            remove_network()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    took = time.monotonic() - started
    load_end = os.getloadavg()
    summary = {
        "cores": os.cpu_count(),
        "release": args.release,
        "serial": args.serial,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "duration_s": round(took, 1),
        "topologies": [asdict(r) for r in results],
    }
    print(f"\nbookmarks-stack cluster bench ({args.release}), {os.cpu_count()} cores")
    print(
        f"load average (1/5/15 min) at start {loadavg(load_start)}, at end {loadavg(load_end)}; "
        f"took {took / 60:.1f} min"
    )
    rows = table(results, args.serial)
    if rows:
        print_table(rows)
    print("\nJSON summary:")
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"(Ansible output: {workroot}/web*/ansible-output.log)")
    if kept:
        print(f"containers kept: docker rm -f {' '.join(our_containers())}; "
              f"docker network rm {NETWORK}")  # fmt: skip
    else:
        for inventory in workroot.glob("web*/inventory"):
            shutil.rmtree(inventory, ignore_errors=True)
        for facts in workroot.glob("web*/facts"):
            shutil.rmtree(facts, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
