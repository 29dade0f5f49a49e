"""A private CA for PayPal tests: a root, a signing certificate issued to a paypal.com
name (what PAYPAL-CERT-URL serves) and a TLS certificate for 127.0.0.1, all made here,
so the certificate check runs end to end without the internet; and `cert_server`, the
https server standing in for PayPal's certificate host, which counts what it serves."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from aiohttp import web
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
    san: x509.GeneralName | list[x509.GeneralName] | None = None,
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
        names = san if isinstance(san, list) else [san]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
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
        """A certificate and key for a local https server on 127.0.0.1 / localhost (PEM)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        cert = _issue("127.0.0.1", key, self.root, self.root_key, ca=False, san=names)
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


@dataclass
class CertServer:
    """What the certificate host saw: every path fetched, how many at once at most; it
    answers 404 for names starting with "missing", and holds answers while `hold` is set."""

    host: str  # host:port
    ca_file: str
    served: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_at_once: int = 0
    hold: asyncio.Event | None = None


@asynccontextmanager
async def cert_server(directory: Path) -> AsyncIterator[CertServer]:
    from workers.cli.devstack import free_port

    ca = private_ca()
    cert_pem, key_pem = ca.tls_pair()
    (directory / "tls.pem").write_bytes(cert_pem)
    (directory / "tls.key").write_bytes(key_pem)
    (directory / "ca.pem").write_bytes(pem(ca.root))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "tls.pem", directory / "tls.key")
    port = free_port()
    state = CertServer(f"127.0.0.1:{port}", str(directory / "ca.pem"))

    async def cert(request: web.Request) -> web.Response:
        state.served.append(request.path)
        state.in_flight += 1
        state.most_at_once = max(state.most_at_once, state.in_flight)
        try:
            if state.hold is not None:
                await state.hold.wait()
        finally:
            state.in_flight -= 1
        if request.match_info["name"].startswith("missing"):
            raise web.HTTPNotFound()
        return web.Response(body=pem(ca.signing), content_type="application/x-pem-file")

    app = web.Application()
    app.router.add_get("/v1/notifications/certs/{name}", cert)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield state
    finally:
        await runner.cleanup()
