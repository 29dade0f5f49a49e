"""PayPal's signing certificates: fetched from the URL a delivery names, only from
PayPal's hosts over https, checked, and kept in memory until they expire.

A certificate is trusted when its chain (the PEM PayPal serves, leaf first) leads,
signature by signature, to a trust anchor (the system's CA bundle, or `ca_file`),
every certificate in it is within its validity period, every issuer is a CA, and
the leaf is named for paypal.com (common name or DNS subject alternative name).
Anything else is a 401 `untrusted_certificate`. A fetch that fails for reasons of
the network or of PayPal's server (timeout, 5xx) is a 503: the delivery is
retried, nothing is recorded unverified.

Anyone can name a certificate URL in an unsigned request, so what a URL can cost is
bounded: the scheme checks the transmission time first; the URL is canonicalised
(`check_url`: lower-case scheme and host, no default port, no empty `?` or `#`, a plain
path) so spellings of one URL share one cache entry; only a certificate that checks out
enters the cache (bounded, least recently added out first), and a failed fetch is
remembered for FAILURE_SECONDS and answered again without fetching; a fetch per URL is
shared by the requests that wait for it; at most MAX_CONCURRENT_FETCHES downloads run at
once and MAX_FETCHES_PER_MINUTE start per minute, past which a request is a 503 at once
(fails closed: PayPal retries, and a certificate already cached is not affected).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError, ServiceUnavailable
from gateway.ingest.signatures import SignatureError

# PayPal's live and sandbox API hosts, the ones its PAYPAL-CERT-URL headers name.
PAYPAL_CERT_HOSTS = (
    "api.paypal.com",
    "api-m.paypal.com",
    "api.sandbox.paypal.com",
    "api-m.sandbox.paypal.com",
)
CERT_PATH_PREFIX = "/v1/notifications/certs/"
NAME_SUFFIX = "paypal.com"
MAX_CERT_BYTES = 64 * 1024
MAX_CHAIN = 6
MAX_ENTRIES = 64
FETCH_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 30
FAILURE_SECONDS = 60.0  # a failed fetch is answered from memory this long
MAX_FAILURES = 256
MAX_CONCURRENT_FETCHES = 2  # PayPal signs with one certificate at a time (two in a rotation)
MAX_FETCHES_PER_MINUTE = 10
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._~/-]+$")


def _untrusted(detail: str) -> SignatureError:
    return SignatureError("untrusted_certificate", detail)


def load_anchors(ca_file: str | None) -> tuple[x509.Certificate, ...]:
    """Trust anchors from `ca_file`, or the system CA bundle; ConfigError if none."""
    path = ca_file or ssl.get_default_verify_paths().cafile
    if not path:
        raise ConfigError("no CA bundle found for PayPal certificates: set verify.ca_file")
    try:
        with open(path, "rb") as fh:
            anchors = tuple(x509.load_pem_x509_certificates(fh.read()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA bundle {path}: {exc}") from None
    return anchors


def _names(cert: x509.Certificate) -> list[str]:
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names += san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    return [n.lower().rstrip(".") for n in names]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _current(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def trusted_key(
    pem: bytes, anchors: Sequence[x509.Certificate], now: datetime
) -> tuple[RSAPublicKey, datetime]:
    """The leaf's public key and when it stops being valid; SignatureError otherwise."""
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise _untrusted("the certificate URL did not serve PEM certificates") from None
    if not chain or len(chain) > MAX_CHAIN:
        raise _untrusted("the certificate chain is empty or too long")
    leaf = chain[0]
    if not any(n == NAME_SUFFIX or n.endswith("." + NAME_SUFFIX) for n in _names(leaf)):
        raise _untrusted("the signing certificate is not issued to paypal.com")
    if not all(_current(c, now) for c in chain):
        raise _untrusted("a certificate in the chain is expired or not yet valid")
    expires = min(c.not_valid_after_utc for c in chain)
    current, intermediates = leaf, list(chain[1:])
    for _ in range(MAX_CHAIN):
        anchor = next((a for a in anchors if _issued(current, a)), None)
        if anchor is not None:
            if not _current(anchor, now):
                raise _untrusted("the chain ends in an expired trust anchor")
            expires = min(expires, anchor.not_valid_after_utc)
            break
        issuer = next((c for c in intermediates if _issued(current, c)), None)
        if issuer is None or not _is_ca(issuer):
            raise _untrusted("the signing certificate does not chain to a trusted CA")
        intermediates.remove(issuer)
        current = issuer
    else:
        raise _untrusted("the certificate chain is too long")
    key = leaf.public_key()
    if not isinstance(key, RSAPublicKey):
        raise _untrusted("the signing certificate's key is not RSA")
    return key, expires


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError: not this issuer
        return False
    return True


