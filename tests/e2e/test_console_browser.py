"""The duty officer's console in a real browser (Debian's headless Chromium, driven by
Playwright) against the real services: the alert engine, the closed loop and the outbox relay
on Kafka and PostgreSQL, and the simulated broadcast platform. A red alert arrives live, its
broadcast is approved and reaches the platform as the CAP text the officer read; a silence is
created and expired; a camera detection is marked as a false alarm with its snapshot; a
viewer cannot approve. Screenshots go to ``GRIDWATCH_ARTIFACTS`` (or
the test's temporary directory)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest
from lxml import etree
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
from psycopg import sql
from psycopg.conninfo import make_conninfo

from alerts.callbacks import ROUTES, CallbackServer
from alerts.roles import run_closed_loop, run_engine, run_relay
from alerts.sinks import BROADCAST, DISPATCH
from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    SourceType,
)
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from gridwatch.xml_signature import load_signer, make_throwaway
from simulators.broadcast_receiver import BroadcastReceiver
from simulators.dispatch_desk import DeskPolicy, DispatchDesk
from tests.conftest import GROUPS
from tests.integration.console_stack import (
    OFFICER,
    OFFICER_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    RunningConsole,
    add_operators,
    running_console,
)
from tests.integration.sensor_pipeline import Writer, produce, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )
# The closed network refuses what Chromium would fetch on its own; none of it is needed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GRID = "52019900300101"
RUN = uuid.uuid4().hex[:6]
CAP_NS = "{urn:oasis:names:tc:emergency:cap:1.2}"


@dataclass
class Stack:
    console: RunningConsole
    receiver: BroadcastReceiver
    bootstrap: str
    artifacts: Path
    evidence: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("GRIDWATCH_ARTIFACTS")
    if configured:
        path = Path(configured) / "console"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def stack(
    tiny_site: Site,
    database_url: str,
    kafka_bootstrap: str,
    artifacts: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    name = f"t_browser_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    add_operators(url)
    work = tmp_path_factory.mktemp("console-stack")
    loop = BackgroundLoop()
    producer = kafka.producer(kafka_bootstrap)
    keys = {DISPATCH: secrets.token_bytes(32), BROADCAST: secrets.token_bytes(32)}
    signer = load_signer(*make_throwaway(work / "cap", "console test CAP"))
    stop = asyncio.Event()

    async def doors() -> tuple[CallbackServer, DispatchDesk, BroadcastReceiver, Site]:
        callbacks = CallbackServer(keys, producer)
        callback_url = await callbacks.start("127.0.0.1")
        # The desk never accepts floods: the cases stay open while the test works on them.
        desk = DispatchDesk(keys[DISPATCH], f"{callback_url}{ROUTES[DISPATCH]}",
                            policy=DeskPolicy(ignore_kinds=("flood",)))  # fmt: skip
        receiver = BroadcastReceiver(
            keys[BROADCAST], f"{callback_url}{ROUTES[BROADCAST]}", certificate=signer.certificate
        )
        policy = tiny_site.policy
        policy = policy.model_copy(
            update={
                "dispatch": policy.dispatch.model_copy(update={"url": await desk.start()}),
                "broadcast": policy.broadcast.model_copy(update={"url": await receiver.start()}),
            }
        )
        return callbacks, desk, receiver, tiny_site.model_copy(update={"policy": policy})

    callbacks, desk, receiver, site = loop.run(doors())
    writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
    ready = [asyncio.Event(), asyncio.Event()]
    roles = [
        loop.spawn(run_engine(site, kafka_bootstrap, producer, stop, database_url=url,
                              group_id=f"t-console-alerts-{RUN}", groups=GROUPS,
                              ready=ready[0])),
        loop.spawn(run_closed_loop(site, url, kafka_bootstrap, producer, stop,
                                   group_id=f"t-console-cases-{RUN}", groups=GROUPS,
                                   ready=ready[1])),
        loop.spawn(run_relay(site, url, producer, keys, stop, cap_signer=signer)),
    ]  # fmt: skip
    for event in ready:
        loop.run(asyncio.wait_for(event.wait(), 60))
    try:
        evidence = work / "evidence"
        with running_console(site, url, evidence, loop=loop) as console:
            yield Stack(console, receiver, kafka_bootstrap, artifacts, evidence)
        assert not any(role.done() for role in roles), "a role stopped"
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(_drop, database_url, name)
            cleanup.callback(producer.close)
            cleanup.callback(loop.close)
            for server in (callbacks, desk, receiver):
                cleanup.callback(loop.run, server.stop())
            cleanup.callback(writer.close)
            for role in roles:
                cleanup.callback(role.result, 30)


def _drop(database_url: str, name: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium for the module, on a fresh profile."""
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            locale="zh-CN",
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(20_000)
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser: BrowserContext) -> Page:
    """The one tab the tests share (closing a tab mid-navigation can hang Playwright)."""
    return browser.pages[0] if browser.pages else browser.new_page()


