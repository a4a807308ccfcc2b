"""The console's pages and actions: live alerts (server-sent events), broadcasts waiting for
approval, cases with their timeline, silences and the evidence snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp_jinja2
import psycopg
from aiohttp import web
from pydantic import ValidationError

from alerts.cases import IllegalTransition
from alerts.console import i18n, queries
from alerts.console.accounts import find_session, record
from alerts.console.web import (
    LANG,
    acting,
    console_of,
    digest,
    render,
    render_error,
    session_of,
    template_context,
)
from alerts.silences import LABELS, Silence, add_silence, current_silences, expire_silence
from gridwatch.store.feedback import FalseAlarm, false_alarms, mark_false_alarm, snapshot_bytes

log = logging.getLogger(__name__)

EVENT_POLL_S = 1.0
KEEPALIVE_S = 15.0
SESSION_RECHECK_S = 30.0  # a stream ends soon after its session is logged out or expires


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", alerts_page)
    app.router.add_get("/events", events)
    app.router.add_get("/broadcasts", broadcasts_page)
    app.router.add_post("/broadcasts/{case_id}/approve", approve)
    app.router.add_post("/broadcasts/{case_id}/reject", reject)
    app.router.add_get("/cases", cases_page)
    app.router.add_get("/cases/{case_id}", case_page)
    app.router.add_get("/incidents/{incident_id}", incident_page)
    app.router.add_get("/silences", silences_page)
    app.router.add_post("/silences", create_silence)
    app.router.add_post("/silences/{silence_id}/expire", expire)
    app.router.add_get("/false-alarms", false_alarms_page)
    app.router.add_post("/false-alarms", mark)
    app.router.add_get("/evidence/{detection_id}", evidence)


def _uuid(request: web.Request, name: str) -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError as err:
        raise render_error(request, 404, request.match_info[name]) from err


# -- live alerts ------------------------------------------------------------------------------


async def alerts_page(request: web.Request) -> web.Response:
    console = console_of(request)

    def read(conn: psycopg.Connection) -> tuple[list[queries.Row], int]:
        return queries.recent_alerts(conn), len(console.loop.pending_approvals(conn))

    alerts, waiting = await console.db(read)
    after = alerts[0]["stored_at"].isoformat() if alerts else ""
    return render(request, "alerts.html", alerts=alerts, waiting=waiting, after=after)


def _sse(event: str, data: str, event_id: str | None = None) -> bytes:
    lines = [f"id: {event_id}"] if event_id else []
    lines.append(f"event: {event}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


async def events(request: web.Request) -> web.StreamResponse:
    """New notifications as they are stored, and the count of broadcasts waiting; resumes
    after the last one the browser saw (``Last-Event-ID``, or the page's newest)."""
    console = console_of(request)
    start = request.headers.get("Last-Event-ID") or request.query.get("after") or ""
    try:
        after = datetime.fromisoformat(start) if start else datetime.fromtimestamp(0, UTC)
    except ValueError as err:
        raise web.HTTPBadRequest(text=f"not a time: {start!r}") from err
    if after.tzinfo is None:
        raise web.HTTPBadRequest(text="the time needs its offset")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    row_template = aiohttp_jinja2.get_env(request.app).get_template("_alert_row.html")
    context = template_context(request)
    waiting_sent = -1
    quiet = checked = 0.0
    session = session_of(request)

    def read(conn: psycopg.Connection) -> tuple[list[queries.Row], int]:
        return queries.alerts_since(conn, after), len(console.loop.pending_approvals(conn))

    with contextlib.suppress(ConnectionResetError):  # the browser left: nothing to do
        while not console.stopping.is_set():
            rows, waiting = await console.db(read)
            for row in rows:
                after = row["stored_at"]
                html = row_template.render({**context, "a": row})
                await response.write(_sse("alert", html, after.isoformat()))
            if waiting != waiting_sent:
                await response.write(_sse("waiting", str(waiting)))
                waiting_sent = waiting
            quiet = 0.0 if rows else quiet + EVENT_POLL_S
            if quiet >= KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            checked += EVENT_POLL_S
            if checked >= SESSION_RECHECK_S:
                checked = 0.0
                if await console.db(find_session, session.token, console.clock()) is None:
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(console.stopping.wait(), EVENT_POLL_S)
    return response


# -- broadcasts -------------------------------------------------------------------------------


async def broadcasts_page(request: web.Request) -> web.Response:
    console = console_of(request)
    sent = console.clock()

    def read(conn: psycopg.Connection) -> list[dict[str, object]]:
        out = []
        for case_id in console.loop.pending_approvals(conn):
            row = queries.case(conn, case_id)
            document = console.loop.broadcast_preview(conn, case_id, sent)
            out.append({**(row or {}), "cap": document.decode(), "digest": digest(document)})
        return out

    waiting = await console.db(read)
    return render(request, "broadcasts.html", waiting=waiting, sent=sent.isoformat())


async def approve(request: web.Request) -> web.StreamResponse:
    """Approve exactly the text the officer read: the document previewed at ``sent`` must be
    the one the case gives now, or the approval is refused and the page shows the new text."""
    console, session = console_of(request), acting(request)
    case_id = request.match_info["case_id"]
    form = await request.post()
    try:
        sent = datetime.fromisoformat(str(form.get("sent", "")))
    except ValueError as err:
        raise render_error(request, 400, "sent: not a time") from err

    def approve_read(conn: psycopg.Connection) -> bool:
        if digest(console.loop.broadcast_preview(conn, case_id, sent)) != form.get("digest"):
            return False
        console.loop.approve_broadcast(conn, case_id, session.operator.name)
        return True

    try:
        approved = await console.db(approve_read)
    except IllegalTransition as err:
        raise render_error(request, 409, str(err)) from err
    if not approved:
        raise render_error(request, 409, i18n.words(request[LANG])["text_changed"])
    log.info("case %s: broadcast approved by %s in the console", case_id, session.operator.name)
    raise web.HTTPSeeOther(f"/cases/{case_id}")


async def reject(request: web.Request) -> web.StreamResponse:
    console, session = console_of(request), acting(request)
    case_id = request.match_info["case_id"]
    form = await request.post()
    reason = str(form.get("reason", "")).strip()
    try:
        await console.db(console.loop.reject_broadcast, case_id, session.operator.name, reason)
    except IllegalTransition as err:
        raise render_error(request, 409, str(err)) from err
    raise web.HTTPSeeOther(f"/cases/{case_id}")


# -- cases ------------------------------------------------------------------------------------


async def cases_page(request: web.Request) -> web.Response:
    console = console_of(request)
    rows = await console.db(queries.cases)
    return render(request, "cases.html", cases=rows, now=console.clock())


async def case_page(request: web.Request) -> web.Response:
    console = console_of(request)
    case_id = request.match_info["case_id"]

    def read(conn: psycopg.Connection) -> tuple[queries.Row | None, list[queries.Row]]:
        return queries.case(conn, case_id), queries.timeline(conn, case_id)

    case, timeline = await console.db(read)
    if case is None:
        raise render_error(request, 404, case_id)
    return render(request, "case.html", case=case, timeline=timeline, now=console.clock())


async def incident_page(request: web.Request) -> web.StreamResponse:
    """Where the incident dashboard links: the incident's newest case."""
    console = console_of(request)
    incident_id = _uuid(request, "incident_id")
    found = await console.db(queries.cases_of_incident, incident_id)
    if not found:
        raise render_error(request, 404, f"{incident_id}")
    raise web.HTTPSeeOther(f"/cases/{found[0]['case_id']}")


# -- silences ---------------------------------------------------------------------------------


async def silences_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    console = console_of(request)
    silences = await console.db(current_silences, console.clock())
    return render(request, "silences.html", status, silences=silences, labels=LABELS, error=error)


def parse_matchers(text: str) -> dict[str, str]:
    """``label=value`` lines; a label the alerts do not carry would never match, so it is an
    error rather than a silence that silences nothing."""
    matchers: dict[str, str] = {}
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"{line!r}: expected label=value")
        if name not in LABELS:
            raise ValueError(f"{name!r}: not a label ({', '.join(LABELS)})")
        matchers[name] = value
    if not matchers:
        raise ValueError("a silence needs at least one matcher")
    return matchers