def check_url(url: str, hosts: frozenset[str]) -> str:
    """The canonical form of an https URL on the allowed hosts, under PayPal's
    certificate path: what is cached and fetched, whatever spelling the header used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _untrusted("PAYPAL-CERT-URL is not a URL") from None
    host = (parts.hostname or "").lower()
    where = host if port in (None, 443) else f"{host}:{port}"
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or where not in hosts
        or not parts.path.startswith(CERT_PATH_PREFIX)
        or not _PLAIN_PATH.match(parts.path)  # no %-escapes: one spelling per path
        or ".." in parts.path
        or "//" in parts.path
    ):
        raise _untrusted("PAYPAL-CERT-URL is not a PayPal certificate URL")
    return f"https://{where}{parts.path}"


class CertificateCache:
    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.anchors = tuple(anchors)
        self.ssl_context = ssl_context
        self.max_entries = max_entries
        self._keys: OrderedDict[str, tuple[RSAPublicKey, datetime]] = OrderedDict()
        self._fetches: dict[str, asyncio.Future[None]] = {}
        self._failures: OrderedDict[str, tuple[Exception, float]] = OrderedDict()
        self._started: deque[float] = deque()  # when the fetches of the last minute began

    def get(self, url: str, now: datetime) -> RSAPublicKey | None:
        entry = self._keys.get(url)
        if entry is None:
            return None
        if entry[1] < now:
            del self._keys[url]
            return None
        return entry[0]

    def add(self, url: str, pem: bytes, now: datetime | None = None) -> None:
        """Check `pem` and keep its key for `url` (what a fetch does; tests pre-seed too)."""
        key, expires = trusted_key(pem, self.anchors, now or datetime.now(UTC))
        self._keys[url] = (key, expires)
        self._keys.move_to_end(url)
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)

    async def fetch(self, url: str) -> None:
        """Download, check and keep the certificate at `url` (canonical: `check_url`),
        once for all who wait; a failure is raised again without a download for
        FAILURE_SECONDS."""
        now = time.monotonic()
        failure = self._failures.get(url)
        if failure is not None:
            if now < failure[1]:
                raise failure[0].with_traceback(None)  # not a traceback per re-raise
            del self._failures[url]
        pending = self._fetches.get(url)
        if pending is None:
            self._admit(now)
            pending = asyncio.ensure_future(self._remember_failure(url))
            self._fetches[url] = pending
            pending.add_done_callback(lambda _: self._fetches.pop(url, None))
        await asyncio.shield(pending)

    def _admit(self, now: float) -> None:
        """Refuse a new download past the bounds at once (503), rather than queue it."""
        while self._started and now - self._started[0] >= 60.0:
            self._started.popleft()
        if len(self._fetches) >= MAX_CONCURRENT_FETCHES:
            raise _unavailable("too many PayPal certificate fetches at once")
        if len(self._started) >= MAX_FETCHES_PER_MINUTE:
            raise _unavailable("too many PayPal certificate fetches this minute")
        self._started.append(now)

    async def _remember_failure(self, url: str) -> None:
        try:
            await self._download(url)
        except (SignatureError, ServiceUnavailable) as exc:
            self._failures[url] = (exc, time.monotonic() + FAILURE_SECONDS)
            while len(self._failures) > MAX_FAILURES:
                self._failures.popitem(last=False)
            raise

    async def _download(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False, ssl=self.ssl_context or True) as resp,
            ):
                if resp.status >= 500 or resp.status == 429:
                    raise _unavailable(f"the certificate host answered HTTP {resp.status}")
                if resp.status != 200:
                    raise _untrusted(f"the certificate URL answered HTTP {resp.status}")
                pem = await resp.content.read(MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError):
            raise _unavailable("the PayPal certificate could not be fetched") from None
        if len(pem) > MAX_CERT_BYTES:
            raise _untrusted("the certificate URL served too much")
        self.add(url, pem)


def _unavailable(detail: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        detail, code="certificate_unavailable", retry_after=RETRY_AFTER_SECONDS
    )
