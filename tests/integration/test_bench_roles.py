"""The benchmarks' roles run as processes: one that dies is restarted and counted, and one that
dies on every start stops being restarted once it is out of restarts."""

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.roles import Roles
from gridwatch.services import ServiceUrls
from gridwatch.site import Site


def test_a_role_that_dies_is_restarted_and_counted(
    services: ServiceUrls, fresh_database_url: str, tiny_site: Site, run_dir: Path
) -> None:
    urls = replace(services, database_url=fresh_database_url)
    roles = Roles(urls, tiny_site, run_dir, names=("writer",), max_restarts=1)
    try:
        first = roles.roles[0].process.pid
        roles.check()
        assert roles.restarts == {"writer": 0} and roles.down() == []
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not roles.down() and time.monotonic() < deadline:
            time.sleep(0.1)
        roles.check()
        assert roles.restarts == {"writer": 1}
        assert len(roles.deaths) == 1
        assert roles.deaths[0].startswith(f"writer: exited with code {-signal.SIGKILL}")
        second = roles.roles[0].process.pid
        assert second != first and roles.down() == []
        os.kill(second, signal.SIGKILL)
        roles.roles[0].process.popen.wait(10)
        roles.check()
        assert roles.restarts == {"writer": 1} and roles.down() == ["writer"]
    finally:
        roles.stop()