async def create_silence(request: web.Request) -> web.Response:
    console, session = console_of(request), acting(request)
    form = await request.post()
    now = console.clock()
    try:
        minutes = float(str(form.get("minutes", "")))
        if not 0 < minutes <= 7 * 24 * 60:
            raise ValueError("the duration must be between 1 minute and 7 days")
        silence = Silence(
            matchers=parse_matchers(str(form.get("matchers", ""))),
            starts_at=now,
            ends_at=now + timedelta(minutes=minutes),
            author=session.operator.name,
            comment=str(form.get("comment", "")).strip(),
        )
    except (ValueError, ValidationError) as err:
        return await silences_page(request, error=str(err), status=400)

    def save(conn: psycopg.Connection) -> None:
        add_silence(conn, silence)
        note = f"{silence.matchers} until {silence.ends_at.isoformat()}: {silence.comment}"
        record(conn, session.operator.name, "silence", str(silence.id), note)

    await console.db(save)
    raise web.HTTPSeeOther("/silences")


async def expire(request: web.Request) -> web.Response:
    console, session = console_of(request), acting(request)
    silence_id = _uuid(request, "silence_id")

    def end(conn: psycopg.Connection) -> bool:
        ended = expire_silence(conn, silence_id, console.clock())
        if ended:
            record(conn, session.operator.name, "expire_silence", str(silence_id))
        return ended

    if not await console.db(end):
        raise render_error(request, 404, str(silence_id))
    raise web.HTTPSeeOther("/silences")


