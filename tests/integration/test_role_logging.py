"""Each role writes its log lines to stderr, in one format, from the level GRIDWATCH_LOG_LEVEL
sets: what a container's output shows (opened cases, fired alerts, dead letters). Faust's worker
logs through the same set-up, its "Worker ready" included."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.pipeline import role_env, write_site
from gridwatch.liveness import age_s
from gridwatch.services import ServiceUrls
from gridwatch.site import Site

STAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "  # asctime, then the level, the logger: …


def run_role(
    command: list[str], env: dict[str, str], run_dir: Path, until: Callable[[str], object],
    timeout: float,
) -> str:  # fmt: skip
    """The role's stderr once ``until`` holds for it (or the role exited, or the timeout); the
    role is stopped then."""
    stderr = run_dir / "stderr.log"
    with stderr.open("wb") as err:
        role = subprocess.Popen(
            [sys.executable, "-m", "gridwatch", *command],
            env=env, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and role.poll() is None:
            if until(stderr.read_text(errors="replace")):
                break
            time.sleep(0.2)
    finally:
        role.terminate()
        role.wait(30)
    return stderr.read_text(errors="replace")


@pytest.fixture
def env(
    services: ServiceUrls, fresh_database_url: str, tiny_site: Site, run_dir: Path
) -> dict[str, str]:
    urls = replace(services, database_url=fresh_database_url)
    return role_env(urls, write_site(tiny_site, run_dir),
                    GRIDWATCH_LIVENESS_DIR=str(run_dir / "liveness"))  # fmt: skip


@pytest.mark.timeout(120)
def test_a_role_logs_info_lines_to_stderr_in_the_shared_format(
    env: dict[str, str], run_dir: Path
) -> None:
    line = re.compile(STAMP + r"INFO gridwatch\.store\.schema: schema ready", re.M)
    text = run_role(["store", "writer"], {**env, "GRIDWATCH_LOG_LEVEL": "info"}, run_dir,
                    until=line.search, timeout=60)  # fmt: skip
    assert line.search(text), text


@pytest.mark.timeout(120)
def test_the_log_level_setting_holds_back_lines_below_it(
    env: dict[str, str], run_dir: Path
) -> None:
    def beat(_: str) -> bool:  # the first heartbeat comes after the schema's INFO line
        return age_s(run_dir / "liveness", "store-writer") is not None

    text = run_role(["store", "writer"], {**env, "GRIDWATCH_LOG_LEVEL": "WARNING"}, run_dir,
                    until=beat, timeout=60)  # fmt: skip
    assert age_s(run_dir / "liveness", "store-writer") is not None, text
    assert " INFO " not in text, text


@pytest.mark.timeout(180)
def test_faust_s_worker_logs_worker_ready_through_the_role_s_set_up(
    env: dict[str, str], run_dir: Path
) -> None:
    line = re.compile(STAMP + r"INFO faust\.tables\.recovery: .*Worker ready", re.M)
    command = ["streams", "worker", "--datadir", str(run_dir / "faust")]
    text = run_role(command, {**env, "GRIDWATCH_LOG_LEVEL": "INFO"}, run_dir,
                    until=line.search, timeout=150)  # fmt: skip
    assert line.search(text), text
