#!/usr/bin/env python3
"""Figures for one all-in-one host: converge, idempotent re-run, deploy and rollback under load.

Starts its own systemd container (Debian 12 by default, `--release trixie` for 13) the way the
molecule platforms do, prepares it with the default scenario's test fixtures (Pebble, hey; not
timed), then times the operator's commands against it and prints a table:
  - site.yml from the bare image, and again (the idempotent re-run: changed=0, tasks, s/task);
  - deploy.yml (a forced new release) and rollback.yml wall times;
  - requests, failures, p99 and slowest latency while hey loads https://bookmarks.test/health/ready
    inside the container (nginx, TLS, gunicorn, PostgreSQL) for the whole of each deploy/rollback.
The container is removed at the end unless --keep. Needs `make setup` and `make images` first.
Usage: .venv/bin/python bench/stack_bench.py [--release bookworm|trixie] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "molecule" / "default"
DOMAIN = "bookmarks.test"
LABEL = "org.bookmarks-stack.molecule=true"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def start_container(name: str, image: str, labelled: bool = True) -> None:
    """Labelled as the project's molecule containers are (make clean removes them), or not."""
    sh("docker", "rm", "-f", name, check=False)
    label = ["--label", LABEL] if labelled else []
    sh(
        "docker", "run", "-d", "--name", name, "--hostname", name, *label,
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
        "--stop-signal", "SIGRTMIN+3", image, "/lib/systemd/systemd",
    )  # fmt: skip


