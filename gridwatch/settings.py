"""Process settings from ``GRIDWATCH_*`` environment variables (and an optional ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SAMPLE_SITE = Path(__file__).parent / "sites" / "sample.yaml"
# Where a streams worker keeps its tables.
TableStore = Literal["memory", "rocksdb"]


class MessageLimits(BaseModel):
    """What the MQTT bridge takes in one message; a larger one is dead-lettered with the limit
    it broke (``GRIDWATCH_MQTT_LIMITS__MAX_BYTES=…``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(default=256 * 1024, ge=1, description="payload size in bytes")
    max_reports: int = Field(default=2000, ge=1, description="device reports in one message")


class ConsumerGroups(BaseModel):
    """How fast a consumer group notices a member gone and hands its partitions to the others
    (``GRIDWATCH_CONSUMER_GROUPS__SESSION_TIMEOUT_S=…``): a killed worker's partitions wait
    about one session timeout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_timeout_s: float = Field(
        default=10.0, gt=0, description="a member silent this long is out of the group"
    )
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, description="how often a member tells the coordinator it lives"
    )
    rebalance_timeout_s: float = Field(
        default=3.0, gt=0, description="how long the members have to rejoin in a rebalance"
    )


class Settings(BaseSettings):
    """Where the services are and what the site is. An unset URL means "start an embedded one"."""

    model_config = SettingsConfigDict(
        env_prefix="GRIDWATCH_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL/TimescaleDB URL, e.g. postgresql://u:p@host/db"
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, host:port[,host:port]"
    )
    mqtt_url: str | None = Field(
        default=None, description="mqtt://[user[:pass]@]host[:1883] or mqtts://…[:8883] (TLS)"
    )
    mqtt_password: SecretStr | None = Field(
        default=None, description="the MQTT user's password, when the URL does not carry it"
    )
    mqtt_ca: Path | None = Field(
        default=None, description="CA certificates (PEM) that sign the broker's; default: system"
    )
    mqtt_cert: Path | None = Field(
        default=None, description="client certificate (PEM), for a broker that requires one"
    )
    mqtt_key: Path | None = Field(
        default=None, description="the client certificate's private key (PEM)"
    )
    reader_password: SecretStr | None = Field(
        default=None, description="password of Grafana's read-only database role"
    )
    mqtt_limits: MessageLimits = Field(
        default_factory=MessageLimits, description="what the bridge takes in one message"
    )
    site: Path = Field(default=SAMPLE_SITE, description="the site file (YAML)")
    topic_partitions: int = Field(
        default=1, ge=1, description="partitions of created topics, Faust's own included"
    )
    consumer_groups: ConsumerGroups = Field(
        default_factory=ConsumerGroups, description="session and rebalance timeouts"
    )
    table_store: TableStore = Field(
        default="memory",
        description="where a streams worker keeps its tables: memory (rebuilt from the"
        " changelog on every start) or rocksdb (on disk under --datadir, so a restart replays"
        " only the changelog written since)",
    )
    streams_one_record_per_batch: bool = Field(
        default=False,
        description="the streams worker sends every record in a produce batch of its own, for a"
        " broker whose end offset counts batches instead of records (the embedded Tansu reports"
        " the last batch's first offset + 1, which a restarted RocksDB store finds behind its"
        " own); costs most of the worker's producer throughput",
    )
    evidence_dir: Path = Field(default=Path("evidence"), description="snapshot store")
    liveness_dir: Path = Field(
        default=Path("liveness"), description="the roles' heartbeat files (gridwatch health)"
    )
    run_dir: Path | None = Field(default=None, description="where embedded services keep data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="the least severe log lines a role writes (to stderr)"
    )
    # The closed loop's doors: where the callback API listens, and the CAP signing identity.
    callback_host: str = Field(
        default="127.0.0.1", description="address the status callback API binds to"
    )
    callback_tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) the callback API serves HTTPS with"
    )
    callback_tls_key: Path | None = Field(default=None, description="its PEM private key")
    cap_signing_key: Path | None = Field(
        default=None, description="PEM private key (RSA or EC) that signs every CAP message"
    )
    cap_signing_cert: Path | None = Field(
        default=None, description="PEM certificate of that key, sent in each signature"
    )
    # The duty officer's console: where it listens, and the address operators and Grafana's
    # links reach it at (https://… makes its cookies Secure, as behind a TLS proxy).
    console_host: str = Field(default="127.0.0.1", description="address the console binds to")
    console_url: str | None = Field(
        default=None, description="the console's public base URL, e.g. https://console.example"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """``info`` names the level as well as ``INFO``."""
        return value.upper() if isinstance(value, str) else value
