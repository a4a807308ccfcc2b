"""The main job end to end: `gridwatch demo` as a user runs it, on real services.

PostgreSQL comes from the session (a database of its own); the demo starts its own Kafka-API and
MQTT brokers, exactly as on a fresh machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_thin_path(fresh_database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env["GRIDWATCH_DATABASE_URL"] = fresh_database_url
    summary_file = tmp_path / "s.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridwatch",
            "demo",
            "--summary-json",
            str(summary_file),
            "--run-dir",
            str(tmp_path / "run"),
            "--duration",
            "12",
            "--rate",
            "4",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(summary_file.read_text())
    assert s["complete"] is True
    assert s["readings_sent"] > 0
    assert s["lost_readings"] == 0 and s["readings_stored"] == s["readings_sent"]
    # The rising gauge crosses yellow, orange and red: one incident, an alert per colour.
    assert s["alerts_by_level"] == {"yellow": 1, "orange": 1, "red": 1}
    assert s["incidents"] == 1
    assert s["deadletters"] == s["bad_messages_sent"] == 2
    assert s["alert_latency_ms"]["p99"] is not None
    assert "summary" in proc.stdout and "红色预警" in proc.stdout
    assert (tmp_path / "run" / "gridwatch.log").exists()
