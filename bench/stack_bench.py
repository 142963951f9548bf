#!/usr/bin/env python3
"""Figures for one all-in-one host: converge, idempotent re-run, deploy and rollback under load.

Runs the molecule `default` scenario on the Debian 12 platform only and prints a table:
  - converge time from the bare image, and the idempotent re-run (changed=0) with its task count;
  - deploy.yml and rollback.yml wall times;
  - requests failed, p99 and slowest latency while a continuous load (hey, inside the container, on
    loopback, through nginx and TLS) runs across a deploy and across a rollback.
Usage: bench/stack_bench.py [--keep]   (from the repository root, after `make setup`)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = "bm-default-bookworm"
LOAD_SECONDS = 25
LOAD_URL = "https://bookmarks.test/health/ready"


def run(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, **kw)
    return time.monotonic() - start, proc


def molecule(*args: str) -> tuple[float, str]:
    took, proc = run(["molecule", *args, "-s", "default", "--platform-name", PLATFORM])
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-3000:])
        raise SystemExit(f"molecule {' '.join(args)} failed")
    return took, proc.stdout + proc.stderr


def inventory() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    found = sorted(cache.glob("molecule/*/default/inventory"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("molecule's inventory for the default scenario was not found")
    return str(found[-1])


def playbook(name: str, *extra: str) -> float:
    env = dict(os.environ)
    env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(ROOT / "molecule/default/vault-password.test-only")
    env["ANSIBLE_ROLES_PATH"] = str(ROOT / "roles")
    cmd = ["ansible-playbook", "-i", inventory(), f"playbooks/{name}", "--limit", PLATFORM, *extra]
    took, proc = run(cmd, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:])
        raise SystemExit(f"{name} failed")
    return took


def under_load(action) -> tuple[float, dict[str, str]]:
    """Run `action` while hey loads the site; return its time and hey's figures."""
    hey = subprocess.Popen(
        ["docker", "exec", PLATFORM, "hey", "-z", f"{LOAD_SECONDS}s", "-c", "8", LOAD_URL],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    took = action()
    out, _ = hey.communicate(timeout=LOAD_SECONDS + 60)
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    errors = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+)\s+errors", out))
    total = sum(int(n) for n in codes.values()) + errors
    failed = total - int(codes.get("200", 0))
    p99 = re.search(r"99%% in ([0-9.]+) secs".replace("%%", "%"), out)
    slowest = re.search(r"Slowest:\s+([0-9.]+) secs", out)
    return took, {
        "requests": str(total),
        "failed": str(failed),
        "p99_ms": f"{float(p99.group(1)) * 1000:.0f}" if p99 else "?",
        "slowest_ms": f"{float(slowest.group(1)) * 1000:.0f}" if slowest else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args()
    subprocess.run(["molecule", "destroy", "-s", "default"], cwd=ROOT, capture_output=True)
    molecule("create")
    converge_s, _ = molecule("converge")
    rerun_s, out = molecule("converge")
    changed = re.findall(r"changed=(\d+)", out)
    tasks = re.findall(r"ok=(\d+)", out)
    subprocess.run(
        ["docker", "exec", PLATFORM, "apt-get", "install", "-y", "-qq", "hey"],
        check=True,
        capture_output=True,
    )
    deploy_s, deploy_load = under_load(
        lambda: playbook("deploy.yml", "-e", "app_force_release=true")
    )
    rollback_s, rollback_load = under_load(lambda: playbook("rollback.yml"))
    rows = [
        ("converge from the bare image", f"{converge_s:.0f} s", ""),
        (
            "idempotent re-run",
            f"{rerun_s:.0f} s",
            f"changed={','.join(changed)}; {tasks[-1] if tasks else '?'} tasks, "
            f"{rerun_s / max(1, int(tasks[-1]) if tasks else 1):.2f} s/task",
        ),
        ("deploy.yml", f"{deploy_s:.1f} s", _load(deploy_load)),
        ("rollback.yml", f"{rollback_s:.1f} s", _load(rollback_load)),
    ]
    print(f"\nbookmarks-stack figures ({PLATFORM}, {os.cpu_count()} cores)")
    print(f"| {'measure':<30} | {'time':>8} | notes |")
    print(f"| {'-' * 30} | {'-' * 8} | ----- |")
    for name, value, note in rows:
        print(f"| {name:<30} | {value:>8} | {note} |")
    if not args.keep:
        subprocess.run(["molecule", "destroy", "-s", "default"], cwd=ROOT, capture_output=True)


def _load(figures: dict[str, str]) -> str:
    return (
        f"under load: {figures['requests']} requests, {figures['failed']} failed, "
        f"p99 {figures['p99_ms']} ms, slowest {figures['slowest_ms']} ms"
    )


if __name__ == "__main__":
    main()
