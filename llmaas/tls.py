"""TLS 1.3 on every hop: the contexts the edge and the NATS clients use, and the local certificate
authority ``llmaas up --tls`` makes for the embedded default.

In production the operator's PKI issues the certificates (``--tls-cert``/``--tls-key`` for the edge,
the same files in nats-server's ``tls`` block, ``LLMAAS_NATS_TLS_CA`` for the services). For one
machine, ``local_pki`` makes once, under ``<data-dir>/tls``: a CA (EC P-256, 10 years) and a server
certificate it signs (1 year, for localhost, 127.0.0.1, ::1 and this host's name), and a client
certificate the services present when NATS asks for one (mutual TLS, ``llmaas up --tls --mtls``);
keys mode 0600. A certificate that expires within 30 days, or does not name this host, is issued
again by the CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmaas import private

MINIMUM = ssl.TLSVersion.TLSv1_3
_RENEW_BEFORE = dt.timedelta(days=30)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """What a listener offers: TLS 1.3 only (1.2 and below refused at the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM
    context.load_cert_chain(cert, key)
    return context


def client_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """What a client accepts: TLS 1.3, a certificate from ``ca`` (else the system's) for the host;
    with ``cert`` and ``key``, what it presents when the server asks (mutual TLS)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = MINIMUM
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class LocalPki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def local_pki(data_dir: Path) -> LocalPki:
    """The data dir's CA and server certificate, made (or renewed) as needed."""
    root = data_dir / "tls"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = LocalPki(
        ca=root / "ca.pem",
        cert=root / "server.pem",
        key=root / "server.key",
        client_cert=root / "client.pem",
        client_key=root / "client.key",
    )
    ca_key_file = root / "ca.key"
    if not (pki.ca.exists() and ca_key_file.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write_key(ca_key_file, ca_key)
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_file, key_file in ((pki.cert, pki.key), (pki.client_cert, pki.client_key)):
        if _needs_issuing(cert_file):
            signer = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
            if not isinstance(signer, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{ca_key_file}: not the EC key llmaas made")
            ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
            key = ec.generate_private_key(ec.SECP256R1())
            _write_key(key_file, key)
            issued = _server_certificate(key, signer, ca_cert)
            cert_file.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    return pki


def _names() -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    host = socket.gethostname()
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    return names


def _common_name() -> str:
    return socket.gethostname() or "localhost"


def _needs_issuing(cert_file: Path) -> bool:
    if not cert_file.exists():
        return True
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE:
        return True
    named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return any(name not in named for name in _names())


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"llmaas local CA ({socket.gethostname()})")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def _server_certificate(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name())]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(_names()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private.replace(path, pem)
