"""Bad input stops each role in its validate phase, naming the variable, before any change."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

PLAYBOOK = Path(__file__).resolve().parent.parent / "bad_input.yml"
# Files under /etc changed since boot, with their times: equal before and after = no change.
ETC_STATE = "find /etc -newer /etc/hostname -printf '%p %T@\\n' | sort | md5sum"

CASES = [
    ("nginx", {"nginx_server_name": "not a host name!"}, "nginx_server_name"),
    ("nginx", {"nginx_server_aliases": ["ok.test", "bad_name..test"]}, "nginx_server_aliases"),
    ("nginx", {"nginx_hsts_max_age": -1}, "nginx_hsts_max_age"),
    ("nginx", {"nginx_upstream_socket": "run/bookmarks/gunicorn.sock"}, "nginx_upstream_socket"),
    ("certbot", {"certbot_enabled": True, "certbot_email": ""}, "certbot_email"),
    ("logrotate", {"logrotate_keep": 0}, "logrotate_keep"),
]


@pytest.mark.parametrize(("role", "extra", "variable"), CASES, ids=[c[2] for c in CASES])
def test_bad_input_stops_the_role_before_any_change(all_hosts, role, extra, variable):
    # One run against every target at once (no `host` fixture: this test is not per host).
    before = [h.run(ETC_STATE).stdout for h in all_hosts]
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "-e",
            json.dumps({"edge_role": role, **extra}),
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    assert run.returncode != 0, output
    for h in all_hosts:
        name = h.backend.get_hostname()
        assert re.search(rf"{name}\s*:.*changed=0\s.*failed=1", output), output
    assert f"{variable} " in output, output
    assert [h.run(ETC_STATE).stdout for h in all_hosts] == before
