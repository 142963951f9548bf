"""The database changes ``users.data_version`` itself, to a value that never repeats.

Revision ID: 0003_data_version_triggers
Revises: 0002_search
Create Date: 2026-12-03

The read cache keys every entry by the user's ``data_version`` (see ``bookmarks.service``). Until
now each writer had to bump it by hand, and bumped it by one: a writer in ``psql`` that forgot
left every worker serving old entries, and a restore (or a failover to a lagging replica) moved
the counter back, so the next writes reused versions whose old entries were still cached.

Now triggers do it for every writer, whatever it knows about the app: any change to a user's
bookmarks or tokens (insert, update, delete, truncate) touches the owners' user rows once per
statement, and any insert or update of a user row gets a fresh random 64-bit version
(``bookmarks_new_data_version``: 64 bits of a ``gen_random_uuid()``), which no clock, counter or
restore can bring back. Setting the column by hand is overridden too, so nobody can put a version
back by mistake. Nothing reads versions as ordered.

Old code still works against this schema (its ``data_version + 1`` is overridden by the trigger),
so the release before this one keeps serving while it migrates. Downgrading drops the triggers
and functions and keeps the (random) versions; the old code then counts up from them.
"""

from alembic import op

revision = "0003_data_version_triggers"
down_revision = "0002_search"
branch_labels = None
depends_on = None

# The tables whose changes a cached read can observe (bookmarks) or that decide who may read
# (tokens); each gets one statement-level trigger per event (a trigger with transition tables
# may have only one event) and one for TRUNCATE.
WATCHED = ("bookmarks", "api_tokens")
EVENTS = {
    "insert": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows",
}


def upgrade() -> None:
    # SET search_path FROM CURRENT: the functions find this schema's tables whatever search_path
    # the writing session has.
    op.execute(
        """
        CREATE FUNCTION bookmarks_new_data_version() RETURNS bigint
        LANGUAGE sql VOLATILE PARALLEL SAFE
        AS $$
            SELECT ('x' || pg_catalog.substr(
                        pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 1, 16))::bit(64)::bigint
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION bookmarks_users_new_version() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT
        AS $$
        BEGIN
            NEW.data_version := bookmarks_new_data_version();
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER users_new_data_version BEFORE INSERT OR UPDATE ON users
        FOR EACH ROW EXECUTE FUNCTION bookmarks_users_new_version()
        """
    )
    # The UPDATE below only touches the owners' rows: the trigger above gives each a new version.
    op.execute(
        """
        CREATE FUNCTION bookmarks_touch_owners() RETURNS trigger
        LANGUAGE plpgsql SET search_path FROM CURRENT
        AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                UPDATE users SET data_version = 0
                WHERE id IN (SELECT user_id FROM new_rows);
            ELSIF TG_OP = 'UPDATE' THEN
                UPDATE users SET data_version = 0
                WHERE id IN (SELECT user_id FROM new_rows UNION SELECT user_id FROM old_rows);
            ELSIF TG_OP = 'DELETE' THEN
                UPDATE users SET data_version = 0
                WHERE id IN (SELECT user_id FROM old_rows);
            ELSE  -- TRUNCATE: every user may have lost rows
                UPDATE users SET data_version = 0;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in WATCHED:
        for event, clause in EVENTS.items():
            op.execute(
                f"CREATE TRIGGER {table}_{event}_new_data_version {clause.format(table=table)}"
                " FOR EACH STATEMENT EXECUTE FUNCTION bookmarks_touch_owners()"
            )
        op.execute(
            f"CREATE TRIGGER {table}_truncate_new_data_version AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION bookmarks_touch_owners()"
        )


def downgrade() -> None:
    for table in WATCHED:
        for event in (*EVENTS, "truncate"):
            op.execute(f"DROP TRIGGER {table}_{event}_new_data_version ON {table}")
    op.execute("DROP FUNCTION bookmarks_touch_owners()")
    op.execute("DROP TRIGGER users_new_data_version ON users")
    op.execute("DROP FUNCTION bookmarks_users_new_version()")
    op.execute("DROP FUNCTION bookmarks_new_data_version()")
