from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.settings import SAMPLE_SITE

runner = CliRunner()


def test_check_config_describes_the_sample_street() -> None:
    result = runner.invoke(app, ["check-config", str(SAMPLE_SITE)])
    assert result.exit_code == 0, result.output
    assert "5 communities, 47 grids, 233 micro-grids, 47 workers" in result.output


def test_check_config_reports_the_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        SAMPLE_SITE.read_text(encoding="utf-8").replace("code: '520199003'", "code: '52'", 1)
    )
    result = runner.invoke(app, ["check-config", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "street.code" in result.output


def test_roles_refuse_to_start_without_service_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GRIDWATCH_DATABASE_URL", "GRIDWATCH_KAFKA_BOOTSTRAP", "GRIDWATCH_MQTT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir("/")  # no .env file supplies them either
    result = runner.invoke(app, ["store", "writer"])
    assert result.exit_code == 2
    assert "GRIDWATCH_DATABASE_URL" in result.output


def test_the_log_level_is_named_in_any_case_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from gridwatch.settings import Settings

    monkeypatch.setenv("GRIDWATCH_LOG_LEVEL", "warning")
    assert Settings(_env_file=None).log_level == "WARNING"
    monkeypatch.setenv("GRIDWATCH_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        Settings(_env_file=None)
