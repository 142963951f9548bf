#!/usr/bin/env python3
"""Lynis's hardening index of a host converged by site.yml, beside the same audit of the bare image.

Runs Debian 12's lynis package (3.0.8) without installing it: `apt-get download lynis` on this
machine (or --deb FILE), copied to the target, unpacked with `dpkg-deb -x` into a temporary
directory there and run from it (`lynis audit system --quick --no-colors`, its own default
profile and plugins, log and report in that directory), which is removed afterwards with the
package file. Lynis finds and changes nothing else on the target.

Targets:
  default             two containers of the systemd image, one after the other, as
                      stack_bench.py starts them: the bare image, then one prepared with the default
                      scenario's fixtures (Pebble, hey) and converged with site.yml as an all-in-one
                      host (web + db); each removed after its audit unless --keep. Both get
                      Debian's openssh-server first, as every server Ansible reaches over SSH has
                      it (--no-sshd: without)
  --inventory DIR --host NAME
                      a host already converged, e.g. the VM of `make vm` (SSH as a sudo user); it
                      is audited as it is (no bare figure)

Prints both indices, the points each test withheld on the converged host, and the suggestions
and warnings left there, each with the reason it stays: what a container cannot have (its kernel
and mounts are the host's), or what the roles leave undone on any host and why.
Usage: .venv/bin/python bench/lynis_bench.py [--release bookworm|trixie] [--name NAME] [--keep]
       .venv/bin/python bench/lynis_bench.py --inventory DIR --host NAME [--vault-password-file F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    sh,
    start_container,
    write_inventory,
)

PLAYBOOKS = ROOT / "playbooks"
REMOTE_DEB = "/var/tmp/bm-lynis-bench.deb"

# Unpacks the package into a fresh directory, runs the audit from there (--usecwd: its include,
# db and profile; its plugins by path), prints the screen, the report and the points each test
# withheld (from the log), and removes the directory and the package whatever happens.
AUDIT = r"""
set -eu
dir=$(mktemp -d /var/tmp/bm-lynis-bench.XXXXXX)
trap 'rm -rf "$dir" {deb}' EXIT
dpkg-deb -x {deb} "$dir/pkg"
cd "$dir/pkg/usr/share/lynis"
cp "$dir/pkg/etc/lynis/default.prf" .
"$dir/pkg/usr/sbin/lynis" audit system --quick --no-colors --usecwd \
    --plugindir "$dir/pkg/etc/lynis/plugins" \
    --logfile "$dir/lynis.log" --report-file "$dir/report.dat" >"$dir/screen.txt" 2>&1 || true
