"""`gridwatch store grant-reader` on a real PostgreSQL: the role Grafana logs in as."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from gridwatch.cli import app


def grant(monkeypatch: pytest.MonkeyPatch, url: str, user: str, password: str) -> str:
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", url)
    monkeypatch.setenv("GRIDWATCH_READER_PASSWORD", password)
    result = CliRunner().invoke(app, ["store", "grant-reader", "--user", user])
    return f"{result.exit_code}: {result.output}"


def test_the_reader_is_created_idempotently_and_may_only_select(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = f"reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    for _ in range(2):  # a re-run, as at every deployment
        assert grant(monkeypatch, fresh_database_url, user, password).startswith("0:")
    with psycopg.connect(fresh_database_url) as owner:
        owner.execute(
            "INSERT INTO readings (ts, device_id, metric, value, unit, id, received_at)"
            " VALUES (now(), 'WL-1', 'water_level_m', 1.5, 'm', gen_random_uuid(), now())"
        )
    reader_url = make_conninfo(fresh_database_url, user=user, password=password)
    with psycopg.connect(reader_url, autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM readings").fetchone() == (1,)
        reader.execute("SET default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("DELETE FROM readings")
        with pytest.raises(errors.InsufficientPrivilege):
            reader.execute("COPY (SELECT 1) TO PROGRAM 'id'")


def test_a_superuser_reader_is_made_plain_again(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_database_url, autocommit=True) as owner:
        owner.execute(f"CREATE ROLE {user} LOGIN SUPERUSER")
        owner.execute(f"GRANT pg_execute_server_program TO {user}")
    assert grant(monkeypatch, fresh_database_url, user, uuid.uuid4().hex).startswith("0:")
    with psycopg.connect(fresh_database_url) as owner:
        row = owner.execute(
            "SELECT rolsuper, (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
            " FROM pg_roles r WHERE rolname = %s",
            (user,),
        ).fetchone()
    assert row == (False, 0)


@pytest.mark.parametrize("password", ["", "change-me-grafana-db", "short"])
def test_a_placeholder_or_short_password_is_refused(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    user = f"reader_{uuid.uuid4().hex[:8]}"
    outcome = grant(monkeypatch, fresh_database_url, user, password)
    assert outcome.startswith("2:") and "GRIDWATCH_READER_PASSWORD" in outcome
    with psycopg.connect(fresh_database_url) as owner:
        assert (
            owner.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None
        )
