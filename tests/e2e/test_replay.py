"""The demo's recording replayed: `gridwatch demo --replay` of what `gridwatch demo --record`
captured (MQTT traffic, sampled camera frames, a stream's outage and a tower's compressed days
of construction watch) opens the same incidents,
raised by the same sources, at the same colours and places, as the run that made it, and
`gridwatch eval scenario` gives both runs the same score."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.events import Point
from gridwatch.geo import LocalProjection
from ingest.recording import Recording
from tests.conftest import DemoRun, run_demo

PLACE_TOLERANCE_M = 5.0  # the same readings and tower bearings: the same fused place
# A building's place is where the bearing of its change's box crosses the watched zone, 230 m
# out: the box of a change registered on another compressed day's frame moves it a few metres.
CONSTRUCTION_TOLERANCE_M = 20.0


def _apart_m(a: dict[str, Any], b: dict[str, Any]) -> float:
    x, y = LocalProjection(Point(lon=a["lon"], lat=a["lat"])).xy(Point(lon=b["lon"], lat=b["lat"]))
    return math.hypot(x, y)


def _score(out: Path, *source: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["eval", "scenario", *source, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_a_replayed_demo_opens_the_incidents_the_demo_opened(
    demo_run: DemoRun, fresh_database_url: str, tmp_path: Path
) -> None:
    recording = Recording(demo_run.recording)
    try:
        messages, frames = recording.counts()
    finally:
        recording.close()
    live = demo_run.summary
    assert live["recording"]["messages"] == messages > 0
    assert live["recording"]["frames"] == frames > 0  # every camera and tower stream sampled
    replayed = run_demo(fresh_database_url, tmp_path, "--replay", str(demo_run.recording)).summary
    assert replayed["complete"] and replayed["replayed"] == str(demo_run.recording)
    assert replayed["readings_stored"] == live["readings_stored"] == live["readings_sent"]
    assert (
        replayed["deadletters"] == live["deadletters"] == 2
    )  # refused again, for the same reasons
    # The recorded frames went through camera workers again, the lost stream lost again.
    assert replayed["camera_frames_analysed"] > 0
    assert sorted(replayed["camera_workers"]) == sorted(live["camera_workers"])
    # The rooftop tower's patrol counts the same compressed days over its recorded frames, so
    # its building is confirmed again after the same construction days.
    assert replayed["compressed_days_s"] == live["compressed_days_s"] == {"WT-03": 1.5}
    incidents = {i["kind"]: i for i in live["incident_list"]}
    again = {i["kind"]: i for i in replayed["incident_list"]}
    assert sorted(again) == sorted(incidents)
    assert sorted(again) == [
        "device_fault",
        "flood",
        "forest_fire",
        "illegal_construction",
        "straw_burning",
        "traffic_safety",
    ]
    for kind, first in incidents.items():
        second = again[kind]
        assert (second["level"], second["grid_code"], sorted(second["raised_by"])) == (
            first["level"],
            first["grid_code"],
            sorted(first["raised_by"]),
        ), kind
        tolerance = (
            CONSTRUCTION_TOLERANCE_M if kind == "illegal_construction" else PLACE_TOLERANCE_M
        )
        assert _apart_m(first, second) < tolerance, kind
    # Which colours were notified is left out: alert grouping waits on the wall clock, so a
    # colour passed within a group's wait may go unnotified in one run and not in the other.
    # The same score for both: every event detected at its colour, no false incident.
    scores = [
        _score(tmp_path / f"{name}.json", "--summary", str(run.parent / "summary.json"))
        for name, run in (("live", demo_run.run_dir), ("replay", tmp_path / "run"))
    ]
    # A run's database scores as its summary does (told the run's length, which it lacks).
    duration = str(live["scenario_seconds"])
    from_db = _score(
        tmp_path / "db.json", "--database-url", fresh_database_url, "--duration", duration
    )
    assert from_db["per_event"] == scores[1]["per_event"] == replayed["score"]["per_event"]
    keys = ("events", "detected", "missed", "false_incidents", "passed")
    assert {k: scores[0][k] for k in keys} == {k: scores[1][k] for k in keys}
    assert scores[0]["passed"] and scores[0]["detected"] == 6
    for first, second in zip(scores[0]["per_event"], scores[1]["per_event"], strict=True):
        assert first["level"] == second["level"] and first["sources"] == second["sources"]
        assert abs(first["location_error_m"] - second["location_error_m"]) < PLACE_TOLERANCE_M
