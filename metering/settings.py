"""Settings of a metering process."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from llmaas import catalog, pricing
from llmaas.settings import DEFAULT_DATA_DIR, ServiceSettings


class MeteringSettings(ServiceSettings):
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="the embedded chDB lives in <data-dir>/clickhouse"
    )
    clickhouse_url: SecretStr | None = Field(
        default=None,
        description="a ClickHouse server (http://user:password@host:8123) instead of the embedded chDB",
    )
    clickhouse_key: SecretStr | None = Field(
        default=None,
        description="chDB's AES-256 key (64 hex digits); else <data-dir>/clickhouse.key, made once (0600)",
    )
    billing_key: SecretStr | None = Field(
        default=None, description="the edges' seal key: workers' records of sealed jobs billed if no edge did"
    )
    metering_alerts_every_s: float = Field(
        default=30.0, gt=0, description="how often tenants' alert rules are evaluated"
    )
    metering_orphan_grace_s: float = Field(
        default=120.0,
        gt=0,
        description="a worker's record is billed if no usage event of its request arrived this long after",
    )
    metering_user: str | None = Field(
        default=None,
        description="started as root, run as this account (name or uid) once the credentials are read: "
        "tenants' SQL runs in this process",
    )
    metering_encrypt: bool = Field(default=True, description="chDB's tables on an AES-256 encrypted disk")
    clickhouse_database: str = Field(default="llmaas", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    metering_batch_size: int = Field(default=5000, ge=1, description="events per insert, at most")
    metering_batch_wait_s: float = Field(default=1.0, gt=0, description="longest wait to fill a batch")
    metering_ack_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="JetStream redelivers an event not acknowledged this long after delivery",
    )
    metering_query_timeout_s: float = Field(default=20.0, gt=0, description="longest report query")
    metering_tenant_query_timeout_s: float = Field(
        default=5.0, gt=0, description="longest report query of a tenant (an administrator's: the above)"
    )
    metering_report_threads: int = Field(
        default=3,
        ge=1,
        le=32,
        description="report queries answered at once (beside ingestion, never in its way)",
    )
    metering_tenant_queued_queries: int = Field(
        default=8, ge=1, description="a tenant's report queries waiting behind its running one; more: 429"
    )
    metering_max_result_rows: int = Field(default=10_000, ge=1, description="rows a report query may return")
    prices_file: Path = Field(default=pricing.DEFAULT_FILE, description="the versioned price list (TOML)")
    catalog_file: Path = Field(
        default=catalog.DEFAULT_FILE, description="the model catalog (energy per model)"
    )
    metering_fault: str = Field(
        default="",
        description="failure injection for the crash tests: 'crash_after_insert' exits the process right "
        "after a usage batch is stored, before its rollups and acknowledgements",
    )
