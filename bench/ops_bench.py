#!/usr/bin/env python3
"""Operations beside their floor: idempotent site.yml, deploys, a rollback and a listing.

Times what an operator runs many times a day against one converged all-in-one host, with the
repository's ansible.cfg (run from the repository's root), and beside each figure its floor
measured in the same run: the release tool's own commands run on the host in one ad-hoc
connection (`ansible -m shell`), which includes the connection's fixed cost (`ansible -m ping`,
printed too). Each operation runs --runs times (default 3), interleaved with its floor; the table
gives the median and the spread (min-max), the floor's median, and their ratio. Then the ten
slowest tasks of the operations' last runs (ansible.posix.profile_tasks, on in ansible.cfg).

  site.yml again      idempotent converge (changed=0 is checked); floor: the ping (no work to do)
  deploy, same deps   deploy.yml -e app_force_release=true (the lock unchanged: each run ends
                      with an untimed deploy of the repository's app/); floor: the release
                      tool's install from the live release's wheelhouse and lock, the link, the
                      USR2 handover and the readiness check
  deploy, one dep     deploy.yml from a copy of app/ whose lock has one more pinned package;
                      floor: as above (the floor installs the live release's set)
  rollback            rollback.yml; floor: the link back, the handover and the readiness check
  listing             rollback.yml -e rollback_list=true; floor: `<app>-release list`

Targets:
  default             a container of its own (Debian 12 systemd image, as stack_bench.py starts
                      it), prepared with the default scenario's fixtures and converged first (not
                      timed), removed at the end unless --keep
  --inventory DIR --host NAME
                      a host already converged, e.g. the VM of `make vm` (SSH as a sudo user);
                      give --vault-password-file if its vault is not the test-only one

Strategy (README.md, "Faster runs"): --strategy mitogen_linear runs every playbook and ad-hoc
command with Mitogen (ANSIBLE_STRATEGY); Mitogen has no nsenter connection, so an own container is
then reached with `docker` (docker exec). The floors run with the same strategy.

Usage: .venv/bin/python bench/ops_bench.py [--runs 3] [--connection nsenter|docker] [--keep]
           [--strategy linear|mitogen_linear]
       .venv/bin/python bench/ops_bench.py --inventory DIR --host NAME [--vault-password-file F]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_bench import (  # noqa: E402  (a sibling script, not a package)
    ROOT,
    SCENARIO,
    Runner,
    recap,
    sh,
    start_container,
    write_inventory,
)

PLAYBOOKS = ROOT / "playbooks"
# The one dependency the "one dep" deploy adds: small, pure Python, never imported by the app.
EXTRA_PACKAGE = ("six", "1.17.0")

DEPLOY_FLOOR = r"""
set -eu
app={app}; root=/srv/$app; tool=/usr/local/sbin/$app-release
live=$(readlink -f $root/current)
id=floor-$(date -u +%Y%m%dT%H%M%S%N)
python3 - "$live/manifest.json" "$id" >/tmp/ops-bench-manifest.json <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
keep = ("app", "version", "git_sha", "build_key", "lock_key", "python", "deployed_at")
out = {{k: m[k] for k in keep if k in m}}
out.update(release_id=sys.argv[2], deployed_by="ops_bench floor")
print(json.dumps(out))
EOF
set -- $(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(m["build_key"], m["version"])' "$live/manifest.json")
manifest=/tmp/ops-bench-manifest.json
$tool install "$id" "$root/shared/wheelhouse/$1.tar" "{package}==$2" <$manifest >/dev/null
link=$root/current.ops-bench
ln -sfn "$root/releases/$id" $link && chown -h root:{group} $link && mv -T $link $root/current
$tool switch 60 >/dev/null
curl -sf --unix-socket /run/$app/gunicorn.sock http://localhost/health/ready >/dev/null
"""

ROLLBACK_FLOOR = r"""
set -eu
app={app}; root=/srv/$app; tool=/usr/local/sbin/$app-release
live=$(basename "$(readlink -f $root/current)")
prev=$($tool list | python3 -c '
import json, sys
rels = json.load(sys.stdin)
ids = [r["release_id"] for r in rels]
earlier = reversed(rels[: ids.index(sys.argv[1])])
print(next(r["release_id"] for r in earlier if not r["failed_gate"]))
' "$live")
link=$root/current.ops-bench
ln -sfn "$root/releases/$prev" $link && chown -h root:{group} $link && mv -T $link $root/current
$tool switch 60 >/dev/null
curl -sf --unix-socket /run/$app/gunicorn.sock http://localhost/health/ready >/dev/null
"""

LIST_FLOOR = "/usr/local/sbin/{app}-release list >/dev/null"

TASK_LINE = re.compile(r"^(?P<task>.+?) -{3,} (?P<secs>\d+\.\d+)s\s*$")


class Bench:
    def __init__(self, runner: Runner, host: str, app: str):
        self.runner = runner
        self.host = host
        self.app = app
        self.samples: dict[str, list[float]] = {}
        self.last_output: dict[str, str] = {}

    def record(self, name: str, seconds: float) -> None:
        self.samples.setdefault(name, []).append(seconds)

    def playbook(self, name: str, playbook: str, *extra: str) -> str:
        took, out = self.runner.playbook(PLAYBOOKS / playbook, "--limit", self.host, *extra)
        self.record(name, took)
        self.last_output[name] = out
        return out

    def adhoc(self, name: str, module: str, args: str | None = None) -> None:
        cmd = ["ansible", self.host, "-i", str(self.runner.inventory), "-b", "-m", module]
        if args is not None:
            cmd += ["-a", args]
        start = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=self.runner.env, capture_output=True, text=True, check=False
        )
        took = time.monotonic() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-2000:])
            raise SystemExit(f"the floor {name!r} failed on {self.host}")
        self.record(name, took)

    def floor(self, name: str, script: str) -> None:
        body = script.format(app=self.app, group=self.app, package=self.app)
        self.adhoc(
            name, "ansible.builtin.shell", json.dumps({"cmd": body, "executable": "/bin/bash"})
        )


def lock_with_one_more_dependency(workdir: Path) -> Path:
    """A copy of app/ whose requirements.lock pins one more package (hash checked here)."""
    name, version = EXTRA_PACKAGE
    # pip fetches it (from the index pip is configured with), and its hash is taken here.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
         "--dest", str(workdir / "extra"), f"{name}=={version}"],
        check=True,
    )  # fmt: skip
    wheel = next((workdir / "extra").glob(f"{name}-{version}-*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    copy = workdir / "app-one-more-dependency"
    shutil.copytree(
        ROOT / "app",
        copy,
        ignore=shutil.ignore_patterns(".venv", "__pycache__", "*.egg-info", ".pytest_cache"),
    )
    lock = copy / "requirements.lock"
    lock.write_text(
        lock.read_text()
        + f"{name}=={version} \\\n    --hash=sha256:{digest}\n    # via ops_bench\n"
    )
    return copy


def slowest_tasks(outputs: dict[str, str], count: int = 10) -> list[tuple[float, str, str]]:
    found = []
    for op, out in outputs.items():
        for line in out.splitlines():
            match = TASK_LINE.match(line.strip())
            if match:
                found.append((float(match["secs"]), op, match["task"].strip()))
    return sorted(found, reverse=True)[:count]


def fmt(values: list[float]) -> tuple[str, str, float]:
    median = statistics.median(values)
    return f"{median:.1f} s", f"{min(values):.1f}-{max(values):.1f}", median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the own container running")
    parser.add_argument("--connection", default="nsenter", choices=["nsenter", "docker"])
    parser.add_argument("--inventory", type=Path, help="an inventory of a converged host")
    parser.add_argument("--host", help="the host in --inventory")
    parser.add_argument("--vault-password-file", type=Path)
    parser.add_argument("--app", default="bookmarks", help="app_name of the inventory")
    parser.add_argument("--strategy", default="linear", choices=["linear", "mitogen_linear"])
    args = parser.parse_args()
    if args.strategy == "mitogen_linear" and args.connection == "nsenter" and not args.inventory:
        args.connection = "docker"  # Mitogen has no nsenter connection
    os.environ["ANSIBLE_STRATEGY"] = args.strategy  # every run below, the untimed ones too
    if bool(args.inventory) != bool(args.host):
        parser.error("--inventory and --host go together")
    workdir = Path(tempfile.mkdtemp(prefix="bm-ops-bench-"))
    log = workdir / "ansible-output.log"
    own = args.inventory is None
    name = args.host or "bm-bench-ops"
    load_start = os.getloadavg()
    try:
        if own:
            image = (
                f"{os.environ.get('BM_IMAGE_PREFIX', 'bookmarks-stack/debian-systemd')}:bookworm"
            )
            start_container(name, image)
            runner = Runner(write_inventory(workdir, name, args.connection), log)
            runner.playbook(SCENARIO / "prepare.yml")  # test fixtures, not timed
            runner.playbook(PLAYBOOKS / "site.yml")  # the converge, not timed
            target = f"own container {name} (Debian 12), connection {args.connection}"
        else:
            runner = Runner(args.inventory.resolve(), log)
            target = f"{name} from {args.inventory}"
        target += f", strategy {args.strategy}"
        if args.vault_password_file:
            runner.env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(args.vault_password_file.resolve())
        one_more = lock_with_one_more_dependency(workdir)
        bench = Bench(runner, name, args.app)
        for _ in range(args.runs):
            bench.adhoc("ping", "ansible.builtin.ping")
            out = bench.playbook("site.yml again", "site.yml")
            changed, _ = recap(out)
            if changed:
                raise SystemExit(f"site.yml reported changed={changed} on a converged host")
            bench.playbook("deploy, same deps", "deploy.yml", "-e", "app_force_release=true")
            bench.floor("deploy, same deps floor", DEPLOY_FLOOR)
            bench.playbook("deploy, one dep", "deploy.yml", "-e", f"app_src_dir={one_more}")
            bench.floor("deploy, one dep floor", DEPLOY_FLOOR)
            bench.playbook("rollback", "rollback.yml")
            bench.floor("rollback floor", ROLLBACK_FLOOR)
            bench.playbook("listing", "rollback.yml", "-e", "rollback_list=true")
            bench.floor("listing floor", LIST_FLOOR)
            # Back on a release made from the repository's own app/ (not timed): the rollback
            # went back to the one-dep release, and the next "same deps" deploy must find the
            # live release's lock unchanged.
            runner.playbook(
                PLAYBOOKS / "deploy.yml", "--limit", name, "-e", "app_force_release=true"
            )
    finally:
        if own and not args.keep:
            sh("docker", "rm", "-f", name, check=False)
    load_end = os.getloadavg()

    ping = statistics.median(bench.samples["ping"])
    print(f"\nbookmarks-stack operations against {target}; {os.cpu_count()} cores")
    print(
        f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f};",
        f"{args.runs} runs each",
    )
    print(f"connection's fixed cost (ansible -m ping): {ping:.1f} s median")
    print(f"| {'operation':<20} | {'median':>8} | {'spread':>11} | {'floor':>7} | {'ratio':>5} |")
    print(f"| {'-' * 20} | {'-' * 8} | {'-' * 11} | {'-' * 7} | {'-' * 5} |")
    floors = {
        "site.yml again": "ping",
        "deploy, same deps": "deploy, same deps floor",
        "deploy, one dep": "deploy, one dep floor",
        "rollback": "rollback floor",
        "listing": "listing floor",
    }
    for op, floor_name in floors.items():
        median_s, spread, median = fmt(bench.samples[op])
        floor = statistics.median(bench.samples[floor_name])
        ratio = median / floor
        print(f"| {op:<20} | {median_s:>8} | {spread:>11} | {floor:>5.1f} s | {ratio:>5.1f} |")
    print("\nten slowest tasks (last run of each operation):")
    for secs, op, task in slowest_tasks(bench.last_output):
        print(f"  {secs:6.2f} s  {op:<18}  {task}")
    print(f"(Ansible output: {log})")
    if own and args.keep:
        print(f"container {name} kept; remove it with: docker rm -f {name}")


if __name__ == "__main__":
    main()
