"""Construction change in the live worker: a watchtower patrol takes one registered daily frame
per watched preset, reports a lasting change once, and an operator's acknowledgement (stored on
disk) becomes the preset's baseline. Registration falls back to ORB+RANSAC when ECC fails."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from typer.testing import CliRunner

from detectors.construction import ConstructionWatch
from gridwatch.cli import app
from gridwatch.events import Detection, DetectionKind, Point
from gridwatch.site import Zone
from gridwatch.site_cameras import ImageZone, Preset, Vision, Watchtower
from gridwatch.site_detectors import REAL_DAY_S, ConstructionChangeSettings, Detectors
from ingest.camera_construction import day_of
from ingest.camera_evidence import BaselineStore, EvidenceStore
from ingest.camera_source import Captured
from ingest.camera_worker import CameraWorker
from simulators.camera_ptz import SimulatedPtz
from simulators.camera_sites import SiteScenario, render_days

AT = Point(lon=106.65, lat=26.62)
DAY0 = datetime(2025, 4, 1, 10, tzinfo=UTC)
SIZE = (320, 180)


def _tower(site: tuple[float, float, float, float], day_s: float = REAL_DAY_S) -> Watchtower:
    x, y, w, h = site
    ring = ((x - 0.05, y - 0.05), (x + w + 0.05, y - 0.05), (x + w + 0.05, y + h + 0.05))
    ring += ((x - 0.05, y + h + 0.05),)
    return Watchtower(
        id="WT-C",
        name="c",
        location=AT,
        height_m=30.0,
        visible_url="",
        presets=(
            Preset(id=0, pan_deg=0.0, tilt_deg=-3.0, fov_deg=60.0),
            Preset(id=1, pan_deg=90.0, tilt_deg=-3.0, fov_deg=60.0),
        ),
        settle_s=2.0,
        dwell_s=6.0,
        vision=Vision(
            zones=(ImageZone(kind="construction_watch", polygon=ring, preset=1, name="plot"),),
            detectors=Detectors(
                construction_change=ConstructionChangeSettings(days=3, day_s=day_s)
            ),
        ),
    )


def _patrol_days(
    worker: CameraWorker,
    ptz: SimulatedPtz,
    days: list[np.ndarray],
    first_day: int = 0,
    day: timedelta = timedelta(days=1),
) -> None:
    """Each day, two patrol rounds at 2 fps; preset 1 shows that day's view of the site."""
    for n, image in enumerate(days, start=first_day):
        ptz.show(1, image)
        start = DAY0 + n * day
        for i in range(32):
            worker.handle(Captured(ptz.capture(), start + timedelta(seconds=i / 2)))


_sink: list[Detection] = []  # what the worker under test published


def _square(name: str, east_m: float, half_m: float) -> Zone:
    """A construction-watch map zone centred ``east_m`` east of the tower."""
    lon = AT.lon + east_m / 99_520  # metres per degree of longitude at 26.6° N
    dlon, dlat = half_m / 99_520, half_m / 110_700
    ring = ((lon - dlon, AT.lat - dlat), (lon + dlon, AT.lat - dlat))
    ring += ((lon + dlon, AT.lat + dlat), (lon - dlon, AT.lat + dlat))
    return Zone(name=name, kind="construction_watch", polygon=ring)


# The preset's image zone is named "plot": its change is placed there, not on the nearer lot.
PLOT, LOT = _square("plot", 800, 150), _square("lot", 300, 100)


def _setup(
    tmp_path: Path, builds: bool, day_s: float = REAL_DAY_S
) -> tuple[CameraWorker, SimulatedPtz, list[np.ndarray]]:
    sc = SiteScenario("site", seed=9, builds=builds, days=8, size=SIZE)
    days = [image for _, image in render_days(sc)]
    other = [image for _, image in render_days(SiteScenario("o", seed=4, builds=False, days=1))]
    ptz = SimulatedPtz({0: cv2.resize(other[0], SIZE), 1: days[0]}, seed=1)
    _sink.clear()
    worker = CameraWorker.for_watchtower(
        _tower(sc.site, day_s), _sink.append, EvidenceStore(tmp_path), ptz=ptz, zones=(LOT, PLOT)
    )
    return worker, ptz, days


def _changes() -> list[Detection]:
    return [d for d in _sink if d.kind is DetectionKind.CONSTRUCTION_CHANGE]


def test_patrol_reports_a_lasting_building_once_and_ack_moves_the_baseline(
    tmp_path: Path,
) -> None:
    worker, ptz, days = _setup(tmp_path, builds=True)
    _patrol_days(worker, ptz, days[:6])
    changes = _changes()
    assert len(changes) == 1, [d.rule for d in _sink]
    change = changes[0]
    assert change.rule == "camera:construction_change" and change.bbox is not None
    assert change.snapshot and Path(change.snapshot).is_file()
    assert Path(change.snapshot.replace(".jpg", "-crop.jpg")).is_file()
    assert change.bearing_deg is not None and abs(change.bearing_deg - 90.0) < 30
    assert (change.ts - DAY0).days >= 4  # built from day 2, lasting three observed days
    store = BaselineStore(tmp_path)
    assert (tmp_path / "baselines" / "WT-C" / "preset-1" / "latest.png").is_file()
    assert store.record("WT-C", 0) is None  # preset 0 watches no construction
    record = store.acknowledge("WT-C", 1, by="li")
    assert record.version == 2 and record.origin == "acknowledged" and record.by == "li"
    _patrol_days(worker, ptz, days[6:], first_day=6)
    assert len(_changes()) == 1  # the accepted building is the new baseline


