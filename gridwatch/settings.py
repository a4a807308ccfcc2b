"""Process settings from ``GRIDWATCH_*`` environment variables (and an optional ``.env``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SAMPLE_SITE = Path(__file__).parent / "sites" / "sample.yaml"


class Settings(BaseSettings):
    """Where the services are and what the site is. An unset URL means "start an embedded one"."""

    model_config = SettingsConfigDict(env_prefix="GRIDWATCH_", env_file=".env", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL/TimescaleDB URL, e.g. postgresql://u:p@host/db"
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, host:port[,host:port]"
    )
    mqtt_url: str | None = Field(default=None, description="mqtt://[user:pass@]host:port")
    mqtt_password: SecretStr | None = Field(default=None, description="MQTT password, if any")
    site: Path = Field(default=SAMPLE_SITE, description="the site file (YAML)")
    topic_partitions: int = Field(default=1, ge=1, description="partitions of created topics")
    evidence_dir: Path = Field(default=Path("evidence"), description="snapshot store")
    liveness_dir: Path = Field(
        default=Path("liveness"), description="the roles' heartbeat files (gridwatch health)"
    )
    run_dir: Path | None = Field(default=None, description="where embedded services keep data")
