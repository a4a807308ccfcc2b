"""The main job end to end: `gridwatch demo` as a user runs it, on real services."""

from tests.conftest import DemoRun


def test_demo_thin_path(demo_run: DemoRun) -> None:
    s = demo_run.summary
    assert s["complete"] is True
    assert s["readings_sent"] > 0
    assert s["lost_readings"] == 0 and s["readings_stored"] == s["readings_sent"]
    # The rising gauge crosses yellow, orange and red: one incident, an alert per colour.
    assert s["alerts_by_level"] == {"yellow": 1, "orange": 1, "red": 1}
    assert s["incidents"] == 1
    assert s["deadletters"] == s["bad_messages_sent"] == 2
    assert s["alert_latency_ms"]["p99"] is not None
    assert "summary" in demo_run.stdout and "红色预警" in demo_run.stdout
    assert (demo_run.run_dir / "gridwatch.log").exists()
