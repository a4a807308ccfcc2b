"""The console's aiohttp application: sessions, CSRF, roles, language and the login door.

Every path but ``/login``, ``/lang/…`` and ``/static/…`` needs a session; every POST needs
that session's CSRF token (the login form a double-submit token of its own); what changes
anything needs a duty officer (``acting``). Database work runs in a thread on a connection of
its own, committed when it returns.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
import psycopg
from aiohttp import web

from alerts.closed_loop import ClosedLoop
from alerts.console import i18n
from alerts.console.accounts import (
    SESSION_LIFETIME,
    Session,
    authenticate,
    close_session,
    csrf_ok,
    find_session,
    open_session,
    record,
)
from alerts.console.ratelimit import FailureLimit
from gridwatch.events import utcnow
from gridwatch.site import Site

log = logging.getLogger(__name__)

T = TypeVar("T")
SESSION_COOKIE = "gw_session"
LOGIN_COOKIE = "gw_login_csrf"
LANG_COOKIE = "gw_lang"
DB_THREADS = 8
PUBLIC_PREFIXES = ("/login", "/lang/", "/static/")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    site: Site
    database_url: str
    evidence_dir: Path
    public_url: str | None = None  # behind TLS (https://…) the cookies are Secure
    clock: Callable[[], datetime] = utcnow
    logins: FailureLimit = field(default_factory=FailureLimit)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    loop: ClosedLoop = field(init=False)
    # Threads of its own: in the demo the roles share the process, and a page must not wait
    # behind their database and Kafka calls.
    _threads: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.loop = ClosedLoop(self.site, self.clock)
        self._threads = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="console-db")

    async def db(self, work: Callable[..., T], *args: Any) -> T:
        call = functools.partial(self._in_transaction, work, *args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _in_transaction(self, work: Callable[..., T], *args: Any) -> T:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return work(conn, *args)

    def local_time(self, when: datetime | None) -> str:
        if when is None:
            return ""
        zone = ZoneInfo(self.site.street.timezone)
        return when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


CONSOLE = web.AppKey("console", Console)
LANG = web.RequestKey("lang", str)
SESSION = web.RequestKey("session", Session)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def acting(request: web.Request) -> Session:
    """The session of a duty officer; a viewer is refused (403) and the refusal logged."""
    session = session_of(request)
    if not session.operator.may_act:
        log.warning("operator %s (viewer) refused %s", session.operator.name, request.path)
        raise render_error(request, 403, i18n.words(request[LANG])["forbidden"])
    return session


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    context = {**template_context(request), **ctx}
    return aiohttp_jinja2.render_template(template, request, context, status=status)


ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


def render_error(request: web.Request, status: int, message: str) -> web.HTTPException:
    page = render(request, "error.html", status=status, message=message)
    return ERRORS[status](text=page.text, content_type="text/html")


def template_context(request: web.Request) -> dict[str, Any]:
    console, lang = console_of(request), request[LANG]
    session: Session | None = request.get(SESSION)
    return {
        "t": i18n.words(lang),
        "lang": lang,
        "operator": session.operator if session else None,
        "csrf": session.csrf_token if session else "",
        "level_text": lambda v: i18n.level_text(lang, v),
        "kind_text": lambda v: i18n.kind_text(lang, v),
        "state_text": lambda v: i18n.state_text(lang, v),
        "alert_state_text": lambda v: i18n.alert_state_text(lang, v),
        "when": console.local_time,
        "path": request.path_qs,
    }


def see_other(location: str) -> web.Response:
    """A redirect that can carry cookies (a raised ``HTTPSeeOther`` cannot)."""
    return web.Response(status=303, headers={"Location": location})


def _local_next(value: str | None) -> str:
    """Only a path of this site may follow the login (no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    console = console_of(request)
    request[LANG] = i18n.language(request.cookies.get(LANG_COOKIE))
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await console.db(find_session, token, console.clock()) if token else None
    if session is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
        raise web.HTTPUnauthorized(text="log in first")
    request[SESSION] = session
    if request.method not in ("GET", "HEAD"):
        form = await request.post()
        submitted = form.get("csrf")
        if not csrf_ok(session, submitted if isinstance(submitted, str) else None):
            log.warning("operator %s: %s refused, CSRF token wrong", session.operator.name,
                        request.path)  # fmt: skip
            raise web.HTTPForbidden(text="CSRF token missing or wrong")
    return await handler(request)


async def _headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)


def _secure(request: web.Request) -> bool:
    public = console_of(request).public_url
    return request.secure or bool(public and public.startswith("https://"))


async def login_page(request: web.Request) -> web.Response:
    # Kept while it lasts: another tab, or the favicon fetch that also lands here, must not
    # invalidate the form already shown.
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    page = render(request, "login.html", login_csrf=token, next=request.query.get("next", "/"))
    page.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(request))
    return page


async def login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    cookie, submitted = request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))
    if not cookie or not secrets.compare_digest(cookie, submitted):
        raise web.HTTPForbidden(text="CSRF token missing or wrong")
    keys = (f"name:{name}", f"addr:{request.remote}")
    words = i18n.words(request[LANG])
    wait = console.logins.retry_after(*keys)
    if wait > 0:
        log.warning("login for %r throttled for %.0f s", name, wait)
        page = render(request, "login.html", 429, login_csrf=cookie, next=form.get("next"),
                      error=words["login_throttled"])  # fmt: skip
        page.headers["Retry-After"] = str(int(wait) + 1)
        return page
    operator = await console.db(authenticate, name, password)
    if operator is None:
        console.logins.failed(*keys)
        log.warning("login failed for %r from %s", name, request.remote)
        await console.db(record, name, "login_failed", "", f"from {request.remote}")
        return render(request, "login.html", 401, login_csrf=cookie, next=form.get("next"),
                      error=words["login_failed"])  # fmt: skip

    def start(conn: psycopg.Connection) -> Session:
        record(conn, operator.name, "login", "", f"from {request.remote}")
        return open_session(conn, operator, console.clock())

    session = await console.db(start)
    console.logins.succeeded(keys[0])
    log.info("operator %s logged in (%s)", operator.name, operator.role)
    response = see_other(_local_next(str(form.get("next") or "/")))
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        httponly=True,
        samesite="Lax",  # a link from Grafana opens the console logged in; forms need CSRF
        secure=_secure(request),
        max_age=int(SESSION_LIFETIME.total_seconds()),
    )
    response.del_cookie(LOGIN_COOKIE)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    console, session = console_of(request), session_of(request)

    def end(conn: psycopg.Connection) -> None:
        close_session(conn, session.token)
        record(conn, session.operator.name, "logout")

    await console.db(end)
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE)
    return response


async def set_language(request: web.Request) -> web.StreamResponse:
    response = see_other(_local_next(request.query.get("next")))
    lang = i18n.language(request.match_info["lang"])
    response.set_cookie(LANG_COOKIE, lang, samesite="Lax", secure=_secure(request),
                        max_age=365 * 86400)  # fmt: skip
    return response


def digest(document: bytes) -> str:
    return hashlib.sha256(document).hexdigest()


def build_app(console: Console) -> web.Application:
    from alerts.console import pages

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONSOLE] = console
    package = files("alerts.console")
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(package.joinpath("templates"))),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    app.on_response_prepare.append(_headers)

    async def stopping(_app: web.Application) -> None:
        console.stopping.set()

    async def closed(_app: web.Application) -> None:
        console.close()

    app.on_shutdown.append(stopping)
    app.on_cleanup.append(closed)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang/{lang}", set_language)
    app.router.add_static("/static/", str(package.joinpath("static")))
    pages.add_routes(app)
    return app
