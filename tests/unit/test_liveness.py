"""Heartbeat files and `gridwatch health`: a role is alive while every one of its loops beats."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.errors import ConfigError
from gridwatch.liveness import Heartbeat, age_s, heartbeat_path


def test_a_role_with_two_loops_beats_only_when_both_have(tmp_path: Path) -> None:
    directory = tmp_path / "liveness"  # made by the heartbeat
    heartbeat = Heartbeat(directory, "alerts-relay", loops=("cases", "outbox"), every_s=0)
    heartbeat.beat("cases")
    assert age_s(directory, "alerts-relay") is None  # the outbox loop has not beaten yet
    heartbeat.beat("outbox")
    assert age_s(directory, "alerts-relay") is not None
    os.utime(heartbeat.path, (time.time() - 100, time.time() - 100))
    heartbeat.beat("cases")
    heartbeat.beat("cases")  # one loop alone, however often, does not make the role alive
    assert (age_s(directory, "alerts-relay") or 0) >= 99


def test_role_names_are_file_names_not_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="role name"):
        heartbeat_path(tmp_path, "../store-writer")


def test_health_exits_zero_while_fresh_and_one_when_stale_or_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDWATCH_LIVENESS_DIR", str(tmp_path))
    runner = CliRunner()
    missing = runner.invoke(app, ["health", "store-writer"])
    assert missing.exit_code == 1 and "no heartbeat" in missing.output
    Heartbeat(tmp_path, "store-writer").beat()
    assert runner.invoke(app, ["health", "store-writer", "--max-age", "5"]).exit_code == 0
    old = time.time() - 60
    os.utime(heartbeat_path(tmp_path, "store-writer"), (old, old))
    stale = runner.invoke(app, ["health", "store-writer", "--max-age", "30"])
    assert stale.exit_code == 1 and "60 s ago" in stale.output
    assert runner.invoke(app, ["health", "../x"]).exit_code == 2
