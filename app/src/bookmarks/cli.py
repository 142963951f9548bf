"""Command line: users and tokens, the production readiness checker, a readiness probe.

Run through Flask (``flask --app bookmarks.wsgi users create alice``) or the ``bookmarks`` console
script (``bookmarks users create alice``); Flask-Migrate adds ``db upgrade|downgrade|current|heads``
to both. Commands that print a token print only the token on stdout, so scripts can capture it;
everything meant for people goes to stderr.
"""

from __future__ import annotations

import os
import re
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from bookmarks.config import (
    CONFIG_ENV_VARS,
    ConfigError,
    ProductionConfig,
    config_class_from_env,
)
from bookmarks.extensions import db
from bookmarks.models import USER_NAME_MAX_LENGTH
from bookmarks.repository import UserRepository, transaction

USER_NAME = re.compile(rf"[a-z0-9][a-z0-9_.-]{{0,{USER_NAME_MAX_LENGTH - 1}}}")

users = AppGroup("users", help="Create users, issue and revoke their API tokens.")


def _checked_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise click.BadParameter(
            "use 1-64 characters: lower-case letters, digits, '.', '_', '-' (starting with a "
            "letter or digit)",
            param_hint="NAME",
        )
    return name


def _say(message: str) -> None:
    click.echo(message, err=True)


def _create_user(name: str, *, existing_ok: bool) -> None:
    _checked_name(name)
    with transaction(db.session) as session:
        repo = UserRepository(session)
        user = repo.get_by_name(name)
        if user is None:
            user = repo.create(name)
            _say(f"created user {name!r}")
        elif not existing_ok:
            raise click.ClickException(
                f"user {name!r} exists; issue another token with: users token"
            )
        else:
            _say(f"user {name!r} exists; issued an additional token")
        issued = repo.issue_token(user)
    _say(f"token {issued.prefix}... (shown once; only its hash is stored)")
    click.echo(issued.token)


@users.command("create")
@click.argument("name")
@click.option(
    "--existing-ok",
    is_flag=True,
    help="If the user exists, issue it another token instead of failing.",
)
def users_create(name: str, existing_ok: bool) -> None:
    """Create user NAME and print a new API token (stdout: the token alone)."""
    _create_user(name, existing_ok=existing_ok)


@click.command("create-user")
@click.argument("name")
@with_appcontext
def create_user(name: str) -> None:
    """Create user NAME if needed and print a fresh API token (stdout: the token alone).

    Idempotent on the user, so a deploy check can run it on every converge.
    """
    _create_user(name, existing_ok=True)


@users.command("token")
@click.argument("name")
def users_token(name: str) -> None:
    """Issue another token for existing user NAME (stdout: the token alone)."""
    with transaction(db.session) as session:
        repo = UserRepository(session)
        user = repo.get_by_name(name)
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        issued = repo.issue_token(user)
    _say(f"token {issued.prefix}... (shown once; only its hash is stored)")
    click.echo(issued.token)


@users.command("revoke")
@click.argument("name")
@click.option("--prefix", help="Revoke only the token starting with this (as `users list` shows).")
def users_revoke(name: str, prefix: str | None) -> None:
    """Revoke all of NAME's tokens (or one, by --prefix); effective on the next request."""
    with transaction(db.session) as session:
        repo = UserRepository(session)
        user = repo.get_by_name(name)
        if user is None:
            raise click.ClickException(f"no user {name!r}")
        count = repo.revoke_tokens(user, prefix)
    # The commit above waited out the read leases: from now on no worker answers any of them.
    _say(f"revoked {count} token(s) of {name!r}")
    if prefix and count == 0:
        raise click.ClickException(f"no active token of {name!r} starts with {prefix!r}")


@users.command("list")
def users_list() -> None:
    """List users and how many active tokens each has."""
    for row in UserRepository(db.session).list_with_token_counts():
        click.echo(f"{row.name}\t{row.active_tokens} active token(s)\tsince {row.created_at:%F}")


def production_problems() -> list[str]:
    """What would make this environment unfit to serve production traffic (the seeds' checker)."""
    problems: list[str] = []
    try:
        if config_class_from_env() is not ProductionConfig:
            names = " or ".join(CONFIG_ENV_VARS)
            problems.append(f"{names} must be 'production' (or unset)")
    except ConfigError as error:
        problems += error.problems
    try:
        ProductionConfig()._validate()
    except ConfigError as error:
        problems += error.problems
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if multiproc and not (os.path.isdir(multiproc) and os.access(multiproc, os.W_OK)):
        problems.append(f"PROMETHEUS_MULTIPROC_DIR={multiproc} is not a writable directory")
    if os.environ.get("FLASK_DEBUG", "").lower() in {"1", "true", "yes", "on"}:
        problems.append("FLASK_DEBUG is on")
    return problems


@click.command("check-production")
def check_production() -> None:
    """Check the environment for production: exit 1 and list every problem if it is not fit.

    Works without a loadable app, so it explains what ``create_app`` would refuse.
    """
    problems = production_problems()
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(1)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A warning only: the service unit, not the env file, usually sets it for gunicorn.
        click.echo("WARN PROMETHEUS_MULTIPROC_DIR is not set here: gunicorn needs it", err=True)
    click.echo("OK production configuration: secret, database URL, page size, log level")


@click.command("check-ready")
@with_appcontext
def check_ready() -> None:
    """Exit 0 when the database answers and is migrated to this release's head, else 1."""
    from bookmarks.ops import check_database, database_revision, migration_head  # noqa: PLC0415

    timeout = current_app.config["READINESS_TIMEOUT_MS"]
    failure = check_database(db.engine, timeout)
    if failure:
        click.echo(f"FAIL database: {failure}", err=True)
        sys.exit(1)
    head, current = migration_head(current_app), database_revision(db.engine, timeout)
    if current != head:
        click.echo(f"FAIL database at revision {current}, this release expects {head}", err=True)
        sys.exit(1)
    click.echo(f"OK database reachable, schema at {head}")


def init_app(app: Flask) -> None:
    """Register the commands on ``flask --app bookmarks.wsgi``."""
    app.cli.add_command(users)
    app.cli.add_command(create_user)
    app.cli.add_command(check_production)
    app.cli.add_command(check_ready)


def main() -> None:
    """The ``bookmarks`` console script: Flask's CLI with this app preloaded.

    ``check-production`` is attached to the group itself, so it still runs (and explains) when the
    environment is too broken for ``create_app``.
    """
    from bookmarks import create_app  # noqa: PLC0415 - the package imports this module

    group = FlaskGroup(create_app=create_app, help="The bookmarks service.")
    group.add_command(check_production)
    group.main()
