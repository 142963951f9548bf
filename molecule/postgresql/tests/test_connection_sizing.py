"""PostgreSQL sized for what the web hosts really run: preflight.yml refuses a configured
postgresql_max_connections below every web host's gunicorn workers x its pool per worker x 2 (a
handover runs two sets of workers) plus the headroom, naming the figures, and accepts that number.

The inventories are ad-hoc hosts on the control node (no container, a few seconds a run): a play
before preflight.yml gives each web host the vCPU count under test as the fact setup would give it.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT_DIR, recap, run_playbook, said

PREFLIGHT = PROJECT_DIR / "playbooks" / "preflight.yml"
APP_DEFAULTS = PROJECT_DIR / "roles" / "app" / "defaults" / "main.yml"
APP_CONFIG = PROJECT_DIR / "app" / "src" / "bookmarks" / "config.py"
POSTGRESQL_DEFAULTS = PROJECT_DIR / "roles" / "postgresql" / "defaults" / "main.yml"
# Only what preflight.yml's first play asks of every host (TEST-ONLY values, nothing is deployed).
COMMON_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": sys.executable,
    "app_name": "bookmarks",
    "app_domain": "bookmarks.example.test",
    "app_secret_key": "test-only-Wq8vZ3kPm2Xr7Ly5Nd4Jh6Tb9Fc1Gs0Ae",
    "app_database_url": "postgresql+psycopg://bookmarks:test-only@localhost:5432/bookmarks",
    "certbot_enabled": False,
}
# Facts of these ad-hoc hosts stay in the run (whatever ansible.cfg's fact cache).
MEMORY_FACTS = {"ANSIBLE_CACHE_PLUGIN": "memory"}
GIVE_FACTS = """\
- name: Give the web hosts the vCPU count under test, as setup would
  hosts: web
  gather_facts: false
  tasks:
    - name: Set the vCPU count fact
      ansible.builtin.set_fact:
        ansible_processor_vcpus: "{{ test_vcpus | int }}"
        cacheable: true
      when: test_vcpus is defined

- name: Run the preflight checks
  ansible.builtin.import_playbook: %s
"""
APP_WORKERS = """\
- name: Evaluate the app role's default worker count
  hosts: web
  gather_facts: false
  tasks:
    - name: Set the vCPU count fact
      ansible.builtin.set_fact:
        ansible_processor_vcpus: "{{ test_vcpus | int }}"
        cacheable: true

    - name: Load the app role's defaults
      ansible.builtin.include_vars:
        file: %s

    - name: Print the worker count
      ansible.builtin.debug:
        msg: "WORKERS {{ inventory_hostname }} {{ app_gunicorn_workers }}"
