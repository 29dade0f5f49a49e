"""A private CA made by the test, and the certificates the estate's servers and clients
present: a server certificate for 127.0.0.1 only (so `localhost`, which reaches the same
server, is a host name that does not match) and a client certificate."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_IP = "127.0.0.1"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of the above

    def own(self, uid: int, gid: int) -> None:
        """Hand the server's files to the user a server runs as (Postgres refuses a key
        file others can read, and cannot read root's)."""
        for path in (self.ca, self.server_cert, self.server_key):
            os.chown(path, uid, gid)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.now(UTC) - timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = _cert(name, key, None, key, [
        (x509.BasicConstraints(ca=True, path_length=None), True), (usage, True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ])  # fmt: skip
    return cert, key


def _leaf(
    name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        (x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        ), False),
    ]  # fmt: skip
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(SERVER_IP))])
        extensions.append((san, False))
    return _cert(name, key, ca, ca_key, extensions), key


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    ca, ca_key = _ca("paygate test CA")
    other, _ = _ca("some other CA")
    server, server_key = _leaf(SERVER_IP, ca, ca_key, server=True)
    client, client_key = _leaf("paygate", ca, ca_key, server=False)

    def cert_pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    def key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    return Certificates(
        ca=_write(directory / "ca.pem", cert_pem(ca)),
        server_cert=_write(directory / "server.pem", cert_pem(server)),
        server_key=_write(directory / "server.key", key_pem(server_key), 0o600),
        client_cert=_write(directory / "client.pem", cert_pem(client)),
        client_key=_write(directory / "client.key", key_pem(client_key), 0o600),
        other_ca=_write(directory / "other-ca.pem", cert_pem(other)),
    )