def write_inventory(workdir: Path, name: str, via: str) -> Path:
    """The default scenario's inventory for one container: web and db, its group_vars.

    `nsenter` enters the container's namespaces directly (root on this machine), which costs about
    what SSH with pipelining costs a real VM; `docker` goes through `docker exec`, which adds a
    container exec (runc) to every task: the test rig's cost, not the stack's. It is named `docker`,
    which Ansible routes to `community.docker.docker` and Mitogen (the speed switch) takes over.
    """
    if via == "nsenter":
        pid = sh("docker", "inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
        connection = f"{{ansible_connection: community.docker.nsenter, ansible_nsenter_pid: {pid}}}"
    else:
        connection = "{ansible_connection: docker}"
    inventory = workdir / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(
        "all:\n"
        "  children:\n"
        "    web:\n"
        f"      hosts: {{{name}: {connection}}}\n"
        "    db:\n"
        f"      hosts: {{{name}: }}\n"
    )
    (inventory / "group_vars").symlink_to(SCENARIO / "group_vars")
    return inventory


class Runner:
    def __init__(self, inventory: Path, log: Path):
        self.inventory = inventory
        self.log = log
        self.env = {
            **os.environ,
            "ANSIBLE_VAULT_PASSWORD_FILE": str(SCENARIO / "vault-password.test-only"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }

    def playbook(self, path: Path, *extra: str) -> tuple[float, str]:
        cmd = ["ansible-playbook", "-i", str(self.inventory), str(path), *extra]
        start = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        took = time.monotonic() - start
        with self.log.open("a") as log:
            log.write(f"\n===== {' '.join(cmd)} ({took:.1f} s, rc {proc.returncode})\n")
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
            raise SystemExit(f"{path.name} failed (full output in {self.log})")
        return took, proc.stdout


class Load:
    """hey inside the container, started before an action and interrupted after it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> Load:
        reset = "systemctl stop bench-load; systemctl reset-failed bench-load"
        sh("docker", "exec", self.name, "sh", "-c", reset, check=False)
        sh(
            "docker", "exec", self.name, "systemd-run", "--unit=bench-load",
            "-p", "StandardOutput=truncate:/var/tmp/bench-load.txt",
            "hey", "-z", "600s", "-c", "8", "-t", "10", f"https://{DOMAIN}/health/ready",
        )  # fmt: skip
        time.sleep(3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)
        sh("docker", "exec", self.name, "systemctl", "kill", "-s", "INT", "bench-load")
        for _ in range(60):
            active = sh(
                "docker", "exec", self.name, "systemctl", "is-active", "bench-load", check=False
            )
            if active.stdout.strip() != "active":
                break
            time.sleep(0.5)
        self.report = sh("docker", "exec", self.name, "cat", "/var/tmp/bench-load.txt").stdout

    def figures(self) -> str:
        out = self.report
        codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
        errors_part = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
        errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors_part, re.M))
        total = sum(codes.values()) + errors
        failed = total - codes.get(200, 0)
        p99 = re.search(r"99% in ([0-9.]+) secs", out)
        slowest = re.search(r"Slowest:\s+([0-9.]+) secs", out)
        p99_ms = f"{float(p99.group(1)) * 1000:.0f} ms" if p99 else "?"
        slowest_ms = f"{float(slowest.group(1)) * 1000:.0f} ms" if slowest else "?"
        detail = ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()) if code != 200)
        if errors:
            detail = ", ".join(filter(None, [detail, f"{errors} client errors/timeouts"]))
        failures = f" ({detail})" if detail else ""
        return f"{total} requests, {failed} failed{failures}, p99 {p99_ms}, slowest {slowest_ms}"


def recap(output: str) -> tuple[int, int]:
    """(changed, ok) of the play recap's single host."""
    found = re.findall(r"ok=(\d+)\s+changed=(\d+)", output)
    if not found:
        raise SystemExit("no play recap in the output")
    ok, changed = found[-1]
    return int(changed), int(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="bookworm", choices=["bookworm", "trixie"])
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    parser.add_argument("--name", help="the container's name (default bm-bench-aio-<release>)")
    parser.add_argument(
        "--connection",
        default="nsenter",
        choices=["nsenter", "docker"],
        help="how Ansible reaches the container (default nsenter: no docker exec per task)",
    )
    parser.add_argument(
        "--name",
        help="the container's name (default bm-bench-aio-RELEASE); a named one is not labelled,"
        " so the project's molecule clean-up leaves it alone",
    )
    args = parser.parse_args()
    name = args.name or f"bm-bench-aio-{args.release}"
    image = f"{os.environ.get('BM_IMAGE_PREFIX', 'bookmarks-stack/debian-systemd')}:{args.release}"
    workdir = Path(tempfile.mkdtemp(prefix="bm-stack-bench-"))
    log = workdir / "ansible-output.log"
    load_start = os.getloadavg()
    try:
        start_container(name, image, labelled=not args.name)
        runner = Runner(write_inventory(workdir, name, args.connection), log)
        runner.playbook(SCENARIO / "prepare.yml")  # test fixtures, not timed
        converge_s, _ = runner.playbook(ROOT / "playbooks" / "site.yml")
        rerun_s, rerun_out = runner.playbook(ROOT / "playbooks" / "site.yml")
        changed, tasks = recap(rerun_out)
        with Load(name) as deploy_load:
            deploy_s, _ = runner.playbook(
                ROOT / "playbooks" / "deploy.yml", "-e", "app_force_release=true"
            )
        with Load(name) as rollback_load:
            rollback_s, _ = runner.playbook(ROOT / "playbooks" / "rollback.yml")
    finally:
        if not args.keep:
            sh("docker", "rm", "-f", name, check=False)
    rows = [
        ("site.yml from the bare image", f"{converge_s:.0f} s", ""),
        (
            "site.yml again (idempotent)",
            f"{rerun_s:.1f} s",
            f"changed={changed}, {tasks} tasks, {rerun_s / tasks:.2f} s/task",
        ),
        ("deploy.yml (new release)", f"{deploy_s:.1f} s", deploy_load.figures()),
        ("rollback.yml", f"{rollback_s:.1f} s", rollback_load.figures()),
    ]
    load_end = os.getloadavg()
    print(
        f"\nbookmarks-stack, one all-in-one host ({args.release}), {os.cpu_count()} cores, "
        f"Ansible connection {args.connection}"
    )
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}")
    print(f"| {'measure':<30} | {'time':>8} | notes |")
    print(f"| {'-' * 30} | {'-' * 8} | ----- |")
    for row_name, value, note in rows:
        print(f"| {row_name:<30} | {value:>8} | {note} |")
    print(f"(Ansible output: {log})")
    if args.keep:
        print(f"container {name} kept; remove it with: docker rm -f {name}")
    else:
        shutil.rmtree(workdir / "inventory", ignore_errors=True)


if __name__ == "__main__":
    main()
