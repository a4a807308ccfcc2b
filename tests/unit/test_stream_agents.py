"""How the stream worker's agents fail: a message's fault is its dead letter, an outage the
worker's end."""

from __future__ import annotations

from pathlib import Path

from mode import CrashingSupervisor

from gridwatch.site import Site
from streams.app import build_app


def test_an_agent_that_raises_stops_the_worker(tiny_site: Site, tmp_path: Path) -> None:
    # Faust's default supervisor restarts a crashed agent in place, past the message it failed
    # on; the only errors an agent lets out are outages, after which the worker must exit.
    app = build_app(tiny_site, "127.0.0.1:9", tmp_path)
    assert {"sensor_rules", "place", "fusion"} <= {a.split(".")[-1] for a in app.agents}
    assert all(a.supervisor_strategy is CrashingSupervisor for a in app.agents.values())
