"""Monitoring right after converge, before the other tests break things on purpose: Prometheus and
Alertmanager on loopback, the exporters and the app on the private address only, every target up,
the certificate's expiry exported, and no alert firing.

The scenario's group_vars shorten the scrape and evaluation intervals (5 s); tests poll with
generous deadlines and assert no wall time.
"""

from __future__ import annotations

import time

import pytest
from prometheus_api import JOBS, every_target_up, poll, query


@pytest.mark.parametrize("unit", ["prometheus", "prometheus-alertmanager"])
def test_monitoring_service_is_active_and_enabled(host, unit):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled


@pytest.mark.parametrize("port", [9090, 9093])
def test_prometheus_and_alertmanager_answer_on_loopback_only(host, port):
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize("port", [9100, 9187, 9113, 8000])
def test_exporters_and_the_app_listen_on_the_private_address_not_everywhere(host, port):
    # The host's main IPv4 address, Ansible's default_ipv4 (the scenario sets no private_address).
    address = host.check_output("ip -4 route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")
    assert host.socket(f"tcp://{address}:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_every_target_is_up(host):
    targets = poll(lambda: every_target_up(host), 120, "every target up")
    assert {t["labels"]["job"] for t in targets} == JOBS


def test_the_certificate_expiry_is_exported(host):
    result = poll(
        lambda: query(
            host, 'tls_certificate_not_after_seconds{path="/etc/ssl/bookmarks/fullchain.pem"}'
        ),
        120,
        "the certificate's expiry in Prometheus",
    )
    assert float(result[0]["value"][1]) > time.time()


def test_no_alert_fires_on_the_converged_host(host):
    # Pending or firing: none, once every target has been up for a while.
    assert query(host, 'ALERTS{alertstate="firing"}') == []