"""

# name -> (web hosts: their variables, db hosts, connections needed)
INVENTORIES = {
    # 2 vCPUs: 5 workers x 10 connections x 2 + 10 headroom.
    "one host": ({"app1": {"test_vcpus": 2}}, ["app1"], 110),
    # 8 vCPUs: 17 workers x 10 connections x 2, on 3 hosts, + 10 headroom.
    "three web hosts with 8 vCPUs": (
        {f"web{n}": {"test_vcpus": 8} for n in (1, 2, 3)},
        ["db1"],
        1030,
    ),
    # Per host: 1 vCPU gives 3 workers (60); a pool of 3 set in app_extra_env (17 x 3 x 2 = 102);
    # workers set in the inventory (4 x 10 x 2 = 80); + 10 headroom.
    "mixed web hosts": (
        {
            "small": {"test_vcpus": 1},
            "big": {"test_vcpus": 8, "app_extra_env": {"DB_POOL_SIZE": 3, "DB_MAX_OVERFLOW": 0}},
            "pinned": {"test_vcpus": 8, "app_gunicorn_workers": 4},
        },
        ["db1"],
        252,
    ),
}


def write_inventory(directory, web: dict, db: list, db_vars: dict) -> str:
    hosts = {"web": {"hosts": web}, "db": {"hosts": {name: dict(db_vars) for name in db}}}
    inventory = directory / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": COMMON_VARS, "children": hosts}}))
    return str(inventory)


def preflight(tmp_path, web: dict, db: list, db_vars: dict, give_facts: bool = True):
    inventory = write_inventory(tmp_path, web, db, db_vars)
    playbook = PREFLIGHT
    if give_facts:
        playbook = tmp_path / "preflight-with-facts.yml"
        playbook.write_text(GIVE_FACTS % json.dumps(str(PREFLIGHT)))
    return run_playbook(playbook, inventory=inventory, env=MEMORY_FACTS)


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_preflight_refuses_max_connections_below_what_the_web_hosts_need(tmp_path, inventory):
    web, db, needed = INVENTORIES[inventory]
    run = preflight(tmp_path, web, db, {"postgresql_max_connections": needed - 1})
    assert run.returncode != 0, run.stdout[-3000:]
    assert f"postgresql_max_connections is {needed - 1} on {db[0]}" in said(run)
    assert f"but {needed} are needed" in said(run)
    assert recap(run.stdout)[db[0]]["changed"] == 0


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_preflight_accepts_max_connections_of_what_the_web_hosts_need(tmp_path, inventory):
    web, db, needed = INVENTORIES[inventory]
    run = preflight(tmp_path, web, db, {"postgresql_max_connections": needed})
    assert run.returncode == 0, run.stdout[-3000:]


def test_refusal_names_each_web_hosts_figures(tmp_path):
    web, db, _ = INVENTORIES["mixed web hosts"]
    run = preflight(tmp_path, web, db, {"postgresql_max_connections": 100})
    for figures in (
        "small 3 workers x 10 connections x 2 (handover) = 60",
        "big 17 workers x 3 connections x 2 (handover) = 102",
        "pinned 4 workers x 10 connections x 2 (handover) = 80",
        "plus 10 kept free",
    ):
        assert figures in said(run), said(run)[-3000:]


def test_headroom_from_the_inventory_counts(tmp_path):
    web, db, needed = INVENTORIES["one host"]
    db_vars = {"postgresql_max_connections": needed, "postgresql_connection_headroom": 20}
    run = preflight(tmp_path, web, db, db_vars)
    assert run.returncode != 0
    assert f"but {needed + 10} are needed" in said(run)


def test_preflight_gathers_the_vcpu_count_it_does_not_know(tmp_path):
    vcpus = json.loads(
        subprocess.run(
            ["ansible", "localhost", "-m", "setup", "-a", "gather_subset=!all,hardware", "-o"],
            capture_output=True,
            text=True,
            check=True,
            # Plain JSON: molecule forces colour, whose escape codes would break it.
            env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        ).stdout.split("=>", 1)[1]
    )["ansible_facts"]["ansible_processor_vcpus"]
    workers = max(2, vcpus * 2 + 1)
    run = preflight(
        tmp_path, {"app1": {}}, ["app1"], {"postgresql_max_connections": 10}, give_facts=False
    )
    assert run.returncode != 0
    assert f"app1 {workers} workers x 10 connections" in said(run), said(run)[-3000:]


def test_worker_count_is_the_app_roles_default(tmp_path):
    """The playbooks' figure follows roles/app's app_gunicorn_workers (2 x vCPU + 1, at least 2)."""
    web = {f"vcpus{n}": {"test_vcpus": n} for n in (1, 2, 8)}
    inventory = write_inventory(tmp_path, web, [], {})
    playbook = tmp_path / "app-workers.yml"
    playbook.write_text(APP_WORKERS % json.dumps(str(APP_DEFAULTS)))
    run = run_playbook(playbook, inventory=inventory, env=MEMORY_FACTS)
    assert run.returncode == 0, run.stdout[-3000:]
    from_role = dict(re.findall(r"WORKERS (vcpus\d+) (\d+)", run.stdout))
    assert from_role == {"vcpus1": "3", "vcpus2": "5", "vcpus8": "17"}


def test_pool_per_worker_is_the_apps_default():
    """The playbooks' 10 connections per worker are the app's DB_POOL_SIZE + DB_MAX_OVERFLOW."""
    source = APP_CONFIG.read_text()
    pool = int(re.search(r'_env_int\("DB_POOL_SIZE", (\d+)\)', source).group(1))
    overflow = int(re.search(r'_env_int\("DB_MAX_OVERFLOW", (\d+)\)', source).group(1))
    assert pool + overflow == 10


def test_headroom_is_the_postgresql_roles_default():
    defaults = yaml.safe_load(POSTGRESQL_DEFAULTS.read_text())
    assert defaults["postgresql_connection_headroom"] == 10
