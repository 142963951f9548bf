"""Migrations: the only way the schema is made; upgrade and downgrade both work, nothing is lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from bookmarks import migrations_dir
from bookmarks.extensions import db
from bookmarks.repository import BookmarkRepository, UserRepository
from bookmarks.search import SearchIndex
from conftest import create_database, dispose, drop_database, make_app

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
    hits, total = SearchIndex(db.session).search(user_id, "kept", offset=0, limit=10)
    assert total == 5
    assert {bookmark.title for bookmark, _ in hits} == {f"kept title {n}" for n in range(5)}


def test_models_match_the_migrated_schema(empty_db_app: Flask) -> None:
    upgrade()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []
