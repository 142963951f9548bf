"""Release life cycle on a live host: deploy, rollback, a broken release, a killed master."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from conftest import PROJECT, LoadGenerator, api, run_playbook, start_playbook, status_of


def live_release(host) -> str:
    return host.file("/srv/bookmarks/current").linked_to.rsplit("/", 1)[1]


def test_deploy_then_rollback_switch_the_live_release(host, hostname):
    before = live_release(host)
    deployed = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    after = live_release(host)
    assert after != before
    assert status_of(host)["release_id"] == after

    rolled = run_playbook("rollback.yml", hostname)
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert live_release(host) == before
    assert status_of(host)["release_id"] == before
    # The plan names the database's migration head beside the target's.
    assert "database at" in " ".join(rolled.stdout.split())


@pytest.fixture
def fact_cache(tmp_path: Path) -> dict[str, str]:
    """The fact cache of the repository's ansible.cfg (smart gathering, two hours), kept apart."""
    return {
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path / "facts"),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "7200",
    }


def test_a_listing_after_a_rollback_never_replays_the_deploys_plan(host, hostname, fact_cache):
    before = live_release(host)
    deployed = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true", env=fact_cache)
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    assert live_release(host) != before
    # Named: the release made before the new one may be another test's, not the one live before.
    rolled = run_playbook(
        "rollback.yml", hostname, "-e", f"rollback_release={before}", env=fact_cache
    )
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert live_release(host) == before

    listed = run_playbook("rollback.yml", hostname, "-e", "rollback_list=true", env=fact_cache)
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert live_release(host) == before
    assert status_of(host)["release_id"] == before


def test_rollback_refuses_when_a_web_hosts_address_is_unknown(host, hostname, fact_cache, tmp_path):
    """A web host outside the run and not in the fact cache would drop out of the balancers."""
    extra = tmp_path / "elsewhere.yml"
    extra.write_text(
        "all:\n  children:\n"
        "    web: {hosts: {ghost-web: {ansible_host: 192.0.2.10}}}\n"
        "    lb: {hosts: {ghost-lb: {ansible_host: 192.0.2.11}}}\n"
    )
    before = live_release(host)
    # A target named, so the plan passes whatever earlier tests left, and the address check refuses.
    target = [release for release in releases_in_order(host) if release != before][-1]
    refused = run_playbook(
        "rollback.yml",
        hostname,
        "-i",
        str(extra),
        "-e",
        f"rollback_release={target}",
        env=fact_cache,
    )
    assert refused.returncode != 0
    text = " ".join((refused.stdout + refused.stderr).split())
    assert "would lose web host(s) " in text, text[-3000:]
    # Named among the unknown hosts (the other platform's host is unknown too when limited).
    assert "ghost-web" in text.split("would lose web host(s) ", 1)[1].split(":", 1)[0]
    assert live_release(host) == before
    # The refused run ended its hold on the release lock.
    assert lock_is_free(host)


def test_a_deploy_rewrites_the_configuration_only_when_it_changed(host, hostname):
    """deploy.yml skips the layout and configuration tasks while the host has what they would
    write (the fingerprint config.yml keeps), and applies a changed configuration."""
    env_file = host.file("/etc/bookmarks/bookmarks.env")
    marker = f"mark-{uuid.uuid4().hex[:12]}"
    with_mark = json.dumps({"app_extra_env": {"BOOKMARKS_DEPLOY_MARK": marker}})

    changed = run_playbook("deploy.yml", hostname, "-e", with_mark)
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert f'BOOKMARKS_DEPLOY_MARK="{marker}"' in env_file.content_string
    assert "Write the environment file" in changed.stdout
    # The service restarted with it: its main process has the new variable.
    pid = host.check_output("systemctl show -P MainPID bookmarks.service")
    assert marker in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")

    # The same configuration again: the tasks that would write it are skipped (the default
    # callback prints no banner for a skipped task) and the service keeps running as it was.
    same = run_playbook("deploy.yml", hostname, "-e", with_mark)
    assert same.returncode == 0, same.stdout[-3000:]
    tasks_run = same.stdout.split("TASKS RECAP")[0]  # profile_tasks' list names skipped ones too
    assert "Write the environment file" not in tasks_run, tasks_run[-3000:]
    assert "Install the systemd units" not in tasks_run
    assert host.check_output("systemctl show -P MainPID bookmarks.service") == pid

    # Without the variable, the host's configuration differs again: it is rewritten.
    back = run_playbook("deploy.yml", hostname)
    assert back.returncode == 0, back.stdout[-3000:]
    assert marker not in env_file.content_string
    assert host.service("bookmarks.service").is_running


