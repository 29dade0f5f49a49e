"""A private CA for PayPal tests: a root, a signing certificate issued to a paypal.com
name (what PAYPAL-CERT-URL serves) and a TLS certificate for 127.0.0.1, all made here,
so the certificate check runs end to end without the internet."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

SIGNING_NAME = "messageverificationcerts.paypal.com"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    san: x509.GeneralName | None = None,
    days: int = 30,
    start: datetime | None = None,
) -> x509.Certificate:
    start = start or datetime.now(UTC) - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class PrivateCA:
    root: x509.Certificate
    root_key: rsa.RSAPrivateKey
    signing: x509.Certificate
    signing_key: rsa.RSAPrivateKey

    def issue_signing(self, name: str, **kw: object) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _issue(name, key, self.root, self.root_key, ca=False,
                      san=x509.DNSName(name), **kw)  # type: ignore[arg-type]  # fmt: skip
        return cert, key

    def tls_pair(self) -> tuple[bytes, bytes]:
        """A certificate and key for a local https server on 127.0.0.1 (PEM)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _issue("127.0.0.1", key, self.root, self.root_key, ca=False,
                      san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")))  # fmt: skip
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem(cert), key_pem


@cache
def private_ca() -> PrivateCA:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _issue("paygate test root CA", root_key, None, root_key, ca=True, days=60)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing = _issue(SIGNING_NAME, signing_key, root, root_key, ca=False,
                     san=x509.DNSName(SIGNING_NAME))  # fmt: skip
    return PrivateCA(root, root_key, signing, signing_key)
