"""``gridwatch bench fuzz``, short: a few hundred generated bad and good messages through the
real broker, bridge, Kafka, rules worker, writer and PostgreSQL, each role its own process.
Every message the bridge received is stored, a duplicate, a correction or dead-lettered, and no
role dies on the way."""

import pytest

from benchmarks.fuzz import report, run
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site


@pytest.mark.timeout(240)
def test_every_fuzzed_message_is_accounted_for_and_no_role_dies() -> None:
    result = run(load_site(SAMPLE_SITE), 300, seed=11, drain_timeout=90, quiet_s=15, max_restarts=3)
    assert result.received >= 280
    assert (result.unaccounted, result.role_restarts) == (0, 0), report(result)
