"""The console's doors on a real server and database: nothing without a session, CSRF
refused, viewers refused, login throttled, passwords never in a log or a table in clear."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from alerts.closed_loop import ClosedLoop, case_id_of
from alerts.console.accounts import AccountError, Role, add_operator
from gridwatch.events import Level
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from tests.integration.console_stack import (
    OFFICER,
    OFFICER_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    RunningConsole,
    add_operators,
    running_console,
)
from tests.integration.test_closed_loop import Clock, alert

CASE = case_id_of(alert(Level.RED))
PAGES = ("/", "/broadcasts", "/cases", f"/cases/{CASE}", "/silences", "/events")
ACTIONS = (
    f"/broadcasts/{CASE}/approve",
    f"/broadcasts/{CASE}/reject",
    "/silences",
    "/logout",
)


@pytest.fixture(scope="module")
def module_db(database_url: str) -> Iterator[str]:
    """One database for the module, with its two operators (hashing them takes a while)."""
    name = f"t_console_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    add_operators(url)
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(module_db: str, tiny_site: Site) -> str:
    """A red case whose broadcast waits for approval, and nothing else the tests change."""
    with psycopg.connect(module_db) as conn:
        conn.execute("TRUNCATE cases, case_audit, outbox, silences, console_sessions")
        with conn.transaction():
            ClosedLoop(tiny_site, Clock()).on_alert(conn, alert(Level.RED))
    return module_db


@pytest.fixture
def served(db: str, tiny_site: Site, tmp_path: Path) -> Iterator[RunningConsole]:
    with running_console(tiny_site, db, tmp_path) as running:
        yield running


def broadcast_state(db: str) -> str:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT broadcast FROM cases WHERE case_id = %s", (CASE,)).fetchone()
    assert row is not None
    return str(row[0])


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return found.group(1)


def client() -> aiohttp.ClientSession:
    """A browser-like client: it keeps cookies, from an IP address too."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(
    http: aiohttp.ClientSession, base: str, name: str, password: str
) -> aiohttp.ClientResponse:
    async with http.get(f"{base}/login") as page:
        token = field(await page.text(), "csrf")
    form = {"csrf": token, "name": name, "password": password, "next": "/"}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def csrf_of(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/silences") as page:
        return field(await page.text(), "csrf")


def test_no_page_and_no_action_without_a_session(served: RunningConsole) -> None:
    async def body() -> None:
        async with client() as http:
            for path in PAGES:
                async with http.get(served.url + path, allow_redirects=False) as resp:
                    assert resp.status == 303, path
                    assert resp.headers["Location"].startswith("/login?next=")
            for path in ACTIONS:
                form = {"csrf": "x", "reason": "no", "sent": "2026-07-01T08:00:00+00:00"}
                async with http.post(served.url + path, data=form) as resp:
                    assert resp.status == 401, path
            # A forged cookie is no session either.
            http.cookie_jar.update_cookies({"gw_session": "forged"})
            async with http.get(served.url + "/cases", allow_redirects=False) as resp:
                assert resp.status == 303

    asyncio.run(body())
    assert broadcast_state(served.database_url) == "pending_approval"


def test_forms_without_the_sessions_csrf_token_are_refused(served: RunningConsole) -> None:
    async def body() -> None:
        async with client() as http:
            async with http.get(f"{served.url}/login") as page:
                await page.read()
            form = {"name": OFFICER, "password": OFFICER_PASSWORD, "csrf": "guessed"}
            async with http.post(f"{served.url}/login", data=form) as resp:
                assert resp.status == 403  # the login form's own token
            assert (await log_in(http, served.url, OFFICER, OFFICER_PASSWORD)).status == 303
            async with http.get(f"{served.url}/broadcasts") as page:
                html = await page.text()
            good = {k: field(html, k) for k in ("csrf", "sent", "digest")}
            url = f"{served.url}/broadcasts/{CASE}/approve"
            missing = {k: v for k, v in good.items() if k != "csrf"}
            for forged in ({**good, "csrf": "wrong"}, missing):
                async with http.post(url, data=forged, allow_redirects=False) as resp:
                    assert resp.status == 403
            assert broadcast_state(served.database_url) == "pending_approval"
            async with http.post(url, data=good, allow_redirects=False) as resp:
                assert resp.status == 303

    asyncio.run(body())
    assert broadcast_state(served.database_url) == "sent"
    with psycopg.connect(served.database_url) as conn:
        actor = conn.execute(
            "SELECT actor FROM case_audit WHERE case_id = %s AND action = 'approve_broadcast'",
            (CASE,),
        ).fetchone()
    assert actor == (OFFICER,)


def test_a_viewer_sees_but_may_not_approve_reject_or_silence(served: RunningConsole) -> None:
    async def body() -> None:
        async with client() as http:
            assert (await log_in(http, served.url, VIEWER, VIEWER_PASSWORD)).status == 303
            async with http.get(f"{served.url}/broadcasts") as page:
                html = await page.text()
            assert '<pre class="cap">' in html and "/approve" not in html
            csrf = field(html, "csrf")
            sent = "2026-07-01T08:00:00+00:00"
            attempts = {
                f"/broadcasts/{CASE}/approve": {"csrf": csrf, "sent": sent, "digest": "x"},
                f"/broadcasts/{CASE}/reject": {"csrf": csrf, "reason": "not a fire"},
                "/silences": {
                    "csrf": csrf,
                    "matchers": "kind=flood",
                    "comment": "c",
                    "minutes": "5",
                },  # fmt: skip
            }
            for path, form in attempts.items():
                async with http.post(served.url + path, data=form) as resp:
                    assert resp.status == 403, path

    asyncio.run(body())
    assert broadcast_state(served.database_url) == "pending_approval"
    with psycopg.connect(served.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM silences").fetchone() == (0,)


def test_an_approval_of_text_that_changed_since_it_was_read_is_refused(
    served: RunningConsole,
) -> None:
    async def body() -> None:
        async with client() as http:
            await log_in(http, served.url, OFFICER, OFFICER_PASSWORD)
            async with http.get(f"{served.url}/broadcasts") as page:
                html = await page.text()
            form = {k: field(html, k) for k in ("csrf", "sent", "digest")}
            with psycopg.connect(served.database_url) as conn:
                conn.execute(
                    "UPDATE cases SET alert = jsonb_set(alert, '{reasons}', '[\"改过的理由\"]')"
                )
            url = f"{served.url}/broadcasts/{CASE}/approve"
            async with http.post(url, data=form, allow_redirects=False) as resp:
                assert resp.status == 409

    asyncio.run(body())
    assert broadcast_state(served.database_url) == "pending_approval"


def test_login_is_rate_limited(served: RunningConsole) -> None:
    async def body() -> None:
        async with client() as http:
            for _ in range(5):
                assert (await log_in(http, served.url, OFFICER, "wrong password")).status == 401
            throttled = await log_in(http, served.url, OFFICER, OFFICER_PASSWORD)
            assert throttled.status == 429 and int(throttled.headers["Retry-After"]) > 0
            # Another name from the same address is throttled too: the address is a key.
            assert (await log_in(http, served.url, VIEWER, VIEWER_PASSWORD)).status == 429

    asyncio.run(body())
    with psycopg.connect(served.database_url) as conn:
        failed = conn.execute(
            "SELECT count(*) FROM operator_audit WHERE action = 'login_failed'"
        ).fetchone()
    assert failed == (5,)  # the throttled attempts never reached a password check


def test_behind_tls_the_cookies_are_secure_httponly_and_samesite(
    db: str, tiny_site: Site, tmp_path: Path
) -> None:
    async def body(url: str) -> None:
        # The console is reached over https through a proxy: cookies are Secure, so this
        # plain-HTTP client hands them back by hand.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.get(f"{url}/login") as page:
                token = field(await page.text(), "csrf")
                login_cookie = page.headers["Set-Cookie"]
            form = {"csrf": token, "name": VIEWER, "password": VIEWER_PASSWORD}
            headers = {"Cookie": f"gw_login_csrf={token}"}
            async with http.post(
                f"{url}/login", data=form, headers=headers, allow_redirects=False
            ) as resp:
                assert resp.status == 303
                cookie = next(v for v in resp.headers.getall("Set-Cookie") if "gw_session=" in v)
        for flag in ("HttpOnly", "Secure"):
            assert flag in cookie and flag in login_cookie
        assert "SameSite=Lax" in cookie and "SameSite=Strict" in login_cookie

    with running_console(tiny_site, db, tmp_path, public_url="https://console.example") as served:
        asyncio.run(body(served.url))


def test_passwords_are_never_logged_nor_stored_in_clear(
    served: RunningConsole, caplog: pytest.LogCaptureFixture
) -> None:
    new_password = "a fresh password 8d1f"  # noqa: S105 - a test account's
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": served.database_url,
           "GRIDWATCH_LOG_LEVEL": "DEBUG"}  # fmt: skip
    added = subprocess.run(
        [sys.executable, "-m", "gridwatch", "console", "add-user", "wang", "--role", "viewer"],
        input=new_password + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert new_password not in added.stdout + added.stderr
    with psycopg.connect(served.database_url) as conn, pytest.raises(AccountError, match="12"):
        add_operator(conn, "zhao", Role.VIEWER, "short")

    async def body() -> None:
        async with client() as http:
            assert (await log_in(http, served.url, "wang", "not it at all")).status == 401
            assert (await log_in(http, served.url, "wang", new_password)).status == 303

    with caplog.at_level(logging.DEBUG):
        asyncio.run(body())
    assert "login failed for 'wang'" in caplog.text
    for secret in (new_password, OFFICER_PASSWORD, "not it at all"):
        assert secret not in caplog.text
    with psycopg.connect(served.database_url) as conn:
        dump = " ".join(
            str(r[0])
            for table in ("operators", "console_sessions", "operator_audit")
            for r in conn.execute(f"SELECT row_to_json(t)::text FROM {table} t").fetchall()  # noqa: S608
        )
        hashes = conn.execute("SELECT password_hash FROM operators").fetchall()
    assert all(h.startswith("$argon2id$") for (h,) in hashes) and len(hashes) >= 3
    for secret in (new_password, OFFICER_PASSWORD, VIEWER_PASSWORD, "not it at all"):
        assert secret not in dump


def test_a_rejection_keeps_the_broadcast_off_air_with_its_reason(served: RunningConsole) -> None:
    async def body() -> None:
        async with client() as http:
            await log_in(http, served.url, OFFICER, OFFICER_PASSWORD)
            url = f"{served.url}/broadcasts/{CASE}/reject"
            csrf = await csrf_of(http, served.url)
            async with http.post(url, data={"csrf": csrf, "reason": " "}) as resp:
                assert resp.status == 409  # a rejection needs its reason
            form = {"csrf": csrf, "reason": "水位计故障，现场无积水"}
            async with http.post(url, data=form, allow_redirects=False) as resp:
                assert resp.status == 303

    asyncio.run(body())
    assert broadcast_state(served.database_url) == "rejected"
    with psycopg.connect(served.database_url) as conn:
        entry = conn.execute(
            "SELECT actor, note FROM case_audit WHERE action = 'reject_broadcast'"
        ).fetchall()
        queued = conn.execute("SELECT count(*) FROM outbox WHERE sink = 'broadcast'").fetchone()
    assert entry == [(OFFICER, "水位计故障，现场无积水")] and queued == (0,)