def test_release_list_shows_manifests(host, hostname):
    listed = run_playbook("rollback.yml", hostname, "-e", "rollback_list=true")
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert f"{live_release(host)}  <- current" in listed.stdout


def releases_in_order(host) -> list[str]:
    """The release ids as the release tool lists them: oldest first, by when they were made."""
    listed = json.loads(host.check_output("/usr/local/sbin/bookmarks-release list"))
    return [release["release_id"] for release in listed]


def test_releases_are_ordered_by_when_they_were_made_not_by_name(host, hostname):
    """v10 sorts before v9 by name; it is still the newer release, and v9 the one to go back to."""
    suffix = uuid.uuid4().hex[:6]
    older, newer = f"v9-{suffix}", f"v10-{suffix}"
    for release_id in (older, newer):
        deployed = run_playbook(
            "deploy.yml",
            hostname,
            "-e",
            "app_force_release=true",
            "-e",
            f"app_release_id={release_id}",
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:]
    assert live_release(host) == newer
    assert releases_in_order(host)[-2:] == [older, newer]

    listed = run_playbook("rollback.yml", hostname, "-e", "rollback_list=true")
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert listed.stdout.index(f"{older} |") < listed.stdout.index(f"{newer}  <- current")

    rolled = run_playbook("rollback.yml", hostname)
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert live_release(host) == older
    assert status_of(host)["release_id"] == older


LOCK = "/run/bookmarks-release.lock"
TOOL = "/usr/local/sbin/bookmarks-release"


def lock_is_free(host) -> bool:
    """Whether nobody holds the host's release lock (flock -n would get it at once)."""
    return host.run(f"flock --nonblock {LOCK} true").rc == 0


def test_two_deploys_started_together_one_runs_and_the_other_is_refused(host, hostname):
    """The release lock: one deploy at a time, the other refused naming the holder."""
    suffix = uuid.uuid4().hex[:6]
    before = set(releases_in_order(host))
    runs = {
        release_id: start_playbook(
            "deploy.yml",
            hostname,
            "-e",
            "app_force_release=true",
            "-e",
            f"app_release_id={release_id}",
        )
        for release_id in (f"first-{suffix}", f"second-{suffix}")
    }
    outcomes = {release_id: run.communicate() for release_id, run in runs.items()}
    codes = {release_id: run.returncode for release_id, run in runs.items()}
    done = [release_id for release_id, code in codes.items() if code == 0]
    refused = [release_id for release_id, code in codes.items() if code != 0]
    tails = {release_id: output[0][-2000:] for release_id, output in outcomes.items()}
    assert len(done) == 1, tails
    assert len(refused) == 1, tails
    text = " ".join(outcomes[refused[0]][0].split())
    assert " is held by deploy.yml (run " in text, text[-3000:]
    assert "Nothing was changed here" in text
    assert "unlock --force" in text
    # The finished deploy's release is live and whole; the refused one never started installing.
    assert live_release(host) == done[0]
    assert status_of(host)["release_id"] == done[0]
    assert set(releases_in_order(host)) - before == {done[0]}
    assert lock_is_free(host)


def said(run) -> str:
    """What a run printed on stdout and stderr (molecule's settings send failures to stderr)."""
    return " ".join((run.stdout + (run.stderr or "")).split())


def test_a_hold_killed_with_kill_9_never_blocks_the_next_run(host, hostname):
    taken = host.run(f"{TOOL} lock by-hand-{uuid.uuid4().hex[:6]} 600 tester a test hold")
    assert taken.rc == 0, taken.stderr
    holder = json.loads(taken.stdout)
    try:
        before = live_release(host)
        refused = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
        assert refused.returncode != 0
        assert "is held by a test hold (run by-hand-" in said(refused), said(refused)[-3000:]
        assert "started by tester" in said(refused)
        assert live_release(host) == before
        # A restore waits its turn too, before it stops anything (a dump to choose, taken now).
        backup = run_playbook("backup.yml", hostname)
        assert backup.returncode == 0, backup.stdout[-3000:]
        main_pid = unit_property(host, "MainPID")
        restore = run_playbook("restore.yml", hostname, "-e", "restore_confirm=yes")
        assert restore.returncode != 0
        assert "is held by a test hold (run by-hand-" in said(restore), said(restore)[-3000:]
        assert unit_property(host, "MainPID") == main_pid
        assert not lock_is_free(host)
    finally:
        # Whatever failed above, the later tests' deploys must not meet this hold.
        host.run(f"kill -9 {holder['pid']}")
    deployed = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    assert live_release(host) != before
    assert lock_is_free(host)


