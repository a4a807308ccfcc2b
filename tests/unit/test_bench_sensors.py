"""The sensor benchmark's load is what it reports: every device once per period, two metrics
each, in gateway messages spread over the period that the bridge accepts."""

import json
from datetime import UTC, datetime

import pytest

from benchmarks.sensors import PER_MESSAGE, bench_site, gateway_messages
from gridwatch.site import Site
from ingest.telemetry import parse_telemetry


@pytest.mark.parametrize("metrics", [2, 4])
def test_each_period_carries_every_device_once_spread_over_the_period(
    tiny_site: Site, metrics: int
) -> None:
    site = bench_site(tiny_site, 250, metrics)
    start_ms = 1_764_230_400_000
    messages = gateway_messages(site, 3, start_ms)
    assert len(messages) == -(-250 // PER_MESSAGE)
    at = datetime.fromtimestamp(start_ms / 1000 + 4, UTC)
    reports = [r for t, payload in messages for r in parse_telemetry(site, t, payload, at)]
    assert sum(len(r.values) for r in reports) == 250 * metrics
    assert sorted(r.device_id for r in reports) == sorted(s.id for s in site.sensors)
    times = [next(iter(json.loads(payload).values()))[0]["ts"] for _, payload in messages]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert start_ms + 3000 == times[0] and times[-1] < start_ms + 4000
