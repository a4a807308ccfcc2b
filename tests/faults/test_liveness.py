"""Liveness and crash-only on real processes: a stuck role goes stale for its healthcheck, and a
crashed Faust agent ends the worker with a non-zero code instead of leaving it idling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.pipeline import Roles, role_env
from gridwatch.services import ServiceUrls
from gridwatch.settings import SAMPLE_SITE


def health(env: dict[str, str], role: str, max_age: float) -> int:
    argv = [sys.executable, "-m", "gridwatch", "health", role, "--max-age", str(max_age)]
    return subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode


def wait_health(env: dict[str, str], role: str, max_age: float, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    code = health(env, role, max_age)
    while code != want and time.monotonic() < deadline:
        time.sleep(0.5)
        code = health(env, role, max_age)
    return code


def test_a_stuck_writer_goes_stale_and_comes_back(services: ServiceUrls, run_dir: Path) -> None:
    env = role_env(services, SAMPLE_SITE, GRIDWATCH_LIVENESS_DIR=str(run_dir / "liveness"))
    roles = Roles(["store-writer"], env, run_dir)
    try:
        assert wait_health(env, "store-writer", 3, want=0, timeout=60) == 0
        roles.kill("store-writer", signal.SIGSTOP)  # a loop that no longer turns
        assert wait_health(env, "store-writer", 3, want=1, timeout=20) == 1
        roles.kill("store-writer", signal.SIGCONT)
        assert wait_health(env, "store-writer", 3, want=0, timeout=20) == 0
    finally:
        roles.stop()


# The worker the `streams worker` command runs, plus one agent that crashes on its first message.
CRASHING_WORKER = """
import sys
from pathlib import Path
from mode import Worker
from gridwatch.settings import SAMPLE_SITE, Settings
from gridwatch.site import load_site
from streams.app import build_app

bootstrap, app_id, datadir = sys.argv[1:]
app = build_app(load_site(SAMPLE_SITE), bootstrap, Path(datadir), app_id=app_id,
                groups=Settings().consumer_groups)
probe = app.topic(f"{app_id}-probe", value_serializer="raw")

@app.agent(probe)
async def crashes(stream):
    async for _ in stream:
        raise RuntimeError("an agent that dies")

@app.timer(0.5)
async def poke():
    await probe.send(value=b"x")

Worker(app, loglevel="WARNING").execute_from_commandline()
"""


def test_a_crashed_agent_ends_the_worker_non_zero(kafka_bootstrap: str, run_dir: Path) -> None:
    app_id = f"t-crash-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", CRASHING_WORKER, kafka_bootstrap, app_id, str(run_dir)]
    with (run_dir / "worker.log").open("wb") as log:
        worker = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        try:
            code = worker.wait(90)  # Faust's default supervisor restarts the agent forever
        finally:
            worker.kill()
    assert code != 0
    assert "an agent that dies" in (run_dir / "worker.log").read_text(errors="replace")