def test_compressed_days_pass_in_seconds_and_confirm_after_the_days(tmp_path: Path) -> None:
    """With 16-second days, six days of patrol take 96 s of one calendar date: the building
    (from compressed day 2) is confirmed once, on day 4, its third observed day."""
    worker, ptz, days = _setup(tmp_path, builds=True, day_s=16.0)
    _patrol_days(worker, ptz, days[:6], day=timedelta(seconds=16))
    changes = _changes()
    assert len(changes) == 1, [d.rule for d in _sink]
    elapsed = (changes[0].ts - DAY0).total_seconds()
    assert 4 * 16 <= elapsed < 5 * 16
    assert changes[0].ts.date() == DAY0.date()  # the calendar day never turned
    where = changes[0].location
    assert where is not None, "a tower's change is placed on its watched map zone"
    assert shapely.Polygon(PLOT.polygon).contains(shapely.Point(where.lon, where.lat))
    record = BaselineStore(tmp_path).record("WT-C", 1)
    assert record is not None and record.day == DAY0.date()


def test_day_of_counts_calendar_days_in_the_frame_zone_or_compressed_days() -> None:
    local = timezone(timedelta(hours=8))
    late = datetime(2025, 4, 1, 23, 59, tzinfo=local)
    assert day_of(late) == date(2025, 4, 1).toordinal() - date(1970, 1, 1).toordinal()
    assert day_of(late + timedelta(minutes=2)) == day_of(late) + 1
    # DAY0 starts a 10-second day: it lasts to 9.9 s, the next one begins at 10 s
    assert day_of(DAY0, 10.0) == day_of(DAY0 + timedelta(seconds=9.9), 10.0)
    assert day_of(DAY0, 10.0) + 1 == day_of(DAY0 + timedelta(seconds=10), 10.0)


def test_quiet_site_raises_no_change(tmp_path: Path) -> None:
    worker, ptz, days = _setup(tmp_path, builds=False)
    _patrol_days(worker, ptz, days)
    assert not _changes()
    assert BaselineStore(tmp_path).record("WT-C", 1) is not None


def test_ack_baseline_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDWATCH_EVIDENCE_DIR", str(tmp_path))
    runner = CliRunner()
    missing = runner.invoke(app, ["cameras", "ack-baseline", "WT-01", "1"])
    assert missing.exit_code == 2 and "no daily frame" in missing.output
    store = BaselineStore(tmp_path)
    image = np.full((36, 64, 3), 90, np.uint8)
    store.start("WT-01", 1, image, date(2025, 4, 1))
    store.save_daily("WT-01", 1, image + 50, date(2025, 4, 9))
    result = runner.invoke(app, ["cameras", "ack-baseline", "WT-01", "1", "--by", "li"])
    assert result.exit_code == 0, result.output
    record = store.record("WT-01", 1)
    assert record is not None and record.version == 2 and record.day == date(2025, 4, 9)
    baseline = store.baseline("WT-01", 1)
    assert baseline is not None and int(baseline.mean()) == 140
    bad = runner.invoke(app, ["cameras", "ack-baseline", "WT-01", "99"])
    assert bad.exit_code == 2


def test_orb_ransac_registers_when_ecc_fails() -> None:
    sc = SiteScenario("site", seed=9, builds=False, days=3, size=SIZE)
    days = [image for _, image in render_days(sc)]
    watch = ConstructionWatch(days[0], None, days=3)
    turn = cv2.getRotationMatrix2D((160, 90), 4, 1.0)
    turn[:, 2] += (25, 12)  # a PTZ that came back well off its preset
    moved = np.asarray(cv2.warpAffine(days[1], turn, SIZE, borderMode=cv2.BORDER_REFLECT), np.uint8)
    report = watch.observe(moved, date(2025, 4, 2))
    assert report.registered and report.method == "orb" and not report.confirmed
    noise = np.random.default_rng(0).integers(0, 255, (*SIZE[::-1], 3)).astype(np.uint8)
    unrelated = watch.observe(noise, date(2025, 4, 3))
    assert not unrelated.registered and unrelated.method == "none"  # too few inliers


def test_a_tower_bearing_is_placed_on_the_watched_zone_it_crosses(tmp_path: Path) -> None:
    worker, _, _ = _setup(tmp_path, builds=False)
    patrol = worker.construction
    assert patrol is not None
    named = patrol.place(AT, 90.0, 1)
    assert named is not None and shapely.Polygon(PLOT.polygon).contains(
        shapely.Point(named.lon, named.lat)
    )
    assert abs(named.lon - (AT.lon + 800 / 99_520)) < 2e-5  # the middle of the crossing
    patrol.ground = (LOT,)  # the named zone is not in the site: any watched zone crossed
    other = patrol.place(AT, 90.0, 1)
    assert other is not None and shapely.Polygon(LOT.polygon).contains(
        shapely.Point(other.lon, other.lat)
    )
    assert patrol.place(AT, 270.0, 1) is None  # looking away from both
