"""The CLI: users and tokens, the production checker, readiness and migrations."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from bookmarks.auth import TOKEN_PATTERN

STRONG_SECRET = "n8Zq4vW1xLr7Tk2Pj9Hc5Bm3Yf6Ds0Ga-Ue_Qw"
BOOKMARKS_SCRIPT = Path(sys.executable).with_name("bookmarks")


def works(client: FlaskClient, token: str) -> bool:
    response = client.get("/api/bookmarks", headers={"Authorization": f"Bearer {token}"})
    return response.status_code == 200


def test_create_user_prints_only_the_token(runner: FlaskCliRunner, client: FlaskClient) -> None:
    result = runner.invoke(args=["create-user", "alice"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert TOKEN_PATTERN.fullmatch(token)
    assert "created user 'alice'" in result.stderr
    assert token not in result.stderr
    assert works(client, token)


def test_create_user_again_issues_another_working_token(
    runner: FlaskCliRunner, client: FlaskClient
) -> None:
    first = runner.invoke(args=["create-user", "alice"]).stdout.strip()
    second = runner.invoke(args=["create-user", "alice"])
    assert second.exit_code == 0
    assert "exists; issued an additional token" in second.stderr
    assert second.stdout.strip() != first
    assert works(client, first)
    assert works(client, second.stdout.strip())


def test_users_create_refuses_an_existing_user_unless_asked(runner: FlaskCliRunner) -> None:
    assert runner.invoke(args=["users", "create", "bob"]).exit_code == 0
    again = runner.invoke(args=["users", "create", "bob"])
    assert again.exit_code == 1
    assert "user 'bob' exists" in again.output
    assert runner.invoke(args=["users", "create", "--existing-ok", "bob"]).exit_code == 0


@pytest.mark.parametrize("name", ["Alice", "-x", "a b", "x" * 65, ""])
def test_invalid_user_names_are_refused(runner: FlaskCliRunner, name: str) -> None:
    result = runner.invoke(args=["create-user", name])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_token_revoke_and_list(runner: FlaskCliRunner, client: FlaskClient) -> None:
    first = runner.invoke(args=["create-user", "carol"]).stdout.strip()
    second = runner.invoke(args=["users", "token", "carol"]).stdout.strip()
    assert "carol\t2 active token(s)" in runner.invoke(args=["users", "list"]).stdout

    one = runner.invoke(args=["users", "revoke", "carol", "--prefix", second[:10]])
    assert one.exit_code == 0
    assert "revoked 1 token(s)" in one.stderr
    assert works(client, first)
    assert not works(client, second)

    assert runner.invoke(args=["users", "revoke", "carol"]).exit_code == 0
    assert not works(client, first)
    assert "carol\t0 active token(s)" in runner.invoke(args=["users", "list"]).stdout


def test_commands_on_unknown_users_fail(runner: FlaskCliRunner) -> None:
    assert runner.invoke(args=["users", "token", "nobody"]).exit_code == 1
    assert runner.invoke(args=["users", "revoke", "nobody"]).exit_code == 1


def test_check_ready_on_a_migrated_database(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["check-ready"])
    assert result.exit_code == 0
    assert "schema at 0003_data_version_triggers" in result.stdout


def test_check_ready_fails_without_a_database(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:9/postgres")
    result = app.test_cli_runner().invoke(args=["check-ready"])
    assert result.exit_code == 1
    assert "FAIL database: OperationalError" in result.stderr


def production_env(**changes: str | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"BOOKMARKS_CONFIG", "FLASK_CONFIG", "PAGE_SIZE", "FLASK_DEBUG"}
    }
    env.update(SECRET_KEY=STRONG_SECRET, DATABASE_URL="postgresql+psycopg://u@127.0.0.1/db")
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BOOKMARKS_SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )


def test_check_production_passes_a_good_environment() -> None:
    result = run_script("check-production", env=production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK production configuration")


def test_check_production_explains_a_broken_environment_without_loading_the_app() -> None:
    env = production_env(
        SECRET_KEY="changeme",
        DATABASE_URL="sqlite:///x.db",
        PAGE_SIZE="500",
        BOOKMARKS_CONFIG="development",
        FLASK_DEBUG="1",
    )
    result = run_script("check-production", env=env)
    assert result.returncode == 1
    for expected in (
        "BOOKMARKS_CONFIG or FLASK_CONFIG must be 'production'",
        "SECRET_KEY is too short",
        "SECRET_KEY is a placeholder",
        "DATABASE_URL must point to PostgreSQL, not sqlite",
        "PAGE_SIZE must be between 1 and MAX_PAGE_SIZE=100",
        "FLASK_DEBUG is on",
    ):
        assert expected in result.stderr
    assert "changeme" not in result.stderr.replace("SECRET_KEY", "")


def test_check_production_names_missing_variables() -> None:
    result = run_script("check-production", env=production_env(SECRET_KEY=None, DATABASE_URL=None))
    assert result.returncode == 1
    assert "FAIL SECRET_KEY is not set" in result.stderr
    assert "FAIL DATABASE_URL is not set" in result.stderr


@pytest.mark.parametrize("command", ["heads", "current"])
def test_console_script_shows_the_migration_head(database_url: str, command: str) -> None:
    # Through the real console script: Alembic writes to the process's stdout, which is what the
    # deploy parses (and what Click's test runner cannot capture).
    env = production_env(BOOKMARKS_CONFIG="testing", DATABASE_URL=database_url)
    result = run_script("db", command, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0003_data_version_triggers (head)"
