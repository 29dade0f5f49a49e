"""Every signature scheme a channel can name, built with the channel's `[verify]`
options and its secrets decoded the way the provider means them.

An unknown scheme, an option a scheme does not take, or a required option left out
(Square's notification URL, PayPal's webhook id) stops start-up with the channel
and key named: nothing is discovered at request time, and no scheme has an
unverified mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.ingest.schemes import adyen, hmac_hex, paddle, paypal, square
from gateway.ingest.signatures import SCHEMES, Scheme, decode_secret

Fail = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class SchemeSpec:
    build: Callable[[Mapping[str, Any], Fail], Scheme]
    decode: Callable[[str], bytes]
    uses_secrets: bool = True


def _fixed(name: str) -> SchemeSpec:
    def build(options: Mapping[str, Any], fail: Fail) -> Scheme:
        if options:
            raise fail(f"verify.{sorted(options)[0]}", f"scheme {name!r} takes no options")
        return SCHEMES[name]

    return SchemeSpec(build, lambda secret: decode_secret(name, secret))


def _utf8(secret: str) -> bytes:
    return secret.strip().encode("utf-8")


def _no_secret(secret: str) -> bytes:
    raise ConfigError("scheme 'paypal' uses PayPal's certificate, not a shared secret")


_ADYEN = adyen.AdyenScheme()
_PADDLE = paddle.PaddleScheme()

SPECS: dict[str, SchemeSpec] = {
    **{name: _fixed(name) for name in SCHEMES},
    "adyen": SchemeSpec(lambda options, fail: _plain(_ADYEN, options, fail), adyen.decode_key),
    "square": SchemeSpec(square.build, _utf8),
    "razorpay": SchemeSpec(lambda o, f: hmac_hex.build(hmac_hex.RAZORPAY, o, f), _utf8),
    "paddle": SchemeSpec(lambda options, fail: _plain(_PADDLE, options, fail), _utf8),
    "checkout": SchemeSpec(lambda o, f: hmac_hex.build(hmac_hex.CHECKOUT, o, f), _utf8),
    "gocardless": SchemeSpec(lambda o, f: hmac_hex.build(hmac_hex.GOCARDLESS, o, f), _utf8),
    "paypal": SchemeSpec(paypal.build, _no_secret, uses_secrets=False),
}


def _plain(scheme: Scheme, options: Mapping[str, Any], fail: Fail) -> Scheme:
    if options:
        raise fail(f"verify.{sorted(options)[0]}", f"scheme {scheme.name!r} takes no options")
    return scheme


def scheme_names() -> list[str]:
    return sorted(SPECS)


def spec(name: str) -> SchemeSpec:
    found = SPECS.get(name)
    if found is None:
        raise ConfigError(
            f"unknown signature scheme {name!r}: expected one of {', '.join(scheme_names())}"
        )
    return found


def _default_fail(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}")


def build_scheme(name: str, options: Mapping[str, Any], fail: Fail = _default_fail) -> Scheme:
    """The scheme `name` configured with `options`; ConfigError (through `fail`) on a flaw."""
    return spec(name).build(options, fail)


def decode_key(name: str, secret: str) -> bytes:
    """The key for a configured secret of scheme `name`; errors never quote the secret."""
    if not secret.strip():
        raise ConfigError(f"an empty secret was configured for scheme {name!r}")
    return spec(name).decode(secret)
