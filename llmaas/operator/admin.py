"""The administrator's side of the admin API: the admin token, and a small client for the CLI.

The admin token is what ``llmaas up`` creates on its first start (``<data-dir>/admin-token``, mode
0600) unless ``LLMAAS_ADMIN_TOKEN`` sets it (``OperatorSettings``); the CLI finds it the same way.
"""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from llmaas import private, tls
from llmaas.settings import OperatorSettings
from llmaas.tenants import ADMIN_TOKEN_MIN_LENGTH, admin_token_weakness, mint_admin_token

TOKEN_FILE = "admin-token"


class AdminError(Exception):
    """The admin API refused or could not be reached; the message is for the operator."""


def token_file(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def _known(data_dir: Path, explicit: SecretStr | None) -> str | None:
    if explicit is not None:
        return explicit.get_secret_value()
    path = token_file(data_dir)
    return path.read_text().strip() if path.exists() else None


def ensure_token(data_dir: Path, explicit: SecretStr | None) -> tuple[str, bool]:
    """The admin token (``explicit``, else the data dir's), creating it once: (token, created)."""
    token = _known(data_dir, explicit)
    if token:
        weakness = admin_token_weakness(token)
        if weakness:
            raise AdminError(
                f"The admin token is too weak ({weakness}): unset LLMAAS_ADMIN_TOKEN (and remove "
                f"{token_file(data_dir)}) to have a strong one minted, or choose one of at least "
                f"{ADMIN_TOKEN_MIN_LENGTH} random characters."
            )
        return token, False
    token = mint_admin_token()
    private.create(token_file(data_dir), (token + "\n").encode())
    return token, True


def find_token(data_dir: Path, explicit: SecretStr | None) -> str:
    """The admin token (``explicit``, else the data dir's); raises AdminError if there is none."""
    token = _known(data_dir, explicit)
    if not token:
        raise AdminError(
            f"No admin token: set LLMAAS_ADMIN_TOKEN, or run `llmaas up` once "
            f"(it writes {token_file(data_dir)})."
        )
    return token


def edge_address(url: str | None, data_dir: Path, settings: OperatorSettings) -> tuple[str, Path | None]:
    """The edge to call and the CA to trust: as given, else as ``llmaas up --tls`` left them (its
    CA in the data dir, and then HTTPS on the default address)."""
    local_ca = data_dir / "tls" / "ca.pem"
    ca = settings.ca_file or (local_ca if local_ca.exists() else None)
    if url is None:
        url = settings.url
        if "url" not in settings.model_fields_set and ca is not None:
            url = url.replace("http://", "https://", 1)
    return url, ca


class AdminClient:
    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 10.0,
        prefix: str = "/admin/v1",
        ca: Path | None = None,
    ) -> None:
        """``prefix``: the admin API; ``/v1`` to call the tenants' API with an API key as ``token``;
        ``ca``: the CA of the edge's certificate (else the system's)."""
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.prefix = prefix
        self._context = tls.client_context(ca) if self.url.startswith("https://") else None

    def open(
        self,
        path: str,
        *,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """The edge's response to ``path`` (under the prefix) as a file to read (and close); its
        error as an AdminError. ``data``: bytes, or an iterable of them (with a content-length)."""
        request = urllib.request.Request(
            f"{self.url}{self.prefix}{path}",
            data=data,
            method=method,
            headers={"authorization": f"Bearer {self.token}", **(headers or {})},
        )
        try:
            return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s, context=self._context)
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{exc.code}: {message(exc.read())}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise AdminError(
                f"cannot reach the edge at {self.url} ({exc}); is `llmaas up` running?"
            ) from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json", "x-llmaas-operator": getpass.getuser()}
        with self.open(path, method=method, data=data, headers=headers) as response:
            try:
                return json.loads(response.read() or b"null")
            except (TimeoutError, ConnectionError) as exc:
                raise AdminError(f"the edge at {self.url} stopped answering ({exc})") from None


def message(raw: bytes) -> str:
    try:
        error = json.loads(raw)["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")[:300]