def red_incident() -> Incident:
    now = datetime.now(UTC)
    return Incident(
        kind=IncidentKind.FLOOD,
        location=Point(lon=106.605, lat=26.605),
        community_code=GRID[:12],
        grid_code=GRID,
        micro_grid_code=None,
        level=Level.RED,
        confidence=0.95,
        sources=(SourceRef(type=SourceType.SENSOR, id="WL-1"),),
        detection_ids=(),
        first_seen=now,
        last_seen=now,
    )


def send(stack: Stack, incident: Incident) -> str:
    """Put a red incident on its topic, as the streams would; the id of the case it opens."""
    produce(stack.bootstrap, [(topics.INCIDENTS, str(incident.id).encode(), incident.to_bytes())])
    found = wait_for(stack.console.database_url, "SELECT case_id FROM cases WHERE incident_id = %s",
                     (incident.id,), bool, 30)  # fmt: skip
    assert found, f"no case opened for incident {incident.id}"
    return str(found[0][0])


def log_in(page: Page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{base}/", wait_until="commit")


def log_out(page: Page) -> None:
    page.click("header form[action='/logout'] button")
    page.wait_for_url("**/login")


def comparable(cap: bytes) -> bytes:
    """A CAP document without what approval itself sets: its signature, and its sent and
    expiry times wherever they appear (the description states the time too)."""
    root = etree.fromstring(cap)
    times = [root.findtext(f"{CAP_NS}sent")]
    times += [e.text for e in root.iter(f"{CAP_NS}expires")]
    for element in list(root.iter()):
        if etree.QName(element).localname == "Signature":
            element.getparent().remove(element)
    text = etree.tostring(root, method="c14n")
    for when in filter(None, times):
        text = text.replace(when.encode(), b"<time>")
    return text


def test_a_red_alert_arrives_live_and_its_approved_broadcast_reaches_the_platform(
    stack: Stack, page: Page
) -> None:
    base = stack.console.url
    log_in(page, base, OFFICER, OFFICER_PASSWORD)
    expect(page.locator("#live")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    incident = red_incident()
    case_id = send(stack, incident)
    red = page.locator(f"#alerts li.level-red:has(a[href='/incidents/{incident.id}'])")
    expect(red).to_be_visible()
    assert page.evaluate("window.notReloaded") is True  # pushed by the server, not reloaded
    expect(red.locator(".badge")).to_have_text("红")
    expect(page.locator("#waiting")).not_to_have_text("0")
    page.screenshot(path=str(stack.artifacts / "alerts.png"))

    page.click(".banner a")
    card = page.locator(f"#broadcast-{case_id}")
    expect(card.locator("pre.cap")).to_contain_text("<msgType>Alert</msgType>")
    previewed = card.locator("pre.cap").inner_text().encode()
    page.screenshot(path=str(stack.artifacts / "broadcasts.png"), full_page=True)
    card.locator("button.approve").click()
    page.wait_for_url(f"{base}/cases/{case_id}")
    expect(page.locator("tr.action-approve_broadcast")).to_contain_text(OFFICER)

    key = f"{case_id}.alert:cap"
    deadline = time.monotonic() + 20
    while key not in stack.receiver.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert key in stack.receiver.received, sorted(stack.receiver.received)
    on_air = stack.receiver.received[key]
    assert comparable(on_air) == comparable(previewed)
    assert etree.fromstring(on_air).findtext(f"{CAP_NS}info/{CAP_NS}severity") == "Extreme"
    page.reload()
    expect(page.locator("#case-broadcast")).not_to_have_text("pending_approval")
    page.screenshot(path=str(stack.artifacts / "case.png"), full_page=True)
    log_out(page)


def test_a_viewer_sees_the_waiting_broadcast_but_cannot_approve_it(
    stack: Stack, page: Page
) -> None:
    base = stack.console.url
    case_id = send(stack, red_incident())
    page.goto(f"{base}/lang/en?next=/")
    log_in(page, base, VIEWER, VIEWER_PASSWORD)
    page.goto(f"{base}/broadcasts")
    card = page.locator(f"#broadcast-{case_id}")
    expect(card.locator("pre.cap")).to_contain_text("<severity>Extreme</severity>")
    expect(card.locator("button.approve")).to_have_count(0)
    expect(card).to_contain_text("Only a duty officer may do this")
    page.screenshot(path=str(stack.artifacts / "viewer.png"), full_page=True)
    # Even a hand-made request with the viewer's own CSRF token is refused.
    csrf = page.locator("header input[name=csrf]").get_attribute("value")
    refused = page.request.post(
        f"{base}/broadcasts/{case_id}/approve",
        form={"csrf": csrf or "", "sent": datetime.now(UTC).isoformat(), "digest": "x"},
        max_redirects=0,
    )
    assert refused.status == 403
    with psycopg.connect(stack.console.database_url) as conn:
        state = conn.execute(
            "SELECT broadcast FROM cases WHERE case_id = %s", (case_id,)
        ).fetchone()
    assert state == ("pending_approval",)
    log_out(page)


def test_a_silence_is_created_and_expired_under_the_officers_name(stack: Stack, page: Page) -> None:
    base = stack.console.url
    log_in(page, base, OFFICER, OFFICER_PASSWORD)
    page.goto(f"{base}/silences")
    page.fill("textarea[name=matchers]", f"grid_code={GRID}\nkind=flood")
    page.fill("#new-silence input[name=comment]", "泵站检修，水位计读数失真")
    page.fill("#new-silence input[name=minutes]", "30")
    page.click("#new-silence button[type=submit]")
    row = page.locator("table.silences tbody tr", has_text="泵站检修")
    expect(row).to_contain_text(OFFICER)
    expect(row).to_contain_text(f"grid_code={GRID}")
    page.screenshot(path=str(stack.artifacts / "silences.png"), full_page=True)
    db = stack.console.database_url
    (silence_id,) = wait_for(db, "SELECT id FROM silences", (), bool, 5)[0]
    row.locator("button.expire").click()
    expect(page.locator("table.silences tbody")).not_to_contain_text("泵站检修")
    with psycopg.connect(db) as conn:
        ended = conn.execute(
            "SELECT ends_at <= now() FROM silences WHERE id = %s", (silence_id,)
        ).fetchone()
        audit = conn.execute(
            "SELECT actor, action FROM operator_audit WHERE subject = %s ORDER BY id",
            (str(silence_id),),
        ).fetchall()
    assert ended == (True,)
    assert audit == [(OFFICER, "silence"), (OFFICER, "expire_silence")]
    log_out(page)


def camera_detection(evidence: Path) -> Detection:
    """A fire detection of a camera, with a snapshot (seeded noise) in the evidence store."""
    rng = np.random.default_rng(13)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    detection = Detection(
        kind=DetectionKind.FIRE,
        source=SourceRef(type=SourceType.CAMERA, id="CAM-1"),
        ts=datetime.now(UTC),
        confidence=0.81,
        bbox=(10, 10, 60, 50),
    )
    path = evidence / "CAM-1" / f"{detection.id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg.tobytes())
    return detection.model_copy(update={"snapshot": str(path)})


def test_a_camera_detection_is_marked_as_a_false_alarm_with_its_snapshot(
    stack: Stack, page: Page
) -> None:
    detection = camera_detection(stack.evidence)
    produce(stack.bootstrap, [(topics.DETECTIONS, b"CAM-1", detection.to_bytes())])
    db = stack.console.database_url
    assert wait_for(db, "SELECT 1 FROM detections WHERE id = %s", (detection.id,), bool, 30)
    log_in(page, stack.console.url, OFFICER, OFFICER_PASSWORD)
    page.goto(f"{stack.console.url}/false-alarms")
    row = page.locator(f"#detection-{detection.id}")
    snapshot = row.locator("img.snapshot")
    expect(snapshot).to_be_visible()
    assert snapshot.evaluate("img => img.complete && img.naturalWidth") == 160
    row.locator("input[name=reason]").fill("夕阳照在玻璃幕墙上，不是明火")
    row.locator("form.mark button").click()
    marked = page.locator(f"table.marked tr[data-detection='{detection.id}']")
    expect(marked).to_contain_text(OFFICER)
    expect(page.locator(f"#detection-{detection.id}")).to_contain_text(OFFICER)
    page.screenshot(path=str(stack.artifacts / "false-alarms.png"), full_page=True)
    with psycopg.connect(db) as conn:
        stored = conn.execute(
            "SELECT f.operator, f.reason, s.sha256 FROM false_alarms f"
            " JOIN false_alarm_snapshots s USING (detection_id) WHERE detection_id = %s",
            (detection.id,),
        ).fetchone()
        audit = conn.execute(
            "SELECT actor FROM operator_audit WHERE action = 'false_alarm' AND subject = %s",
            (str(detection.id),),
        ).fetchall()
    assert detection.snapshot is not None
    sha = hashlib.sha256(Path(detection.snapshot).read_bytes()).hexdigest()
    assert stored == (OFFICER, "夕阳照在玻璃幕墙上，不是明火", sha)
    assert audit == [(OFFICER,)]
    log_out(page)
