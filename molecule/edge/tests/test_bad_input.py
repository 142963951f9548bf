"""Bad input stops each role in its validate phase, naming the variable, before any change."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

PLAYBOOK = Path(__file__).resolve().parent.parent / "bad_input.yml"

CASES = [
    ("nginx", {"nginx_server_name": "not a host name!"}, "nginx_server_name"),
    ("nginx", {"nginx_server_aliases": ["ok.test", "bad_name..test"]}, "nginx_server_aliases"),
    ("nginx", {"nginx_hsts_max_age": -1}, "nginx_hsts_max_age"),
    ("nginx", {"nginx_upstream_socket": "run/bookmarks/gunicorn.sock"}, "nginx_upstream_socket"),
    ("certbot", {"certbot_enabled": True, "certbot_email": ""}, "certbot_email"),
    ("logrotate", {"logrotate_keep": 0}, "logrotate_keep"),
]


@pytest.mark.parametrize(("role", "extra", "variable"), CASES, ids=[c[2] for c in CASES])
def test_bad_input_stops_the_role_before_any_change(host, role, extra, variable):
    before = host.run("find /etc -newer /etc/hostname -printf '%p %T@\\n' | sort | md5sum").stdout
    run = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit",
            host.backend.get_hostname(),
            "-e",
            json.dumps({"edge_role": role, **extra}),
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert variable in output, output
    assert re.search(r"changed=0\s", output), output
    after = host.run("find /etc -newer /etc/hostname -printf '%p %T@\\n' | sort | md5sum").stdout
    assert before == after