echo "=== virt $(systemd-detect-virt --container || true)"
echo '=== screen'; cat "$dir/screen.txt"
echo '=== report'; cat "$dir/report.dat"
echo '=== points'
grep -E 'Performing test ID|Hardening: assigned partial' "$dir/lynis.log" || true
"""

# What a container cannot have: lynis audits its kernel and mounts, which are the host's.
IN_A_CONTAINER = {
    "KRNL-6000": "kernel settings are the host kernel's and /proc/sys is read-only in a container;"
    " the role writes them to /etc/sysctl.d/50-base-hardening.conf, applied on a VM or server",
    "KRNL-5788": "a container has no kernel image of its own",
    "FILE-6310": "a container has one file system: separate /home, /var, /tmp are the"
    " partitioning of a VM or server, made when it is installed",
    "FILE-6344": "/proc's mount options (hidepid) are the container runtime's",
    "FILE-6374": "mount options of /dev/shm and /tmp are the container runtime's",
    "NAME-4028": "the container's host name has no DNS domain",
    "ACCT-9628": "auditd needs the kernel's audit subsystem, the host's in a container",
    "ACCT-9622": "process accounting needs CAP_SYS_PACCT, which the container lacks",
    "MACF-6290": "AppArmor confines the container from the host (the runtime's profile); inside it,"
    " lynis finds no MAC framework of its own (a Debian VM has AppArmor on)",
}
# What the roles leave undone on any host, and why.
LEFT_UNDONE = {
    "LYNIS": "the bench runs Debian 12's lynis 3.0.8 on purpose, not the newest",
    "DEB-0810": "apt-listbugs asks bugs.debian.org and prompts during apt runs: not for"
    " unattended hosts",
    "DEB-0831": "needrestart is not installed: unattended-upgrades and the playbooks restart"
    " what they change",
    "BOOT-5264": "nginx, PostgreSQL and the app run in systemd sandboxes (README); Debian's other"
    " units as they ship",
    "PKGS-7392": "the image's packages lag Debian's security updates: unattended-upgrades installs"
    " them daily (an apt-get upgrade at converge time is the operator's call)",
    "PKGS-7394": "apt-show-versions is not installed (unattended-upgrades does the patching)",
    "LOGG-2154": "no log host in this stack: each host keeps a persistent journal",
    "FINT-4350": "AIDE is not installed: its database init fails in a container (it drops"
    " capabilities the container lacks), and on a server its daily full scan competes with the"
    " service; debsums checks the packages' files",
    "HRDN-7230": "no malware scanner (rkhunter, ClamAV): open issue",
    "MALW-3280": "no malware scanner (rkhunter, ClamAV): open issue",
    "TOOL-5002": "lynis looks for an agent on the host; Ansible pushes from outside",
    "FILE-7524": "Debian's modes for sshd_config and the cron directories are kept (nothing"
    " secret in them)",
    "AUTH-9408": "Debian 13's shadow no longer reads FAILLOG_ENAB from login.defs, which lynis"
    " 3.0.8 looks for; failed logins are in the journal (sshd, read by fail2ban)",
    "SSH-7440": "AllowUsers and AllowGroups name the inventory's own users: base_ssh_settings",
    "NETW-3200": "lynis 3.0.8 counts only `install <module> /bin/true`; the role's modprobe.d file"
    " says /bin/false (a load fails loudly) and blacklists them",
    "SSH-7408": "MaxSessions 4 leaves room to Ansible's multiplexed connection"
    " (base_ssh_max_sessions); sshd stays on port 22 (a port is no secret; keys only and"
    " fail2ban guard it)",
    "USB-3000": "USBGuard is not installed: servers here use no USB devices, and usb-storage is"
    " blocked (modprobe.d)",
    "DEB-0880": "the fail2ban role's jails are in jail.d/site.local and jail.conf is never edited;"
    " lynis looks only for a jail.local",
    "HTTP-6710": "Debian's nginx.conf lists TLSv1 and TLSv1.1 in http{}; the site's server block"
    " allows TLSv1.2 and 1.3 only (Mozilla intermediate), and no other site is enabled",
    "HOME-9304": "Debian's /var/lib/postgresql is 0755 (the clusters' data directories are 0700)",
    "ACCT-9626": "sysstat is not installed: the node exporter and Prometheus keep the host's"
    " figures where the inventory has a monitor host",
}


def wait_for_boot(name: str) -> None:
    """Until systemd has booted: before, its tmpfiles may clean /tmp under apt's feet, and right
    after the start `systemctl` finds no bus to ask."""
    for _ in range(120):
        state = sh("docker", "exec", name, "systemctl", "is-system-running", "--wait", check=False)
        if state.stdout.strip() in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise SystemExit(f"{name} did not finish booting: {state.stdout.strip()}")


def download_lynis(workdir: Path) -> Path:
    """Debian's lynis package as a file, fetched by this machine's apt (not installed)."""
    done = subprocess.run(
        ["apt-get", "download", "lynis"], cwd=workdir, capture_output=True, text=True, check=False
    )
    found = sorted(workdir.glob("lynis_*.deb"))
    if done.returncode != 0 or not found:
        raise SystemExit(
            f"apt-get download lynis failed ({done.stderr.strip()[-300:]}); give --deb FILE"
        )
    return found[-1]


class Audit:
    """One lynis run on one host of an inventory, through Ansible (any connection it has)."""

    def __init__(self, runner: Runner, host: str, deb: Path):
        self.runner = runner
        self.host = host
        self.deb = deb

    def adhoc(self, module: str, args: str) -> dict:
        env = {
            **self.runner.env,
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            # Only the JSON callback: profile_tasks and timer (ansible.cfg) would print beside it.
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        }
        cmd = ["ansible", self.host, "-i", str(self.runner.inventory), "-b", "-m", module]
        done = subprocess.run(
            [*cmd, "-a", args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        with self.runner.log.open("a") as log:
            log.write(f"\n===== {' '.join(cmd)} (rc {done.returncode})\n{done.stderr}\n")
        try:
            result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"][self.host]
        except (ValueError, KeyError, IndexError):
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-2000:])
            raise SystemExit(f"{module} on {self.host} failed") from None
        if result.get("failed") or result.get("unreachable"):
            raise SystemExit(f"{module} on {self.host} failed: {result.get('msg', '')}")
        return result

    def run(self) -> dict:
        self.adhoc("ansible.builtin.copy", f"src={self.deb} dest={REMOTE_DEB} mode=0600")
        start = time.monotonic()
        script = AUDIT.format(deb=REMOTE_DEB)
        out = self.adhoc(
            "ansible.builtin.shell", json.dumps({"cmd": script, "executable": "/bin/bash"})
        )["stdout"]
        took = time.monotonic() - start
        virt, rest = out.split("=== screen\n", 1)
        screen, rest = rest.split("=== report\n", 1)
        report, points = rest.split("=== points\n", 1)
        with self.runner.log.open("a") as log:
            log.write(f"\n===== lynis on {self.host}\n{screen}\n")
        container = virt.split()[-1] if virt.split()[-1] not in ("virt", "none") else ""
        return parse(screen, report, points) | {"seconds": took, "container": container}


def parse(screen: str, report: str, points: str) -> dict:
    index = re.search(r"Hardening index : (\d+)", screen)
    if not index:
        raise SystemExit("no hardening index in lynis's output:\n" + screen[-3000:])
    items = []
    for kind, line in re.findall(r"^(warning|suggestion)\[\]=(.*)$", report, re.M):
        test, text, details, *_ = [*line.split("|"), "", ""]
        items.append((kind, test, text, "" if details in ("-", "") else details))
    withheld: dict[str, int] = {}
    test = "?"
    for line in points.splitlines():
        found = re.search(r"Performing test ID (\S+)", line)
        if found:
            test = found.group(1)
            continue
        found = re.search(r"\((\d+) of (\d+)\)", line)
        if found:
            lost = int(found.group(2)) - int(found.group(1))
            withheld[test] = withheld.get(test, 0) + lost
    tests = re.search(r"^lynis_tests_done=(\d+)", report, re.M)
    return {
        "index": int(index.group(1)),
        "tests": int(tests.group(1)) if tests else 0,
        "items": items,
        "withheld": withheld,
    }


def why(test: str, container: str) -> str:
    if container and test in IN_A_CONTAINER:
        return "container: " + IN_A_CONTAINER[test]
    if test in LEFT_UNDONE:
        return "left: " + LEFT_UNDONE[test]
    return "(no reason recorded: look at it)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="bookworm", choices=["bookworm", "trixie"])
    parser.add_argument("--name", help="own containers: default bm-bench-lynis-<release>")
    parser.add_argument("--keep", action="store_true", help="leave the converged container")
    parser.add_argument("--connection", default="nsenter", choices=["nsenter", "docker"])
    parser.add_argument(
        "--no-sshd",
        dest="sshd",
        action="store_false",
        help="leave the own containers without openssh-server (a server reached over SSH has it)",
    )
    parser.add_argument("--deb", type=Path, help="lynis's .deb (default: apt-get download)")
    parser.add_argument("--inventory", type=Path, help="an inventory of a converged host")
    parser.add_argument("--host", help="the host in --inventory")
    parser.add_argument("--vault-password-file", type=Path)
    args = parser.parse_args()
    if bool(args.inventory) != bool(args.host):
        parser.error("--inventory and --host go together")
    workdir = Path(tempfile.mkdtemp(prefix="bm-lynis-bench-"))
    log = workdir / "ansible-output.log"
    deb = args.deb.resolve() if args.deb else download_lynis(workdir)
    own = args.inventory is None
    image = f"{os.environ.get('BM_IMAGE_PREFIX', 'bookmarks-stack/debian-systemd')}:{args.release}"
    load_start = os.getloadavg()
    results: dict[str, dict] = {}
    if own:
        # One name per release: the fact cache keeps each name's Python interpreter.
        name = args.name or f"bm-bench-lynis-{args.release}"
        for target in ("bare", "converged"):
            keep = args.keep and target == "converged"
            try:
                start_container(name, image)
                (workdir / target).mkdir()
                runner = Runner(write_inventory(workdir / target, name, args.connection), log)
                wait_for_boot(name)
                if args.sshd:
                    # Before the converge, so that the base role hardens it as on a server.
                    install = "apt-get update -qq && apt-get install -qq -y openssh-server"
                    done = sh("docker", "exec", name, "sh", "-c", install, check=False)
                    if done.returncode != 0:
                        raise SystemExit(f"openssh-server: {done.stdout[-1000:]}{done.stderr}")
                if target == "converged":
                    runner.playbook(SCENARIO / "prepare.yml")  # test fixtures
                    runner.playbook(PLAYBOOKS / "site.yml")
                results[target] = Audit(runner, name, deb).run()
            finally:
                if not keep:
                    sh("docker", "rm", "-f", name, check=False)
        sshd = "with openssh-server" if args.sshd else "without sshd"
        where = f"own containers of {image} ({args.release}, {sshd}), connection {args.connection}"
    else:
        runner = Runner(args.inventory.resolve(), log)
        if args.vault_password_file:
            runner.env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(args.vault_password_file.resolve())
        results["converged"] = Audit(runner, args.host, deb).run()
        where = f"{args.host} from {args.inventory}"
    load_end = os.getloadavg()

    print(f"\nlynis ({deb.name}) on {where}; {os.cpu_count()} cores")
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}")
    print(f"| {'host':<32} | {'hardening index':>15} | {'tests':>5} | {'audit':>6} |")
    print(f"| {'-' * 32} | {'-' * 15} | {'-' * 5} | {'-' * 6} |")
    labels = {"bare": "bare image", "converged": "converged by site.yml"}
    for target, found in results.items():
        print(
            f"| {labels[target]:<32} | {found['index']:>15} | {found['tests']:>5} "
            f"| {found['seconds']:>4.0f} s |"
        )
    converged = results["converged"]
    container = converged["container"]
    if container:
        print(f"(the converged host is a container: {container})")
    print("\npoints withheld on the converged host, by test:")
    for test, lost in sorted(converged["withheld"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {lost:3d}  {test:<10}  {why(test, container)}")
    print("\nwarnings and suggestions left on the converged host:")
    for kind, test, text, details in converged["items"]:
        detail = f" ({details})" if details else ""
        print(f"  {kind:<10} {test:<10} {text}{detail}\n{'':24}-> {why(test, container)}")
    print(f"(Ansible output and lynis's screens: {log})")
    if own and args.keep:
        print(f"container {name} kept; remove it with: docker rm -f {name}")


if __name__ == "__main__":
    main()
