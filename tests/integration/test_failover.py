"""Rules workers and store writers sharing four partitions: one of each killed with SIGKILL
mid-stream, and the others take its partitions over with nothing lost, stored twice, missed or
judged twice, against one worker and one writer fed the same input.

A short version of ``gridwatch bench failover`` (benchmarks/failover.py). The session timeout
is set through the settings, so the dead members leave the groups within seconds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.failover import Shape, compare, run_shape
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site

DEVICES, DURATION_S = 300, 10.0
SESSION_TIMEOUT_S = 4.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_killed_worker_and_writer_hand_their_partitions_over_without_loss() -> None:
    site = load_site(SAMPLE_SITE)
    # The two runs at once, each on services of its own: most of a run is waiting.
    with ThreadPoolExecutor(2) as pool:
        single = pool.submit(run_shape, site, DEVICES, DURATION_S, Shape())
        shape = Shape(partitions=4, workers=2, writers=2)
        scaled = pool.submit(run_shape, site, DEVICES, DURATION_S, shape, kill_at=0.3,
                             session_timeout_s=SESSION_TIMEOUT_S).result()  # fmt: skip
        one = single.result()
    assert one.complete and one.rows == one.data_points_sent, "the one-worker run failed"
    assert sum(one.detections.values()) > 0, "the input crosses no threshold"
    outcome = compare(scaled, one)
    assert outcome.killed == ["streams-worker-2", "store-writer-2"], outcome
    # Each killed one held partitions, and the one left of each role holds all four after.
    assert all(outcome.assigned_before_kill[name] for name in outcome.killed), outcome
    assert outcome.assigned_after == {"streams-worker": [0, 1, 2, 3],
                                      "store-writer": [0, 1, 2, 3]}, outcome  # fmt: skip
    assert outcome.caught_up, outcome
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert not outcome.unexpected_deaths, outcome
    assert outcome.doubled == 0, outcome
    assert outcome.detections == outcome.detections_expected, outcome
    assert outcome.ok
