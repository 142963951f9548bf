"""Bad input stops the role before anything changes, with a message naming the variable.

One converge runs against a bare inventory (no group_vars) in which every db host appears once per
bad input, under an alias that carries that one bad value as a host variable. Each alias must fail
on its own check and change nothing. A missing password is really missing there; every other alias
has a stand-in password that never reaches the database because its play stops first.
"""

import re

import pytest
import yaml
from conftest import INVENTORY_DIR, SCENARIO_DIR, recap, run_playbook

CONVERGE = SCENARIO_DIR / "converge.yml"
STAND_IN_PASSWORD = "stand-in-never-applied"
BAD_INPUTS = {
    "postgresql_auth_method": {"postgresql_auth_method": "trust"},
    "postgresql_app_password": {},
    "postgresql_listen_addresses": {"postgresql_listen_addresses": ["localhost", "192.0.2.10"]},
    "postgresql_backup_keep_count": {"postgresql_backup_keep_count": 0},
    "postgresql_backup_keep_days": {"postgresql_backup_keep_days": 0},
    # An endpoint given as a URL, and an S3 repository without its access key id.
    "postgresql_pgbackrest_s3_endpoint": {
        "postgresql_pgbackrest_s3_enabled": True,
        "postgresql_pgbackrest_s3_bucket": "backups",
        "postgresql_pgbackrest_s3_endpoint": "https://s3.example.com",
    },
    "postgresql_pgbackrest_s3_key": {
        "postgresql_pgbackrest_s3_enabled": True,
        "postgresql_pgbackrest_s3_bucket": "backups",
        "postgresql_pgbackrest_s3_endpoint": "s3.example.com",
        "postgresql_pgbackrest_s3_key_secret": "stand-in-s3-secret-never-printed",
    },
}


# Where one host's printed result ends: the next host's result, the next error, or the end.
NEXT_RESULT = r"(?=\n(?:fatal|ok|changed|skipping): \[|\n\[ERROR\]|\Z)"


def alias(variable: str, host: str) -> str:
    return f"bad-{variable}-{host}"


@pytest.fixture(scope="module")
def db_host_names() -> list[str]:
    generated = yaml.safe_load((INVENTORY_DIR / "ansible_inventory.yml").read_text())
    return sorted(generated["all"]["hosts"])


@pytest.fixture(scope="module")
def run(tmp_path_factory, db_host_names):
    """The converge over every (bad input, db host) alias."""
    generated = yaml.safe_load((INVENTORY_DIR / "ansible_inventory.yml").read_text())
    hosts = {}
    for variable, bad in BAD_INPUTS.items():
        for name in db_host_names:
            password = (
                {}
                if variable == "postgresql_app_password"
                else {"postgresql_app_password": STAND_IN_PASSWORD}
            )
            hosts[alias(variable, name)] = {
                **generated["all"]["hosts"][name],
                "ansible_host": name,  # the docker connection's container name
                **password,
                **bad,
            }
    inventory = tmp_path_factory.mktemp("bad-input") / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"db": {"hosts": hosts}}))
    return run_playbook(CONVERGE, inventory=inventory)


def failure_of(output: str, host: str) -> str:
    """What Ansible said went wrong for the host: the argument errors or the assertion message."""
    match = re.search(
        rf"fatal: \[{re.escape(host)}\]: FAILED! =>(.*?){NEXT_RESULT}", output, re.DOTALL
    )
    if not match:
        return ""
    result = match.group(1)
    if "argument_errors:" in result:  # the argument spec's verdict, without the spec it lists
        return result.split("argument_errors:", 1)[1].split("argument_spec_data:", 1)[0]
    return result.split("msg:", 1)[-1]


def test_the_run_fails(run):
    assert run.returncode != 0


@pytest.mark.parametrize("variable", BAD_INPUTS)
def test_bad_input_stops_the_play_before_any_change(run, db_host_names, variable):
    counters = recap(run.stdout)
    output = run.stdout + run.stderr
    for name in db_host_names:
        host = alias(variable, name)
        assert counters[host]["failed"] == 1, counters
        assert counters[host]["changed"] == 0, counters
        assert variable in failure_of(output, host), output[-3000:]
    # Nothing past the checks ran for any alias.
    assert "TASK [postgresql : Install PostgreSQL]" not in run.stdout


def test_a_refused_s3_secret_is_never_printed(run):
    assert "stand-in-s3-secret-never-printed" not in run.stdout + run.stderr
