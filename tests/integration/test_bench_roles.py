"""The benchmarks' roles run as supervised processes: one that dies is started again and its
death recorded with the cause, one out of restarts stays down, and a role whose thread died of
an uncaught exception is dead although its process lives on."""

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.pipeline import Role, Roles, role_env, write_site
from gridwatch.services import ServiceUrls
from gridwatch.site import Site


def test_a_dead_role_is_restarted_with_its_cause_until_out_of_restarts(
    services: ServiceUrls, fresh_database_url: str, tiny_site: Site, run_dir: Path
) -> None:
    urls = replace(services, database_url=fresh_database_url)
    env = role_env(urls, write_site(tiny_site, run_dir))
    roles = Roles(["store-writer"], env, run_dir, max_restarts=1, restart_delay_s=0.2)
    writer = roles.roles["store-writer"]
    try:
        assert writer.process is not None
        first = writer.process.pid
        assert roles.restarts == {"store-writer": 0} and roles.down() == []
        roles.kill("store-writer")
        assert roles.wait_restarted("store-writer", 1, timeout=30)
        assert roles.restarts == {"store-writer": 1} and roles.down() == []
        assert len(roles.deaths) == 1
        assert roles.deaths[0].startswith("store-writer: exited with code -9")
        assert writer.process is not None and writer.process.pid != first
        roles.kill("store-writer")
        deadline = time.monotonic() + 30
        while len(roles.deaths) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert roles.deaths[1].startswith("store-writer: exited with code -9")
        assert not roles.wait_restarted("store-writer", 2, timeout=2)  # out of restarts
        assert roles.restarts == {"store-writer": 1} and roles.down() == ["store-writer"]
    finally:
        roles.stop()
    assert writer.process is None


# A process whose worker thread dies while its main thread logs on, as a role's would.
THREAD_DIES = """
import logging, sys, threading, time
logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
def network():
    logging.info("connected")
    raise ConnectionError("the network thread")
threading.Thread(target=network, name="network").start()
while True:
    logging.info("still here: the main thread logs on")
    time.sleep(0.01)
"""


def test_a_role_whose_thread_died_is_dead_while_its_process_lives(run_dir: Path) -> None:
    role = Role("ingest-mqtt", [sys.executable, "-c", THREAD_DIES], run_dir / "ingest-mqtt.log")
    role.start(os.environ, run_dir)
    try:
        assert role.process is not None
        deadline = time.monotonic() + 30
        why = role.died()
        while why is None and time.monotonic() < deadline:
            time.sleep(0.1)
            why = role.died()
        assert why == "a thread died of an uncaught exception: ConnectionError: the network thread"
        assert role.process.popen.poll() is None  # the PID lives on
    finally:
        role.stop(grace=2.0)
