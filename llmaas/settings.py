"""Typed settings shared by every service; each service's own settings extend ``ServiceSettings``.

Environment variables (``LLMAAS_*``) are read here and in the services' settings modules only.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, FilePath, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _default_data_dir() -> Path:
    """``~/.local/share/llmaas``; for root ``/var/lib/llmaas``, where the account metering drops to
    can go (root's home is root's only), unless an earlier version left its data in root's home."""
    home = Path("~/.local/share/llmaas").expanduser()
    return Path("/var/lib/llmaas") if os.geteuid() == 0 and not home.exists() else home


DEFAULT_DATA_DIR = _default_data_dir()
DEFAULT_EDGE_URL = "http://127.0.0.1:8000"
INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"
"""Operators' data (tiers, prices, catalog, schemas) shipped beside the code."""


class ServiceSettings(BaseSettings):
    """What every component needs: where NATS is, how to log, where to expose metrics."""

    model_config = SettingsConfigDict(env_prefix="LLMAAS_", extra="ignore", frozen=True)

    nats_url: str = Field(
        default=DEFAULT_NATS_URL, description="one URL, or several separated by commas (a cluster's nodes)"
    )
    nats_credentials: FilePath | None = Field(
        default=None, description="the nkey seed file of this service's NATS identity (mode 0600)"
    )
    nats_tls_ca: FilePath | None = Field(
        default=None, description="the CA that signed the NATS servers' certificates (TLS 1.3)"
    )
    nats_tls_cert: FilePath | None = Field(
        default=None, description="with mutual TLS: the certificate this service presents to NATS"
    )
    nats_tls_key: FilePath | None = Field(default=None, description="that certificate's private key")
    nats_replicas: int = Field(
        default=1, ge=1, le=5, description="copies of every stream and bucket: 1 on one node, 3 on a cluster"
    )
    hop_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="how long a stage waits for the next one to take a job (nobody there: at once)",
    )
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 disables the metrics endpoint")
    metrics_host: str = "127.0.0.1"


class OperatorSettings(BaseSettings):
    """What the administration CLI and ``llmaas up`` take from the environment."""

    model_config = SettingsConfigDict(env_prefix="LLMAAS_", extra="ignore", frozen=True)

    url: str = Field(default=DEFAULT_EDGE_URL, description="the edge the CLI talks to")
    ca_file: Path | None = Field(
        default=None, description="the CA of the edge's certificate (else <data-dir>/tls/ca.pem, if any)"
    )
    admin_token: SecretStr | None = Field(default=None, description="else <data-dir>/admin-token")
