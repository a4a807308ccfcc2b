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
    assert score["scenario"] == "demo" and score["events"] == score["detected"] == 6
    assert all(e["detected"] and e["level_ok"] and e["sources_ok"] for e in score["per_event"])
    assert score["missed"] == score["false_incidents"] == 0 and score["passed"] is True
    # Each incident names the sources that raised it, per kind: every camera incident from
    # the camera workers' own analysis of the simulated streams, none injected.
    raised = {i["kind"]: sorted(i["raised_by"]) for i in s["incident_list"]}
    assert raised == {
        "flood": ["sensor RG-002", "sensor WL-001"],
        "forest_fire": ["sensor SM-001", "watchtower WT-01", "watchtower WT-02"],
        "straw_burning": ["camera CAM-004", "sensor PM-001"],
        "device_fault": ["camera CAM-002"],
        "traffic_safety": ["camera CAM-006"],
        "illegal_construction": ["watchtower WT-03"],
    }
    assert "incidents by kind" in demo_run.stdout and "watchtower WT-02" in demo_run.stdout


def test_demo_cameras_are_analysed_by_their_workers_with_snapshots(demo_run: DemoRun) -> None:
    s = demo_run.summary
    workers = s["camera_workers"]
    assert sorted(workers) == [
        "camera CAM-002",
        "camera CAM-004",
        "camera CAM-006",
        "watchtower WT-01 thermal",
        "watchtower WT-01 visible",
        "watchtower WT-02 thermal",
        "watchtower WT-02 visible",
        "watchtower WT-03 visible",  # no fire at the rooftop tower: its thermal stream is idle
    ]
    assert all(n > 0 for n in workers.values()) and s["camera_workers_died"] == []
    assert s["camera_frames_analysed"] == sum(workers.values())
    assert "camera frames analysed" in demo_run.stdout
    # The rooftop tower's construction watch counts compressed days, and the run says so.
    assert s["compressed_days_s"] == {"WT-03": 1.5}
    assert "WT-03's construction watch: a day is 1.5 s" in demo_run.stdout
    # Every detection that saw something left its snapshot under the run's evidence.
    for device in ("CAM-004", "CAM-006", "WT-01", "WT-02", "WT-03"):
        assert list((demo_run.run_dir / "evidence" / device).rglob("*-crop.jpg")), device


def test_demo_fire_flood_plume_and_fault_close_the_loop(demo_run: DemoRun) -> None:
    s = demo_run.summary
    # The scenario: a gauge rising through all three colours, straw burning seen by a camera
    # and a PM2.5 plume rising likewise, a forest fire seen by two towers, then by the forest
    # smoke sensor, a camera whose stream goes down, a car stalled on the ramp camera's lane and
    # a building on the new-city works, confirmed by the rooftop tower after its three days.
    kinds = sorted(i["kind"] for i in s["incident_list"])
    assert kinds == [
        "device_fault", "flood", "forest_fire", "illegal_construction", "straw_burning",
        "traffic_safety",
    ]  # fmt: skip
    assert s["incidents"] == 6
    fire = next(i for i in s["incident_list"] if i["kind"] == "forest_fire")
    assert fire["level"] == "red" and fire["sources"] == 3  # two towers and the smoke sensor
    # Triangulated from the bearings the towers' thermal hotspots gave.
    assert fire["location_error_m"] is not None and fire["location_error_m"] < 150
    assert (
        abs(fire["lon"] - s["fire"]["lon"]) < 0.002 and abs(fire["lat"] - s["fire"]["lat"]) < 0.002
    )
    # The fire is red at once (two towers and the forest zone), its yellow and orange
    # inhibited; the fault, the stalled car and the building stay yellow; gauge and plume
    # notify red and yellow, and orange unless red came within orange's group wait (a sixth
    # of a second on the demo's clock) and folded it: the flood's revisions, from two
    # gauges, can come milliseconds apart.
    by_level = s["alerts_by_level"]
    assert by_level["red"] == 3 and by_level["yellow"] == 5 and by_level.get("orange", 0) <= 2
    # Every case is dispatched, worked by the desk (the flood once reworked) and closed.
    assert s["cases_by_state"] == {"closed": 6}
    k = s["kpis"]
    assert (k["due"], k["closed"], k["closed_on_time"]) == (6, 6, 6)
    assert (k["closure_rate"], k["on_time_rate"], k["rework_rate"]) == (100.0, 100.0, 16.67)
    # Red cases are held by the street command center, the yellow ones by the community.
    assert k["community_share"] == 50.0
    # Dispatch: one per case, plus a regrade per later colour notified.
    regrades = sum(by_level.values()) - s["incidents"]
    assert s["dispatch_messages_received"] == s["cases"] + regrades
    # Broadcast, after the (recorded) approval: CAP + EBM to go on air, and again to cancel.
    assert s["broadcast_messages_received"] == 12 and s["outbox_dead"] == 0
    received = demo_run.run_dir / "received"
    caps = sorted((received / "broadcast").glob("*.xml"))
    dispatched = list((received / "dispatch").glob("*.json"))
    assert len(caps) == 6 and len(dispatched) == s["dispatch_messages_received"]
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
