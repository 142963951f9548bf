"""Migrations: the only way the schema is made; upgrade and downgrade both work, nothing is lost."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from bookmarks import migrations_dir
from bookmarks.config import TestingConfig
from bookmarks.extensions import db
from bookmarks.repository import BookmarkRepository, UserRepository
from bookmarks.search import SearchIndex
from conftest import create_database, dispose, drop_database, libpq_url, make_app

DB_NAME = "bookmarks_migrations"


@pytest.fixture
def empty_db_app() -> Iterator[Flask]:
    """An app on a database with nothing in it, not even alembic_version."""
    app = make_app(create_database(DB_NAME))
    with app.app_context():
        yield app
    dispose(app)
    drop_database(DB_NAME)


def tables() -> set[str]:
    return set(inspect(db.engine).get_table_names())


def revision() -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def scripts() -> ScriptDirectory:
    config = Config(str(migrations_dir() / "alembic.ini"))
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config)


def test_there_is_one_head() -> None:
    assert scripts().get_heads() == ["0003_data_version_triggers"]


def test_upgrade_downgrade_to_base_and_upgrade_again(empty_db_app: Flask) -> None:
    upgrade()
    assert revision() == "0003_data_version_triggers"
    assert {"users", "api_tokens", "bookmarks"} <= tables()
    downgrade(revision="base")
    assert revision() is None
    assert tables() <= {"alembic_version"}
    upgrade()
    assert revision() == "0003_data_version_triggers"


def test_each_step_down_and_up(empty_db_app: Flask) -> None:
    upgrade()
    steps = [script.revision for script in scripts().walk_revisions()]
    for expected_after in [*steps[1:], None]:
        downgrade(revision="-1")
        assert revision() == expected_after
    for expected_after in reversed(steps):
        upgrade(revision="+1")
        assert revision() == expected_after


def test_round_trip_on_a_populated_database_loses_nothing(empty_db_app: Flask) -> None:
    upgrade()
    users, repo = UserRepository(db.session), BookmarkRepository(db.session)
    user = users.create("hana")
    user_id = user.id
    token = users.issue_token(user).token
    for n in range(5):
        repo.add(
            user_id, {"url": f"https://{n}.example/", "title": f"kept title {n}", "tags": ["t"]}
        )
    db.session.commit()
    dump = (
        "SELECT id, user_id, url, title, notes, tags, created_at, updated_at"
        " FROM bookmarks ORDER BY id"
    )
    before = db.session.execute(text(dump)).all()
    db.session.remove()

    downgrade(revision="0001_core")
    assert revision() == "0001_core"
    assert "search_vector" not in {c["name"] for c in inspect(db.engine).get_columns("bookmarks")}
    assert db.session.execute(text(dump)).all() == before
    db.session.remove()

    upgrade()
    assert db.session.execute(text(dump)).all() == before
    assert users.principal_for_token(token).name == "hana"
    hits, total, _ = SearchIndex(db.session).search(user_id, "kept", offset=0, limit=10)
    assert total == 5
    assert {bookmark.title for bookmark, _ in hits} == {f"kept title {n}" for n in range(5)}


def test_models_match_the_migrated_schema(empty_db_app: Flask) -> None:
    upgrade()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_a_migration_behind_a_long_transaction_fails_instead_of_queueing_traffic(
    empty_db_app: Flask,
) -> None:
    """``lock_timeout``: waiting for the lock would queue every later query of users behind it."""
    upgrade()
    downgrade(revision="0002_search")
    database_url = empty_db_app.config["SQLALCHEMY_DATABASE_URI"]
    url = libpq_url(database_url)
    impatient = TestingConfig(DATABASE_URL=database_url, MIGRATION_LOCK_TIMEOUT_MS=100)
    empty_db_app.config["MIGRATION_ENGINE_OPTIONS"] = impatient.migration_engine_options()
    with psycopg.connect(url) as writer:
        writer.execute("UPDATE users SET name = name")  # a write left open holds its lock
        with pytest.raises(OperationalError) as failed:
            upgrade()
        assert isinstance(failed.value.orig, psycopg.errors.LockNotAvailable)
    assert revision() == "0002_search", "nothing of it was applied"
    upgrade()
    assert revision() == "0003_data_version_triggers"


def test_migrations_run_with_their_own_timeouts(empty_db_app: Flask) -> None:
    engine = create_engine(
        empty_db_app.config["SQLALCHEMY_DATABASE_URI"],
        **empty_db_app.config["MIGRATION_ENGINE_OPTIONS"],
    )
    with engine.connect() as connection:
        settings = connection.execute(
            text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        ).one()
    engine.dispose()
    assert tuple(settings) == ("5s", "15min")


def test_offline_sql_sets_the_timeouts(empty_db_app: Flask, capsys: pytest.CaptureFixture) -> None:
    upgrade(sql=True)
    script = capsys.readouterr().out
    assert "SET lock_timeout = 5000;" in script
    assert "SET statement_timeout = 900000;" in script


CONCURRENT_INDEX_STEP = textwrap.dedent(
    '''
    """A new index on a big table, built the way env.py's docstring says (a test's own script)."""

    from alembic import op

    revision = "0004_concurrent_index"
    down_revision = "0003_data_version_triggers"
    branch_labels = None
    depends_on = None

    INDEX = "ix_bookmarks_title_concurrently"
    # now() is the transaction's start: inside the run's transaction it differs from the
    # statement's start (earlier statements ran in it); in autocommit every statement is a
    # transaction of its own, and the two are equal.
    PROBE = (
        "INSERT INTO migration_probe"
        " SELECT '{}', now() <> statement_timestamp(), current_setting('lock_timeout')"
    )


    def upgrade() -> None:
        op.execute("CREATE TABLE migration_probe (step text, in_transaction bool, lock text)")
        op.execute(PROBE.format("before"))
        with op.get_context().autocommit_block():
            op.execute(PROBE.format("autocommit"))
            op.create_index(INDEX, "bookmarks", ["title"], postgresql_concurrently=True)


    def downgrade() -> None:
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name="bookmarks", postgresql_concurrently=True)
        op.execute("DROP TABLE migration_probe")
    '''
)


def test_an_index_is_built_concurrently_in_a_step_of_its_own(
    empty_db_app: Flask, tmp_path: Path
) -> None:
    """``CREATE INDEX CONCURRENTLY`` cannot run in a transaction block: under env.py's one
    transaction per run it works only in ``autocommit_block()``, where the timeouts still hold."""
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    (directory / "versions" / "0004_concurrent_index.py").write_text(CONCURRENT_INDEX_STEP)
    upgrade(directory=str(directory))
    assert revision() == "0004_concurrent_index"
    url = libpq_url(empty_db_app.config["SQLALCHEMY_DATABASE_URI"])
    with psycopg.connect(url) as sql:
        probes = {
            step: (in_transaction, lock)
            for step, in_transaction, lock in sql.execute("SELECT * FROM migration_probe")
        }
        valid = sql.execute(
            "SELECT indisvalid FROM pg_index"
            " WHERE indexrelid = 'ix_bookmarks_title_concurrently'::regclass"
        ).fetchone()
    assert probes == {"before": (True, "5s"), "autocommit": (False, "5s")}
    assert valid == (True,)
    downgrade(directory=str(directory), revision="0003_data_version_triggers")
    assert revision() == "0003_data_version_triggers"
    assert "migration_probe" not in tables()


# -- the version triggers (0003) ------------------------------------------------------------


def test_every_change_to_bookmarks_or_tokens_gives_its_owners_a_new_version(
    empty_db_app: Flask,
) -> None:
    upgrade()
    url = libpq_url(empty_db_app.config["SQLALCHEMY_DATABASE_URI"])
    with psycopg.connect(url, autocommit=True) as sql:

        def versions() -> dict[str, int]:
            return dict(sql.execute("SELECT name, data_version FROM users").fetchall())

        sql.execute("INSERT INTO users (name, data_version) VALUES ('ann', 0), ('bob', 0)")
        seen = [versions()]
        assert 0 not in seen[0].values(), "a new user gets a random version too"
        changes = [
            (
                "INSERT INTO api_tokens (user_id, token_hash, prefix)"
                " SELECT id, md5(name), 'bm_' FROM users WHERE name = 'ann'",
                {"ann"},
            ),
            ("UPDATE api_tokens SET revoked_at = now()", {"ann"}),
            (
                "INSERT INTO bookmarks (user_id, url) SELECT id, 'https://x.example/' FROM users",
                {"ann", "bob"},
            ),
            ("UPDATE bookmarks SET title = 'changed'", {"ann", "bob"}),
            (
                "DELETE FROM bookmarks WHERE user_id = (SELECT id FROM users WHERE name = 'bob')",
                {"bob"},
            ),
            ("TRUNCATE bookmarks", {"ann", "bob"}),
            ("UPDATE users SET data_version = 0", {"ann", "bob"}),  # cannot put one back
        ]
        for change, owners in changes:
            sql.execute(change)
            seen.append(versions())
            changed = {name for name in owners | {"ann", "bob"} if seen[-1][name] != seen[-2][name]}
            assert changed == owners, change
        for name in ("ann", "bob"):
            history = [state[name] for state in seen]
            distinct = [v for n, v in enumerate(history) if n == 0 or v != history[n - 1]]
            assert len(set(distinct)) == len(distinct), "no version comes back"
            assert 0 not in history
        sql.execute("DELETE FROM users WHERE name = 'ann'")  # cascades through both triggers
        assert set(versions()) == {"bob"}


def test_downgrade_keeps_the_versions_and_the_old_counting_works(empty_db_app: Flask) -> None:
    upgrade()
    url = libpq_url(empty_db_app.config["SQLALCHEMY_DATABASE_URI"])
    with psycopg.connect(url, autocommit=True) as sql:
        sql.execute("INSERT INTO users (name) VALUES ('ann')")
        version = sql.execute("SELECT data_version FROM users").fetchone()[0]
        # The release before 0003 bumps by one: against the triggers it gets a random one.
        bumped = sql.execute(
            "UPDATE users SET data_version = data_version + 1 RETURNING data_version"
        ).fetchone()[0]
        assert bumped not in {version, version + 1}
    downgrade(revision="0002_search")
    with psycopg.connect(url, autocommit=True) as sql:
        assert sql.execute("SELECT data_version FROM users").fetchone()[0] == bumped
        assert (
            sql.execute(
                "UPDATE users SET data_version = data_version + 1 RETURNING data_version"
            ).fetchone()[0]
            == bumped + 1
        )
        functions = sql.execute(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'bookmarks_%version%'"
            " OR proname = 'bookmarks_touch_owners'"
        ).fetchone()[0]
        assert functions == 0