def unit_property(host, name: str) -> str:
    return host.check_output(f"systemctl show --property={name} --value bookmarks.service")


def test_deploy_under_load_hands_over_without_a_restart_or_a_failed_request(host, hostname):
    """gunicorn re-executes the new release beside the old one; systemd's unit never restarts."""
    started = unit_property(host, "ActiveEnterTimestampMonotonic")
    old_master = unit_property(host, "MainPID")
    load = LoadGenerator(host)
    load.start(seconds=300)
    try:
        deployed = run_playbook("deploy.yml", hostname, "-e", "app_force_release=true")
    finally:
        report = load.stop()
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    assert report.statuses.get(200, 0) > 0, report.text
    assert set(report.statuses) == {200}, report.text
    assert report.errors == 0, report.text

    new_master = unit_property(host, "MainPID")
    assert new_master not in ("0", old_master)
    assert unit_property(host, "ActiveEnterTimestampMonotonic") == started
    # The new master runs the new release's own venv python, not the old release's.
    release_dir = host.file("/srv/bookmarks/current").linked_to
    interpreter = host.file(f"/proc/{new_master}/cmdline").content.split(b"\0")[0].decode()
    assert interpreter == f"{release_dir}/venv/bin/python"
    assert status_of(host)["release_id"] == live_release(host)


@pytest.fixture
def broken_app(tmp_path: Path) -> Path:
    """A copy of the app whose WSGI module fails at import: a release that can never start."""
    src = tmp_path / "app"
    shutil.copytree(
        PROJECT / "app",
        src,
        ignore=shutil.ignore_patterns(".venv*", "__pycache__", "*.egg-info", "build", "tests"),
    )
    wsgi = src / "src" / "bookmarks" / "wsgi.py"
    wsgi.write_text('raise RuntimeError("deliberately broken release")\n' + wsgi.read_text())
    return src


def test_broken_release_is_rolled_back_and_the_site_keeps_answering(host, hostname, broken_app):
    before = live_release(host)
    result = run_playbook(
        "deploy.yml",
        hostname,
        "-e",
        f"app_src_dir={broken_app}",
        "-e",
        "app_health_gate_timeout=20",
    )
    assert result.returncode != 0
    # ansible-core prints task errors on stderr.
    assert "did not become ready" in " ".join((result.stdout + result.stderr).split())
    assert live_release(host) == before
    status, _, body = api(host, "GET", "/health/ready")
    assert status == 200, body
    assert status_of(host)["release_id"] == before


def test_killed_master_is_restarted_by_systemd(host):
    old_pid = host.check_output("systemctl show -p MainPID --value bookmarks.service")
    host.run_expect([0], f"kill -9 {old_pid}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new_pid = host.check_output("systemctl show -p MainPID --value bookmarks.service")
        if new_pid not in ("0", old_pid) and api(host, "GET", "/health/ready")[0] == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail("bookmarks.service did not come back within 20 s after kill -9")


def test_deploy_prunes_to_the_kept_number_but_a_rollback_still_has_its_target(host, hostname):
    releases = "/srv/bookmarks/releases"
    deployed = run_playbook(
        "deploy.yml", hostname, "-e", "app_force_release=true", "-e", "app_keep_releases=2"
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:]
    live = live_release(host)
    names = releases_in_order(host)
    assert set(host.file(releases).listdir()) == set(names)
    earlier_good = [
        n for n in names[: names.index(live)] if not host.file(f"{releases}/{n}/.failed").exists
    ]
    # The newest two stay, and so does the release a rollback goes back to; nothing else. Earlier
    # tests left ids that sort the wrong way by name (v9, v10): newest means made last.
    assert set(names) == {*names[-2:], live, *earlier_good[-1:]}
    assert earlier_good, f"the rollback target was pruned: {names}"

    rolled = run_playbook("rollback.yml", hostname)
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert live_release(host) == earlier_good[-1]
    assert status_of(host)["release_id"] == earlier_good[-1]
