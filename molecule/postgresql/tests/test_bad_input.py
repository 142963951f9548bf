"""Bad input stops the role before anything changes, with a message naming the variable.

The role runs against a bare inventory of the same hosts (no group_vars), so a missing password is
really missing; every other case passes a stand-in password that never reaches the database
because the play stops first.
"""

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
}


@pytest.fixture(scope="module")
def bare_inventory(tmp_path_factory):
    """The db hosts with their connection settings only."""
    generated = yaml.safe_load((INVENTORY_DIR / "ansible_inventory.yml").read_text())
    path = tmp_path_factory.mktemp("bare") / "hosts.yml"
    path.write_text(yaml.safe_dump({"db": {"hosts": generated["all"]["hosts"]}}))
    return path


@pytest.mark.parametrize("variable", BAD_INPUTS)
def test_bad_input_stops_the_play_before_any_change(bare_inventory, variable):
    extra_vars = dict(BAD_INPUTS[variable])
    if variable != "postgresql_app_password":
        extra_vars["postgresql_app_password"] = STAND_IN_PASSWORD
    run = run_playbook(CONVERGE, extra_vars=extra_vars, inventory=bare_inventory)
    assert run.returncode != 0
    assert variable in run.stderr, run.stderr[-3000:]
    counters = recap(run.stdout)
    assert counters, run.stdout[-3000:]
    assert all(c["failed"] == 1 and c["changed"] == 0 for c in counters.values()), counters
    # Nothing past the checks ran.
    assert "TASK [postgresql : Install PostgreSQL]" not in run.stdout
