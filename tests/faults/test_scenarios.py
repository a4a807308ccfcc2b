"""Faults injected into the running pipeline, every role its own supervised process on fresh
services: each role killed with SIGKILL mid-stream, PostgreSQL stopped, the Kafka broker
restarted, the dispatch and broadcast endpoints down for "ten minutes" on a clock 30 times
faster. After each: no reading lost or stored twice, the detections of a fault-free run of the
same input, every alert and resolved sent once and every message taken once by the desk and
the receiver.

Short versions of ``gridwatch bench faults`` (benchmarks/faults.py); the bench runs each fault
on its own and for longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from benchmarks.faults import Fault, Observed, Outcome, Plan, Scenario, compare, run_scenario
from benchmarks.faults import needs_skip as skip_reason
from gridwatch.settings import SAMPLE_SITE, Settings
from gridwatch.site import load_site

PLAN = Plan(devices=100, duration_s=12.0, clock_factor=30.0, postgres_down_s=6.0, timeout_s=60)
# Each role killed once, one after the other: the bridge before the gauge goes red, the others
# while the incident is open (the gauge reads red over ``RED`` of the run).
KILL_EACH_ROLE = Scenario(
    "kill -9 each role in turn",
    tuple(
        Fault(at, "kill", role)
        for at, role in (
            (0.1, "ingest-mqtt"),
            (0.25, "streams-worker"),
            (0.35, "alerts-engine"),
            (0.45, "alerts-relay"),
            (0.55, "store-writer"),
        )
    ),  # fmt: skip
)
POSTGRES_STOPPED = Scenario("postgres stopped", (Fault(0.45, "postgres"),))
BROKER_RESTARTED = Scenario("kafka broker restarted", (Fault(0.45, "broker", down_s=5.0),))
ENDPOINTS_DOWN = Scenario("dispatch+broadcast down", (Fault(0.2, "endpoints"),))  # before red
SCENARIOS = (KILL_EACH_ROLE, POSTGRES_STOPPED, BROKER_RESTARTED, ENDPOINTS_DOWN)
FAULT_FREE = Scenario("fault-free")
AT_ONCE = 2  # runs at a time, each on services of its own: most of a run is waiting

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[Observed]]]:
    """The fault-free run and every scenario these services allow, ``AT_ONCE`` at a time, by
    name; each test waits for the runs it reads (a run that failed fails only those)."""
    site = load_site(SAMPLE_SITE)
    allowed = [s for s in SCENARIOS if skip_reason(s, Settings()) is None]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        yield {
            s.name: pool.submit(run_scenario, site, PLAN, s, Settings())
            for s in (FAULT_FREE, *allowed)
        }


def outcome_of(scenario: Scenario, runs: dict[str, Future[Observed]]) -> Outcome:
    reason = skip_reason(scenario, Settings())
    if reason:
        pytest.skip(reason)
    baseline = runs[FAULT_FREE.name].result()
    assert baseline.complete and baseline.rows == baseline.readings_sent, "the baseline failed"
    outcome = compare(scenario.name, runs[scenario.name].result(), baseline)
    assert outcome.caught_up, f"the pipeline did not catch up: {outcome}"
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.detections_equal, outcome
    assert outcome.exactly_once, outcome
    assert outcome.delivered == outcome.delivered_expected > 0, outcome
    assert not outcome.not_alive_after, outcome
    return outcome


def test_each_role_killed_mid_stream_comes_back_without_loss(
    runs: dict[str, Future[Observed]],
) -> None:
    outcome = outcome_of(KILL_EACH_ROLE, runs)
    assert all(outcome.restarts.get(f.role, 0) >= 1 for f in KILL_EACH_ROLE.faults), outcome


def test_postgres_stopped_mid_stream_loses_nothing(runs: dict[str, Future[Observed]]) -> None:
    outcome_of(POSTGRES_STOPPED, runs)


def test_endpoints_down_for_ten_minutes_get_everything_once(
    runs: dict[str, Future[Observed]],
) -> None:
    outcome = outcome_of(ENDPOINTS_DOWN, runs)
    assert outcome.delivery_retries > 0, "the outage did not keep the relay from delivering"


def test_a_broker_restart_mid_stream_loses_nothing_in_flight(
    runs: dict[str, Future[Observed]],
) -> None:
    # The embedded broker keeps its log in memory: this is the clients' side of a restart
    # (producers retrying through it, consumers rejoining), between two reports of the devices.
    outcome_of(BROKER_RESTARTED, runs)
