#!/usr/bin/python3
"""Row counts and content hashes of a database's tables, for the pgBackRest restore drill.

    pgbackrest_drill_fingerprint.py live DB RESTORE_POINT
        The live cluster (Debian's socket, default port): the app's tables are locked against
        writes for a moment (SHARE mode) while a snapshot is exported and the named restore point
        is written to the WAL, then the lock is released and the tables are read in that snapshot.
        A restore to the restore point must therefore show exactly what this prints.
    pgbackrest_drill_fingerprint.py scratch DB PORT SOCKET_DIR
        The scratch cluster that the drill restored, read in one transaction.

Prints one JSON object: {"tables": {"public.name": {"rows": N, "md5": "..."}}}. Runs as postgres,
with psycopg2 (python3-psycopg2, which the role installs for community.postgresql).
"""

from __future__ import annotations

import json
import sys

import psycopg2
from psycopg2 import sql

TABLES = """
    SELECT quote_ident(schemaname) || '.' || quote_ident(tablename)
    FROM pg_tables
    WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1
"""
# The same text form of a row in both clusters (same server version): hash each row, then the
# sorted row hashes, so the order rows happen to be stored in does not matter.
FINGERPRINT = (
    "SELECT count(*), md5(coalesce(string_agg(r, ',' ORDER BY r), '')) "
    "FROM (SELECT md5(t::text) AS r FROM {} AS t) AS rows"
)


def fingerprint(cursor) -> dict:
    cursor.execute(TABLES)
    tables = [name for (name,) in cursor.fetchall()]
    result = {}
    for name in tables:
        cursor.execute(sql.SQL(FINGERPRINT).format(sql.SQL(name)))
        rows, digest = cursor.fetchone()
        result[name] = {"rows": rows, "md5": digest}
    return result


def connect(**kwargs):
    """A connection whose transactions are the statements' own BEGIN and COMMIT."""
    connection = psycopg2.connect(**kwargs)
    connection.autocommit = True
    return connection


def live(database: str, restore_point: str) -> dict:
    holder = connect(dbname=database)
    reader = connect(dbname=database)
    try:
        with holder.cursor() as cursor:
            cursor.execute(TABLES)
            tables = [name for (name,) in cursor.fetchall()]
            # No query before the lock: the transaction's snapshot is taken by its first query,
            # so it comes after every write to these tables has committed, and none can start
            # until the restore point is in the WAL.
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            # Writers wait at most this long behind the drill; a drill that cannot get the lock
            # in time fails instead of stalling the app.
            cursor.execute("SET LOCAL lock_timeout = '10s'")
            if tables:
                cursor.execute(
                    sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
                        sql.SQL(", ").join(sql.SQL(name) for name in tables)
                    )
                )
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot,) = cursor.fetchone()
            cursor.execute("SELECT pg_create_restore_point(%s)", (restore_point,))
            with reader.cursor() as read:
                read.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                read.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            cursor.execute("COMMIT")
        with reader.cursor() as read:
            tables = fingerprint(read)
            read.execute("COMMIT")
        return tables
    finally:
        holder.close()
        reader.close()


def scratch(database: str, port: str, socket_dir: str) -> dict:
    connection = connect(dbname=database, port=port, host=socket_dir)
    try:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tables = fingerprint(cursor)
            cursor.execute("COMMIT")
        return tables
    finally:
        connection.close()


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "live":
        tables = live(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "scratch":
        tables = scratch(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({"tables": tables}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