# -- false alarms and their evidence ---------------------------------------------------------


async def false_alarms_page(
    request: web.Request, error: str = "", status: int = 200
) -> web.Response:
    console = console_of(request)

    def read(conn: psycopg.Connection) -> tuple[list[queries.Row], list[FalseAlarm]]:
        return queries.recent_detections(conn), false_alarms(conn, limit=50)

    detections, marked = await console.db(read)
    return render(request, "false_alarms.html", status, detections=detections, marked=marked,
                  error=error)  # fmt: skip


async def mark(request: web.Request) -> web.Response:
    console, session = console_of(request), acting(request)
    form = await request.post()
    reason = str(form.get("reason", "")).strip()
    case_id = str(form.get("case_id", "")).strip() or None
    if not reason:
        return await false_alarms_page(
            request, error=i18n.words(request[LANG])["reason"], status=400
        )
    try:
        await console.db(
            lambda conn: mark_false_alarm(
                conn,
                detection_id=str(form.get("detection_id", "")),
                operator=session.operator.name,
                reason=reason,
                case_id=case_id,
                evidence_dir=console.evidence_dir,
            )
        )
    except LookupError as err:
        raise render_error(request, 404, str(err)) from err
    raise web.HTTPSeeOther("/false-alarms")


async def evidence(request: web.Request) -> web.Response:
    """A detection's snapshot, read only from inside the evidence store (the path comes from
    a message, so it is never trusted to point anywhere else)."""
    console = console_of(request)
    detection_id = _uuid(request, "detection_id")
    path = await console.db(queries.snapshot_of, detection_id)
    image = await asyncio.to_thread(snapshot_bytes, path, console.evidence_dir)
    if image is None:
        raise render_error(request, 404, str(detection_id))
    kind = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
    return web.Response(body=image, content_type=kind)
