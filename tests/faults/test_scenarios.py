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

import pytest

from benchmarks.faults import Fault, Observed, Outcome, Plan, Scenario, compare, run_scenario
from benchmarks.faults import needs_skip as skip_reason
from gridwatch.settings import SAMPLE_SITE, Settings
from gridwatch.site import Site, load_site

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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SAMPLE_SITE)


@pytest.fixture(scope="module")
def fault_free(site: Site) -> Observed:
    observed = run_scenario(site, PLAN, Scenario("fault-free"), Settings())
    assert observed.complete and observed.rows == observed.readings_sent, "the baseline failed"
    return observed


def outcome_of(site: Site, scenario: Scenario, fault_free: Observed) -> Outcome:
    reason = skip_reason(scenario, Settings())
    if reason:
        pytest.skip(reason)
    outcome = compare(scenario.name, run_scenario(site, PLAN, scenario, Settings()), fault_free)
    assert outcome.caught_up, f"the pipeline did not catch up: {outcome}"
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.detections_equal, outcome
    assert outcome.exactly_once, outcome
    assert outcome.delivered == outcome.delivered_expected > 0, outcome
    assert not outcome.not_alive_after, outcome
    return outcome


def test_each_role_killed_mid_stream_comes_back_without_loss(
    site: Site, fault_free: Observed
) -> None:
    outcome = outcome_of(site, KILL_EACH_ROLE, fault_free)
    assert all(outcome.restarts.get(f.role, 0) >= 1 for f in KILL_EACH_ROLE.faults), outcome


def test_postgres_stopped_mid_stream_loses_nothing(site: Site, fault_free: Observed) -> None:
    outcome_of(site, POSTGRES_STOPPED, fault_free)


def test_endpoints_down_for_ten_minutes_get_everything_once(
    site: Site, fault_free: Observed
) -> None:
    outcome = outcome_of(site, ENDPOINTS_DOWN, fault_free)
    assert outcome.delivery_retries > 0, "the outage did not keep the relay from delivering"


def test_a_broker_restart_mid_stream_loses_nothing_in_flight(
    site: Site, fault_free: Observed
) -> None:
    # The embedded broker keeps its log in memory: this is the clients' side of a restart
    # (producers retrying through it, consumers rejoining), between two reports of the devices.
    outcome_of(site, BROKER_RESTARTED, fault_free)
