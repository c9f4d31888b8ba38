"""NATS JWTs: what nats-server and an auth callout service exchange (ADR-26), signed with nkeys.

A NATS JWT is a standard JWT whose algorithm is ``ed25519-nkey``: header and claims base64url
(unpadded) JSON, the signature ed25519 over ``header.claims`` by the issuer's nkey, ``jti`` the
base32 SHA-512/256 of the claims. Only the two claim sets the door needs are built here: the user
(what a tenant's connection may do) and the authorization response that carries it.

Written on ``nkeys`` (nats-py's own signing library) and PyNaCl, which it uses for ed25519: the
Python NATS JWT packages on PyPI are single-author and unmaintained.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import msgspec
import nacl.exceptions
import nacl.signing
import nkeys

_HEADER = b'{"typ":"JWT","alg":"ed25519-nkey"}'


class InvalidToken(ValueError):
    """Not a NATS JWT, not signed by its issuer, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The ed25519 key inside an nkey public key (base32: prefix byte, 32 key bytes, CRC16)."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except ValueError:
        raise InvalidToken("the issuer is not an nkey") from None
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise InvalidToken("the issuer is not an nkey")
    if nkeys.crc16(bytearray(raw[:33])) != int.from_bytes(raw[33:], "little"):
        raise InvalidToken("the issuer's checksum is wrong")
    return nacl.signing.VerifyKey(raw[1:33])


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """``claims`` signed by ``signer`` (its public key becomes ``iss``), with ``iat`` and ``jti``."""
    body = {**claims, "iss": signer.public_key.decode(), "iat": int(time.time()), "jti": ""}
    body["jti"] = base64.b32encode(hashlib.new("sha512_256", msgspec.json.encode(body)).digest()).decode()
    body["jti"] = body["jti"].rstrip("=")
    signed = f"{_b64(_HEADER)}.{_b64(msgspec.json.encode(body))}"
    return f"{signed}.{_b64(signer.sign(signed.encode()))}"


def decode(token: str, issuer: str | None = None) -> dict[str, Any]:
    """The claims of ``token`` once its signature by its ``iss`` (which must be ``issuer`` when
    given) is checked, and it is not expired; raises InvalidToken."""
    try:
        header, payload, signature = token.split(".")
        claims = msgspec.json.decode(_unb64(payload))
        if not isinstance(claims, dict) or msgspec.json.decode(_unb64(header)).get("alg") != "ed25519-nkey":
            raise InvalidToken("not a NATS JWT")
        signer = claims.get("iss")
        if not isinstance(signer, str) or (issuer is not None and signer != issuer):
            raise InvalidToken("issued by someone else")
        _verify_key(signer).verify(f"{header}.{payload}".encode(), _unb64(signature))
    except (ValueError, msgspec.DecodeError, nacl.exceptions.BadSignatureError, AttributeError) as exc:
        if isinstance(exc, InvalidToken):
            raise
        raise InvalidToken(f"not a valid NATS JWT ({type(exc).__name__})") from None
    expires = claims.get("exp")
    if isinstance(expires, int) and expires < time.time():
        raise InvalidToken("expired")
    return claims


def user(
    user_nkey: str,
    *,
    name: str,
    account: str,
    publish: list[str],
    subscribe: list[str],
    expires_at: int,
    max_subscriptions: int,
    max_payload: int,
) -> dict[str, Any]:
    """The claims of a user JWT: who (``name`` shows in the server's connection lists), in which
    account, allowed to publish and subscribe to what, until when."""
    return {
        "sub": user_nkey,
        "name": name,
        "aud": account,
        "exp": expires_at,
        "nats": {
            "pub": {"allow": publish},
            "sub": {"allow": subscribe},
            "subs": max_subscriptions,
            "data": -1,
            "payload": max_payload,
            "type": "user",
            "version": 2,
        },
    }


def authorization_response(
    user_nkey: str, server_id: str, *, user_jwt: str | None = None, error: str | None = None
) -> dict[str, Any]:
    """The claims answering an authorization request: the user JWT, or why the client is refused."""
    answer: dict[str, Any] = {"jwt": user_jwt} if user_jwt is not None else {"error": error or "refused"}
    return {
        "sub": user_nkey,
        "aud": server_id,
        "nats": {**answer, "type": "authorization_response", "version": 2},
    }
