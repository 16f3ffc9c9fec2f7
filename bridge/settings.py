"""All configuration: environment (``BRIDGE_*``, nested with ``__``) over an optional TOML file.

``config/bridge.example.toml`` documents every setting. Nothing is read at import time:
``load_settings`` is called by the composition root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bridge.domain.errors import Terminal
from bridge.logging import resolve_format
from bridge.webhooks.settings import WebhooksSettings
from connectors.file import FileSinkSettings
from connectors.keygen import KeygenSettings
from connectors.lago import LagoSinkSettings
from connectors.m3ter import M3terSinkSettings


class ConfigFileMissing(Exception, Terminal):
    """``BRIDGE_CONFIG`` or ``--config`` names a file that does not exist."""


class SinksSettings(BaseModel):
    """The platforms usage changes are forwarded to, one table each in the TOML file."""

    file: FileSinkSettings = FileSinkSettings()
    lago: LagoSinkSettings = LagoSinkSettings()
    m3ter: M3terSinkSettings = M3terSinkSettings()


class RelaySettings(BaseModel):
    """The outbox relay (``serve`` runs one; ``meterbridge worker`` runs one alone)."""

    batch_size: int = Field(100, ge=1, le=10_000, description="Items per delivery")
    lease_s: float = Field(60.0, gt=0, description="How long a claimed batch is held")
    retry_base_s: float = Field(1.0, gt=0, description="First retry delay ceiling")
    retry_cap_s: float = Field(300.0, gt=0, description="Largest retry delay")
    retry_horizon_s: float = Field(
        7 * 86400.0, gt=0, description="Past this age an item is dead-lettered, not retried"
    )
    idle_s: float = Field(0.5, gt=0, description="Pause when there is nothing to deliver")
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failed batches that pause a sink (circuit open)"
    )
    breaker_cooldown_s: float = Field(30.0, gt=0, description="How long an open circuit waits")
    stop_timeout_s: float = Field(
        8.0,
        gt=0,
        description=(
            "On SIGTERM, how long the batch in flight may take to finish; then it is handed "
            "back (due again at once)"
        ),
    )


class SchedulerSettings(BaseModel):
    """The scheduled jobs (``serve`` runs them unless disabled; ``meterbridge scheduler`` too)."""

    enabled: bool = Field(True, description="Run the scheduler inside serve")
    close_interval_s: float = Field(
        60.0, gt=0, description="How often ended usage periods of idle licenses are closed"
    )
    close_batch: int = Field(5000, ge=1, le=50_000, description="Licenses per transaction")
    close_workers: int = Field(
        4, ge=1, le=32, description="Transactions at a time on PostgreSQL (SQLite: 1)"
    )
    reconcile_cron: str = Field(
        "30 2 * * *", description="When the daily reconciliation runs (crontab, UTC)"
    )
    reconcile_lookback_days: int = Field(
        3, ge=1, le=400, description="The daily run reconciles periods that ended this recently"
    )

    idempotency_retention_days: int = Field(
        30, ge=1, le=3650, description="How long an Idempotency-Key's answer is kept"
    )
    purge_cron: str = Field(
        "15 3 * * *", description="When old Idempotency-Key answers are deleted (crontab, UTC)"
    )

    @field_validator("reconcile_cron", "purge_cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value)  # raises ValueError with the reason
        return value


class MachinesSettings(BaseModel):
    """Machine activations: how often dead machines (overdue heartbeat) are deactivated."""

    reap_interval_s: float = Field(
        60.0, gt=0, description="Seconds between two sweeps for machines with an overdue heartbeat"
    )


class RetentionSettings(BaseModel):
    """How long delivered outbox items and handled webhook deliveries are kept (the ledger and
    the period records are kept for ever). Purged daily at ``scheduler.purge_cron``."""

    outbox_days: float = Field(
        35.0,
        ge=1,
        description="Delivered outbox items older than this (and than their platform's dedupe "
        "window, inside which a repair resends them) are deleted",
    )
    webhook_days: float = Field(
        30.0, ge=1, description="Applied or ignored webhook deliveries older than this go"
    )
    batch: int = Field(
        5000, ge=100, le=100_000, description="Rows per purge transaction (short locks)"
    )


class MetricsSettings(BaseModel):
    """Prometheus metrics (``/metrics``): on the API for the admin token, or on a port of
    their own without authentication (bind it where only the scraper reaches it)."""

    enabled: bool = Field(True, description="Serve /metrics")
    port: int | None = Field(
        None, ge=1, le=65535, description="Serve them on this port instead of the API's"
    )
    host: str = Field("127.0.0.1", description="Address of the metrics port")


class CheckInSettings(BaseModel):
    """Check-ins and the offline usage records they carry."""

    future_tolerance_s: int = Field(
        300,
        ge=0,
        le=86_400,
        description="How far ahead of the server's clock an offline usage record may be dated "
        "(a client clock running fast); later ones are refused as USAGE_RECORD_IN_FUTURE",
    )


class SigningSettings(BaseModel):
    """The account's Ed25519 key that signs every response (see ``bridge/keys.py``)."""

    key: SecretStr | None = Field(
        None, description="Private key, 64 hex digits; when unset the key file is used"
    )
    key_file: Path | None = Field(
        None,
        description="Key file (hex, mode 0600); default meterbridge-signing.key beside the "
        "SQLite database, or in the working directory for PostgreSQL",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = Field(
        "sqlite:///./meterbridge.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    admin_token: SecretStr | None = Field(
        None, description="Admin bearer token; when unset, the first serve creates one"
    )
    account: str = Field("default", description="Account id accepted in /v1/accounts/{account}")
    host: str = Field("127.0.0.1", description="Address the API listens on")
    port: int = Field(8080, ge=1, le=65535, description="Port the API listens on")
    public_host: str | None = Field(
        None,
        description="Host (with its port, if not the default) that clients use, when a proxy "
        "stands in front; responses are signed over it instead of the Host header received",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: readable lines on a terminal, JSON lines otherwise"
    )
    access_log: bool | None = Field(
        None,
        description="Log one request_completed line per HTTP request (method, path, status, "
        "ms); unset: on with console logs, off with JSON logs",
    )
    db_pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL connections per process")
    db_pool_timeout_s: float = Field(
        10.0, gt=0, le=300, description="How long a request waits for a free connection (503)"
    )
    sqlite_cache_mib: int = Field(
        256, ge=16, le=65_536, description="SQLite page cache of the whole pool, per process"
    )
    sinks: SinksSettings = SinksSettings()
    relay: RelaySettings = RelaySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    machines: MachinesSettings = MachinesSettings()
    checkin: CheckInSettings = CheckInSettings()
    signing: SigningSettings = SigningSettings()
    metrics: MetricsSettings = MetricsSettings()
    retention: RetentionSettings = RetentionSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    keygen: KeygenSettings = KeygenSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def access_log_on(settings: Settings) -> bool:
    """Whether the API logs a line per request (``access_log``, else by the log format)."""
    if settings.access_log is not None:
        return settings.access_log
    return resolve_format(settings.log_format) == "console"


def load_settings(config: Path | str | None = None, **overrides: object) -> Settings:
    """Settings from the environment over ``config`` (or ``$BRIDGE_CONFIG``), if any."""
    path = config or os.environ.get("BRIDGE_CONFIG") or None
    if path is not None and not Path(path).is_file():
        raise ConfigFileMissing(f"configuration file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    return _FromFile(**overrides)  # type: ignore[arg-type]
