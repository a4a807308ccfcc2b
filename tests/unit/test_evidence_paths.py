"""Camera and watchtower ids become directory names: the site refuses ids that are not plain
names, and the evidence and baseline writers never write outside their directory."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from typer.testing import CliRunner

from detectors.frame import Frame
from gridwatch.cli import app
from gridwatch.errors import ConfigError
from gridwatch.settings import SAMPLE_SITE
from ingest.camera_evidence import BaselineStore, EvidenceStore

NOT_NAMES = ["../../outside", "..", ".", "a/b", "a\\b", "/etc", ".hidden", "x" * 65, ""]
ESCAPES = ["../../outside", "..", "/etc", "../elsewhere"]  # what the writers must catch too
IMAGE = np.zeros((8, 8, 3), np.uint8)


@pytest.mark.parametrize(("device", "section"), [("CAM-001", "cameras"), ("WT-01", "watchtowers")])
@pytest.mark.parametrize("bad", NOT_NAMES)
def test_check_config_refuses_an_id_that_is_not_a_plain_name(
    tmp_path: Path, device: str, section: str, bad: str
) -> None:
    text = SAMPLE_SITE.read_text(encoding="utf-8")
    assert f"- id: {device}\n" in text
    site = tmp_path / "site.yaml"
    site.write_text(text.replace(f"- id: {device}\n", f"- id: '{bad}'\n", 1), encoding="utf-8")
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2, result.output
    assert "site.yaml" in result.output and f"{section}[" in result.output
    assert "id: String should match pattern" in result.output


@pytest.mark.parametrize("source", ESCAPES)
def test_the_evidence_store_never_writes_outside_its_directory(tmp_path: Path, source: str) -> None:
    root = tmp_path / "evidence"
    frame = Frame(IMAGE, datetime(2026, 7, 1, tzinfo=UTC), source)
    with pytest.raises(ConfigError, match="outside"):
        EvidenceStore(root).save(frame, (0, 0, 4, 4), uuid4())
    assert list(tmp_path.rglob("*.jpg")) == []


@pytest.mark.parametrize("source", ESCAPES)
def test_the_baseline_store_never_writes_outside_its_directory(tmp_path: Path, source: str) -> None:
    store = BaselineStore(tmp_path / "evidence")
    with pytest.raises(ConfigError, match="outside"):
        store.save_daily(source, 1, IMAGE, date(2026, 7, 1))
    with pytest.raises(ConfigError, match="outside"):
        store.start(source, None, IMAGE, date(2026, 7, 1))
    assert list(tmp_path.rglob("*.png")) == []


def test_a_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    root.mkdir()
    (root / "CAM-9").symlink_to(tmp_path, target_is_directory=True)
    frame = Frame(IMAGE, datetime(2026, 7, 1, tzinfo=UTC), "CAM-9")
    with pytest.raises(ConfigError, match="outside"):
        EvidenceStore(root).save(frame, None, uuid4())


def test_a_plain_id_is_written_inside(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    frame = Frame(IMAGE, datetime(2026, 7, 1, tzinfo=UTC), "CAM-001")
    path = Path(EvidenceStore(root).save(frame, None, uuid4()))
    assert path.resolve().is_relative_to(root.resolve()) and path.is_file()
