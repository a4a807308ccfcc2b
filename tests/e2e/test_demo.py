"""The main job end to end: `gridwatch demo` as a user runs it, on real services."""

import json

from gridwatch.xml_signature import load_certificate, verify
from tests.conftest import DemoRun


def test_demo_thin_path(demo_run: DemoRun) -> None:
    s = demo_run.summary
    assert s["complete"] is True
    assert s["readings_sent"] > 0
    assert s["lost_readings"] == 0 and s["readings_stored"] == s["readings_sent"]
    assert s["deadletters"] == s["bad_messages_sent"] == 2
    assert s["alert_latency_ms"]["p99"] is not None
    assert "summary" in demo_run.stdout and "红色预警" in demo_run.stdout
    assert (demo_run.run_dir / "gridwatch.log").exists()


def test_demo_summary_scores_every_event_found_and_nothing_more(demo_run: DemoRun) -> None:
    s = demo_run.summary
    score = s["score"]
    assert score["scenario"] == "demo" and score["events"] == score["detected"] == 3
    assert all(e["detected"] and e["level_ok"] and e["sources_ok"] for e in score["per_event"])
    assert score["missed"] == score["false_incidents"] == 0 and score["passed"] is True
    # Each incident names the sources that raised it, per kind.
    raised = {i["kind"]: sorted(i["raised_by"]) for i in s["incident_list"]}
    assert raised == {
        "flood": ["sensor WL-001"],
        "forest_fire": ["sensor SM-001", "watchtower WT-01", "watchtower WT-02"],
        "straw_burning": ["sensor PM-001"],
    }
    assert "incidents by kind" in demo_run.stdout and "watchtower WT-02" in demo_run.stdout


def test_demo_fire_flood_and_plume_close_the_loop(demo_run: DemoRun) -> None:
    s = demo_run.summary
    # The scenario: a gauge rising through all three colours, a PM2.5 plume rising likewise,
    # and a forest fire seen by two towers, then by the forest smoke sensor.
    kinds = sorted(i["kind"] for i in s["incident_list"])
    assert kinds == ["flood", "forest_fire", "straw_burning"] and s["incidents"] == 3
    fire = next(i for i in s["incident_list"] if i["kind"] == "forest_fire")
    assert fire["level"] == "red" and fire["sources"] == 3  # two towers and the smoke sensor
    assert fire["location_error_m"] is not None and fire["location_error_m"] < 150
    assert (
        abs(fire["lon"] - s["fire"]["lon"]) < 0.002 and abs(fire["lat"] - s["fire"]["lat"]) < 0.002
    )
    # Gauge and plume notify each colour once; the fire is red at once (two towers and the
    # forest zone), its yellow and orange inhibited.
    assert s["alerts_by_level"] == {"yellow": 2, "orange": 2, "red": 3}
    assert s["tower_detections_sent"] == 2
    # Every case is dispatched, worked by the desk (the flood once reworked) and closed.
    assert s["cases_by_state"] == {"closed": 3}
    k = s["kpis"]
    assert (k["due"], k["closed"], k["closed_on_time"]) == (3, 3, 3)
    assert (k["closure_rate"], k["on_time_rate"], k["rework_rate"]) == (100.0, 100.0, 33.33)
    assert k["community_share"] == 0.0  # red cases are held by the street command center
    # Dispatch: one per case, plus a regrade per later colour of the gauge and the plume.
    assert s["dispatch_messages_received"] == 7
    # Broadcast, after the (recorded) approval: CAP + EBM to go on air, and again to cancel.
    assert s["broadcast_messages_received"] == 12 and s["outbox_dead"] == 0
    received = demo_run.run_dir / "received"
    caps = sorted((received / "broadcast").glob("*.xml"))
    assert len(caps) == 6 and len(list((received / "dispatch").glob("*.json"))) == 7
    texts = [c.read_text() for c in caps]
    assert sum("<msgType>Cancel</msgType>" in t for t in texts) == 3
    assert all("<references>" in t for t in texts if "<msgType>Cancel</msgType>" in t)
    # Each CAP message arrived signed by the demo's throwaway CAP key.
    certificate = load_certificate(demo_run.run_dir / "cap-signing" / "signing-cert.pem")
    for cap in caps:
        verify(cap.read_bytes(), certificate)
    first = json.loads(next((received / "dispatch").glob("0001-*.json")).read_text())
    assert first["action"] == "dispatch"
    assert "broadcast approved" in demo_run.stdout
