"""Alembic environment for Flask-Migrate: the engine and metadata come from the running app.

Unlike Flask-Migrate's template this does not call ``logging.config.fileConfig``: the app has
already set up JSON logging, and fileConfig would silently disable the app's loggers.

Migrations run with a ``lock_timeout`` and a ``statement_timeout`` (``MIGRATION_*_TIMEOUT_MS``):
one stuck behind a long transaction fails instead of queueing all traffic behind its lock. A new
index on a big table is built ``CONCURRENTLY``, in a step of its own
(``with op.get_context().autocommit_block():``), which the same timeouts cover.
"""

import logging

from alembic import context
from flask import current_app
from sqlalchemy import create_engine

logger = logging.getLogger("alembic.env")
config = context.config
target_db = current_app.extensions["migrate"].db


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``flask db upgrade --sql``) for a DBA to review or run."""
    url = target_db.engine.url.render_as_string(hide_password=True)
    context.configure(url=url, target_metadata=target_db.metadata, literal_binds=True)
    config = current_app.config
    with context.begin_transaction():
        context.execute(f"SET lock_timeout = {int(config['MIGRATION_LOCK_TIMEOUT_MS'])}")
        context.execute(f"SET statement_timeout = {int(config['MIGRATION_STATEMENT_TIMEOUT_MS'])}")
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in one transaction per run (PostgreSQL has transactional DDL)."""

    def skip_empty_autogenerate(context, revision, directives) -> None:
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    # Not the app's pool: a connection of its own with the migration timeouts, in one transaction
    # (the app's engine autocommits, for cheap reads).
    engine = create_engine(target_db.engine.url, **current_app.config["MIGRATION_ENGINE_OPTIONS"])
    try:
        with engine.connect().execution_options(isolation_level="READ COMMITTED") as connection:
            context.configure(
                connection=connection, target_metadata=target_db.metadata, **conf_args
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
