"""NATS JWTs as the door's auth callout signs and reads them (llmaas.natsjwt)."""

from __future__ import annotations

import base64
import os
import time

import msgspec
import nkeys
import pytest

from llmaas import natsjwt


def account() -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)))


def test_a_token_reads_back_with_its_claims_once_its_signature_is_checked() -> None:
    signer = account()
    claims = natsjwt.user(
        "UAUSER",
        name="key1",
        account="TENANTS",
        publish=["llmaas.door.key1.>"],
        subscribe=["_INBOX_key1.>"],
        expires_at=int(time.time()) + 60,
        max_subscriptions=8,
        max_payload=1024,
    )
    token = natsjwt.encode(claims, signer)
    header = msgspec.json.decode(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    read = natsjwt.decode(token, issuer=signer.public_key.decode())
    assert read["nats"]["pub"] == {"allow": ["llmaas.door.key1.>"]} and read["aud"] == "TENANTS"
    assert read["iss"] == signer.public_key.decode() and len(read["jti"]) == 52


def test_a_forged_altered_expired_or_foreign_token_is_refused() -> None:
    signer, other = account(), account()
    token = natsjwt.encode({"sub": "x", "exp": int(time.time()) + 60}, signer)
    head, body, signature = token.split(".")
    widened = base64.urlsafe_b64encode(msgspec.json.encode({**natsjwt.decode(token), "sub": "y"})).rstrip(
        b"="
    )
    for bad in (
        f"{head}.{widened.decode()}.{signature}",  # claims changed after signing
        f"{head}.{body}.{signature[:-4]}AAAA",  # signature changed
        "not.a.jwt",
        "",
    ):
        with pytest.raises(natsjwt.InvalidToken):
            natsjwt.decode(bad)
    with pytest.raises(natsjwt.InvalidToken, match="someone else"):
        natsjwt.decode(token, issuer=other.public_key.decode())
    with pytest.raises(natsjwt.InvalidToken, match="expired"):
        natsjwt.decode(natsjwt.encode({"sub": "x", "exp": int(time.time()) - 1}, signer))
