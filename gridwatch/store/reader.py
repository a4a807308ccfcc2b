"""Grafana's read-only database role (DESIGN.md §9).

Grafana runs whatever SQL a dashboard editor (or a crafted URL variable) gives it, so it logs in
as a role that may only SELECT from the relations the dashboards read: not a superuser, no
member of the roles that run programs or read files on the server, no CREATE anywhere, a
statement timeout so that no query holds the database, and read-only transactions by default.
``grant_reader`` makes it so, idempotently; running it again also rotates the password and
takes back anything granted since.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DEFAULT_READER = "grafana_reader"

# Every relation a dashboard panel, variable or annotation reads; nothing else is granted.
DASHBOARD_RELATIONS: tuple[str, ...] = (
    "alerts",
    "case_audit",
    "case_events",
    "cases",
    "deadletters",
    "detections",
    "device_status",
    "false_alarms",
    "incidents",
    "incidents_current",
    "outbox",
    "outbox_deadletters",
    "readings",
    "readings_1m",
)

STATEMENT_TIMEOUT = "30s"
CONNECTION_LIMIT = 20
_ATTRIBUTES = (
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
    f" CONNECTION LIMIT {CONNECTION_LIMIT}"
)


def grant_reader(conn: psycopg.Connection, user: str, password: str) -> None:
    """Create or reset the read-only role ``user``; the schema must exist. Commits."""
    role = sql.Identifier(user)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.reader'))")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        conn.execute(
            sql.SQL("{} {} WITH {} PASSWORD {}").format(
                verb, role, sql.SQL(_ATTRIBUTES), sql.Literal(password)
            )
        )
        for setting, value in (
            ("statement_timeout", STATEMENT_TIMEOUT),
            ("idle_in_transaction_session_timeout", STATEMENT_TIMEOUT),
            ("default_transaction_read_only", "on"),
            # Backslashes stay literal inside '...', so a doubled quote always closes a value.
            ("standard_conforming_strings", "on"),
        ):
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    role, sql.Identifier(setting), sql.Literal(value)
                )
            )
        # No membership at all: pg_execute_server_program, pg_read_server_files and the like
        # reach the server's programs and files (COPY ... TO PROGRAM).
        granted = conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
            (user,),
        ).fetchall()
        for (member_of,) in granted:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(member_of), role))
        # Before PostgreSQL 15 every role may create objects in schema public.
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(
            sql.SQL(
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}; "
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}"
            ).format(role, role)
        )
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, DASHBOARD_RELATIONS)), role
            )
        )
    log.info("read-only role %s may select from %d relations", user, len(DASHBOARD_RELATIONS))
