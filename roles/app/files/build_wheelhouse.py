#!/usr/bin/env python3
"""Build (or reuse) the app's wheelhouse on the control node, for one target Python and machine.

Servers never reach PyPI: the control node downloads the locked requirements as wheels for the
servers' Python (which may differ from its own), builds the app's own wheel, and packs them into one
tar that Ansible ships. The tar is named after a key over everything that decides its content (the
lock, the app's sources, the target), so an unchanged app is never rebuilt and a changed one always
is. Prints one JSON line: {"changed", "key", "archive", "version", "lock"}; `lock` is a key over the
dependency lock and the target only, which a server compares with its live release's to reuse the
dependencies that release installed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "build", "dist", "tests"}
KEEP_ARCHIVES = 6


def source_files(src: Path) -> list[Path]:
    """Files whose content goes into the release (tests and caches do not)."""
    files = [
        src / name
        for name in ("pyproject.toml", "requirements.lock", "README.md")
        if (src / name).is_file()
    ]
    for top in ("src", "migrations"):
        root = src / top
        if root.is_dir():
            files += sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and not IGNORED_PARTS.intersection(p.relative_to(src).parts)
                and p.suffix not in {".pyc", ".pyo"}
                and ".egg-info" not in str(p)
            )
    return files


def build_key(src: Path, python: str, machine: str) -> str:
    digest = hashlib.sha256(f"python={python};machine={machine}\n".encode())
    for path in source_files(src):
        digest.update(str(path.relative_to(src)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def lock_key(src: Path, python: str, machine: str) -> str:
    digest = hashlib.sha256(f"python={python};machine={machine}\n".encode())
    digest.update((src / "requirements.lock").read_bytes())
    return digest.hexdigest()[:16]


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"pip failed: {' '.join(cmd)}")


def build(src: Path, out: Path, python: str, machine: str) -> Path:
    """Download the locked wheels for the target, build the app's wheel, pack both."""
    abi = "cp" + python.replace(".", "")
    with tempfile.TemporaryDirectory(prefix="wheelhouse-", dir=out) as tmp:
        wheels = Path(tmp) / "wheels"
        platforms = [f"manylinux_2_{minor}_{machine}" for minor in (17, 24, 28, 31, 34)] + [
            f"manylinux2014_{machine}",
            f"linux_{machine}",
        ]
        platform_args = [arg for p in platforms for arg in ("--platform", p)]
        pip(
            "download",
            "--only-binary=:all:",
            "--no-deps",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            *platform_args,
            "--dest",
            str(wheels),
            "--requirement",
            str(src / "requirements.lock"),
        )
        pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(src))
        partial = Path(tmp) / "wheelhouse.tar"
        with tarfile.open(partial, "w") as tar:
            for wheel in sorted(wheels.iterdir()):
                tar.add(wheel, arcname=wheel.name)
        return partial.replace(out / f".{os.getpid()}.tar")


def app_version(archive: Path, dist: str) -> str:
    """The app's version, read from its wheel's file name (name-version-tags.whl)."""
    with tarfile.open(archive) as tar:
        for name in tar.getnames():
            if name.split("-")[0].lower() == dist:
                return name.split("-")[1]
    raise SystemExit(f"{archive} holds no wheel of {dist}")


def prune(out: Path, keep: Path) -> None:
    archives = sorted(out.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[KEEP_ARCHIVES:]:
        if old != keep:
            old.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", required=True, type=Path, help="the app's source directory")
    parser.add_argument("--out", required=True, type=Path, help="cache directory of wheelhouses")
    parser.add_argument("--python", required=True, help="target Python, major.minor")
    parser.add_argument("--machine", default="x86_64", help="target machine (uname -m)")
    parser.add_argument("--dist", default="bookmarks", help="distribution name of the app")
    args = parser.parse_args()
    dist = args.dist.replace("-", "_").lower()
    src = args.src.resolve()
    if not (src / "requirements.lock").is_file():
        raise SystemExit(f"{src}/requirements.lock is missing: the app must ship a lock file")
    args.out.mkdir(parents=True, exist_ok=True)
    key = build_key(src, args.python, args.machine)
    archive = args.out / f"{key}.tar"
    changed = False
    # Two runs (or two target hosts) asking for the same wheelhouse wait for one build.
    with open(args.out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            build(src, args.out, args.python, args.machine).replace(archive)
            changed = True
        archive.touch()
        prune(args.out, archive)
    shutil.rmtree(src / "build", ignore_errors=True)
    print(
        json.dumps(
            {
                "changed": changed,
                "key": key,
                "archive": str(archive),
                "version": app_version(archive, dist),
                "lock": lock_key(src, args.python, args.machine),
            }
        )
    )


if __name__ == "__main__":
    main()
