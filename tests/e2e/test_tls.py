"""TLS 1.3 on every hop of `llmaas up --tls`: the edge and NATS refuse TLS 1.2 from a real client,
the CLI trusts the local CA from the data dir, the openai SDK works given the CA file, and the
services reach NATS over mutual TLS (``--mtls``) with their own identities."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import nats.errors
import openai
import pytest

from llmaas import identities, tls
from tests.conftest import CHAT
from tests.e2e.test_up import nats_port
from tests.stack import cli, key_from, running_up


def handshake(port: int, version: ssl.TLSVersion, ca: Path) -> str:
    """The TLS version agreed with 127.0.0.1:port by a client offering only ``version``."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as secure,
    ):
        return str(secure.version())


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    data = tmp_path_factory.mktemp("tls")
    with running_up(data, "--tls", "--mtls") as (_, port):
        yield data, port


def test_the_edge_speaks_tls_1_3_only(secure: tuple[Path, int]) -> None:
    data, port = secure
    ca = data / "tls" / "ca.pem"
    assert handshake(port, ssl.TLSVersion.TLSv1_3, ca) == "TLSv1.3"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(port, ssl.TLSVersion.TLSv1_2, ca)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the HTTPS port
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
    # Keys stay the owner's; the CA's certificate is what clients are given.
    keys = ("ca.key", "server.key", "client.key")
    assert all((data / "tls" / name).stat().st_mode & 0o077 == 0 for name in keys)


def test_the_cli_and_the_openai_sdk_work_over_https(secure: tuple[Path, int]) -> None:
    data, port = secure
    where = ["--url", f"https://127.0.0.1:{port}", "--data-dir", str(data)]
    cli("tenants", "create", "secure", "--tier", "tier1", *where)
    key = key_from(cli("keys", "create", "--tenant", "secure", *where))
    ca = str(data / "tls" / "ca.pem")
    with httpx.Client(verify=tls.client_context(Path(ca))) as http:
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key=key, http_client=http)
        answer = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    # As the README says: the openai SDK with the CA in SSL_CERT_FILE, and the CLI finding the CA
    # in the data dir by itself.
    script = (
        "import openai, sys; c = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2]); "
        f"print(c.chat.completions.create(model='{CHAT}', messages=[{{'role': 'user', 'content': 'hi'}}])"
        ".choices[0].message.content)"
    )
    env = {**os.environ, "SSL_CERT_FILE": ca}
    run = subprocess.run(
        [sys.executable, "-c", script, f"https://127.0.0.1:{port}/v1", key],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip(), run.stderr[-2000:]
    assert "secure" in cli("tenants", "list", *where)


def test_nats_takes_tls_1_3_with_an_identity_and_nothing_less(secure: tuple[Path, int]) -> None:
    data, _ = secure
    url = f"tls://127.0.0.1:{nats_port(data)}"
    ca = data / "tls" / "ca.pem"
    seed = data / "nats" / "identities" / "operator.nk"
    inbox = identities.inbox_prefix(identities.public_key(seed))

    async def connect(context: ssl.SSLContext) -> bool:
        nc = await nats.connect(
            url, tls=context, nkeys_seed=str(seed), inbox_prefix=inbox,
            allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
        )  # fmt: skip
        connected = nc.is_connected
        await nc.close()
        return connected

    client = (data / "tls" / "client.pem", data / "tls" / "client.key")
    assert asyncio.run(connect(tls.client_context(ca, *client)))
    # Mutual: the right CA and identity, but no certificate of our own, is not enough.
    with pytest.raises((ssl.SSLError, nats.errors.Error, ConnectionError)):
        asyncio.run(connect(tls.client_context(ca)))
    old = ssl.create_default_context(cafile=str(ca))
    old.load_cert_chain(*client)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        asyncio.run(connect(old))
    # A client that does not know the local CA cannot be fooled into trusting the server either way.
    with pytest.raises(ssl.SSLError):
        asyncio.run(connect(ssl.create_default_context()))
    config = (data / "nats" / "nats-server.conf").read_text()
    assert 'min_version: "1.3"' in config and "verify: true" in config
