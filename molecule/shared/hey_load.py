"""hey as continuous test load inside a molecule host, shared by the scenarios' tests.

hey runs in a transient systemd unit on the given testinfra host, so it goes on while the test
runs a playbook; interrupted, it prints its report, which `Load` reads.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

DOMAIN = "bookmarks.test"


@dataclass
class Load:
    """What hey reported."""

    statuses: dict[int, int]
    errors: int
    p99: float
    slowest: float
    text: str

    @property
    def failed(self) -> int:
        return self.errors + sum(n for code, n in self.statuses.items() if code != 200)

    @property
    def total(self) -> int:
        return self.errors + sum(self.statuses.values())


class LoadGenerator:
    """hey on `host` against https://bookmarks.test/health/ready (nginx, gunicorn, PostgreSQL)."""

    def __init__(self, host, unit: str = "bm-load"):
        self.host = host
        self.unit = unit
        self.out = f"/var/tmp/{unit}.txt"

    def start(self, concurrency: int = 4, rate_per_worker: int = 50, seconds: int = 900) -> None:
        self.host.run(f"systemctl stop {self.unit}; systemctl reset-failed {self.unit}")
        self.host.run_expect(
            [0],
            "systemd-run --unit=%s -p StandardOutput=truncate:%s -p StandardError=journal "
            "hey -z %ss -c %s -q %s -t 10 https://%s/health/ready",
            self.unit,
            self.out,
            str(seconds),
            str(concurrency),
            str(rate_per_worker),
            DOMAIN,
        )
        time.sleep(2)

    def stop(self) -> Load:
        # hey prints its report when interrupted.
        self.host.run_expect([0], f"systemctl kill -s INT {self.unit}")
        for _ in range(60):
            if self.host.run(f"systemctl is-active --quiet {self.unit}").rc != 0:
                break
            time.sleep(0.5)
        return parse_hey(self.host.file(self.out).content_string)


def parse_hey(text: str) -> Load:
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors_part = text.split("Error distribution:")[1] if "Error distribution:" in text else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors_part, re.M))
    p99 = re.search(r"99%+ in ([\d.]+) secs", text)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", text)
    assert statuses or errors, f"no report from hey:\n{text}"
    return Load(
        statuses,
        errors,
        float(p99.group(1)) if p99 else 0.0,
        float(slowest.group(1)) if slowest else 0.0,
        text,
    )
