"""Settings of an edge process."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from llmaas import catalog, pricing, tenants, tiers
from llmaas.settings import ServiceSettings


class EdgeSettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    accept_timeout_s: float = Field(
        default=10.0, gt=0, description="how long a job may wait for a worker to accept it before a 503"
    )
    idle_timeout_s: float = Field(
        default=300.0, gt=0, description="longest silence from a worker in the middle of an answer"
    )
    watchdog_interval_s: float = Field(default=0.25, gt=0)
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a connection must send a request's headers within this (idle too)"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request's body must arrive within this, plus the time below"
    )
    body_min_rate: float = Field(
        default=65536.0, gt=0, description="bytes/s a long body (a file upload) must keep on average"
    )
    files_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, description="largest file uploaded")
    files_tenant_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="bytes a tenant's stored files may hold together"
    )
    files_tenant_uploads: int = Field(default=2, ge=1, description="uploads of one tenant at once; more: 429")
    files_uploads: int = Field(default=4, ge=1, description="uploads of all tenants at once; more: 503")
    batch_seats: int = Field(default=4, ge=0, description="batch lines this edge runs at once (0: none)")
    batches_per_tenant: int = Field(default=10, ge=1, description="a tenant's batches not ended; more: 429")
    batch_window_s: float | None = Field(
        default=None, gt=0, description="for tests: a batch's completion window instead of its 24 h"
    )
    batch_ack_wait_s: float = Field(
        default=30.0, gt=0, description="a line taken by an edge that died is run again this long after"
    )
    batch_sweep_s: float = Field(default=1.0, gt=0, description="how often batches are looked after")
    batch_line_attempts: int = Field(
        default=5, ge=1, description="runs of a line the platform could not serve (503) before it fails"
    )
    console_session_s: float = Field(
        default=8 * 3600.0, gt=0, le=86400.0, description="a console session ends this long after sign-in"
    )
    max_connections: int = Field(
        default=4096, ge=1, description="open client connections; those beyond are closed at once"
    )
    stream_buffer_frames: int = Field(
        default=4096,
        ge=16,
        description="frames an answer may hold for a client that reads slower than the engine writes; "
        "past them the answer is cancelled in the engine (the client's own, nobody else's)",
    )
    stream_write_timeout_s: float = Field(
        default=30.0, gt=0, description="a client that accepts no byte of its answer this long is cut off"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After when NATS is unreachable")
    admin_token: SecretStr | None = Field(
        default=None, description="enables the admin API (/admin/v1) for callers presenting this token"
    )
    tiers_file: Path = Field(default=tiers.DEFAULT_FILE, description="the billing tiers (TOML)")
    catalog_file: Path = Field(default=catalog.DEFAULT_FILE, description="the model catalog (TOML)")
    prices_file: Path = Field(default=pricing.DEFAULT_FILE, description="the versioned price list (TOML)")
    auth_failures_allowed: int = Field(
        default=20, ge=1, description="failed authentications per address and window before 429s"
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, description="the window of failed authentications, summarized in one audit event"
    )

    billing_key: SecretStr | None = Field(
        default=None,
        description="seals each job (HMAC) so that metering can bill a worker's record of it if this "
        "edge dies mid-answer; the same key as metering's",
    )
    door_url: str | None = Field(
        default=None,
        description="the NATS door's server (llmaas.nats_door), where tenants run batches over NATS "
        "with their API keys; unset: no NATS door",
    )
    door_identities: Path | None = Field(
        default=None, description="the NATS door's identities (edge.nk, system.nk, issuer.nk)"
    )
    door_authorized_s: float = Field(
        default=3600.0, gt=0, description="a tenant's NATS connection authenticates again after this"
    )
    tls_cert: FilePath | None = Field(default=None, description="serve HTTPS (TLS 1.3 only) with this cert")
    tls_key: FilePath | None = Field(default=None, description="the certificate's private key")

    @model_validator(mode="after")
    def _tls_pair(self) -> EdgeSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HTTPS needs both --tls-cert and --tls-key (LLMAAS_TLS_CERT, LLMAAS_TLS_KEY)")
        if (self.door_url is None) != (self.door_identities is None):
            raise ValueError("the NATS door needs both --door-url and --door-identities")
        return self

    @field_validator("admin_token")
    @classmethod
    def _strong(cls, token: SecretStr | None) -> SecretStr | None:
        weakness = tenants.admin_token_weakness(token.get_secret_value()) if token else None
        if weakness:
            raise ValueError(f"the admin token is too weak ({weakness}); `llmaas up` mints a strong one")
        return token

    startup_wait_s: float = Field(
        default=10.0, ge=0, description="at start, how long to wait for NATS before serving (with 503s)"
    )
    drain_s: float = Field(
        default=10.0,
        ge=0,
        description="on SIGTERM, how long answers in progress may finish; the rest end with an error event",
    )
    in_flight_lease_s: float = Field(
        default=30.0,
        ge=0.5,
        le=120.0,
        description="requests in flight per key are leases of this period: what a killed edge held is "
        "released within two periods",
    )
    default_reserved_tokens: int = Field(
        default=4096,
        ge=1,
        description="without max_tokens: the longest answer (or the model's context, if smaller), "
        "reserved in full against the output-token limits and the budget",
    )
