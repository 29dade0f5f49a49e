"""Webhook channels: who may post to `/webhook/{channel}`, how they sign, and how
their documents map onto our payment fields.

Everything a channel needs is resolved once at start-up, so a bad configuration
(unknown scheme, bad CIDR, unknown status, malformed secret) stops the process
with a message naming the file and the key - never a secret value - instead of
failing on the first request. Secrets are best supplied through `secrets_env`
(an environment variable holding space-separated secrets, the first being the
current one and the others still accepted during rotation), which keeps them out
of files.

The `generic` channel always exists. It takes the seed 004 body as is and is
configured from WEBHOOK_SCHEME, WEBHOOK_SECRET and SIGNATURE_TOLERANCE_SECONDS;
a channels file may redefine it (keys it leaves out keep those settings).

Example `CHANNELS_FILE` (TOML)::

    [channels.stripe]
    preset = "stripe"                    # gateway/presets/stripe.toml
    secrets_env = "STRIPE_WEBHOOK_SECRETS"
    allow_cidrs = ["3.18.12.63/32", "3.130.192.231/32"]
    rate_per_second = 200
    burst = 400

    [channels.stripe.fields]             # merged over the preset's fields
    cif = "data.object.metadata.customer_cif"

    [channels.partner-bank]
    scheme = "standard"
    secrets_env = "PARTNER_BANK_SECRETS"
    tolerance_seconds = 120

    [channels.shop]
    scheme = "shopify"
    secrets_env = "SHOPIFY_SECRETS"
    [channels.shop.fields]
    reference_number = "admin_graphql_api_id"
    amount = "total_price"               # a decimal string such as "10.50"
    loan_account_number = "note_attributes.0.value"
    cif = "customer.id"
    payment_date = "processed_at"
    status = "financial_status"
    [channels.shop.constants]
    payment_channel = "shopify"
    [channels.shop.status_map]           # other financial statuses are ignored
    pending = "pending"
    paid = "succeeded"
    voided = "failed"
    refunded = "refunded"

================================  ==========================================================
key                               meaning
================================  ==========================================================
preset                            start from a shipped preset (`stripe`); own keys override,
                                  own tables are merged key by key over the preset's
scheme                            standard | stripe | github | shopify | adyen | square |
                                  razorpay | paddle | checkout | paypal | gocardless
                                  (default standard; for `generic`: WEBHOOK_SCHEME)
secrets / secrets_env             list of secrets, or the name of an env var holding them
                                  space-separated; several are active at once (rotation)
tolerance_seconds                 allowed clock distance of the signed timestamp, both ways
allow_cidrs                       source networks allowed to post (empty: all)
rate_per_second, burst            token bucket per channel (burst defaults to the rate)
[fields]                          payment field = "dotted.path" or ["path", "fallback"]
                                  (first present wins; a numeric segment indexes a list)
amount_minor_units                amount is an integer of minor units (cents, without a
                                  currency_path; else per [minor_units])
currency_path                     where the currency code is; stored in payments.currency
                                  (upper case) and copied into metadata as sent
[minor_units]                     the provider's decimals per currency: "0" = ["JPY", ...],
                                  "2" = [...]; a currency it lacks is a 422 naming it. A
                                  channel's entries move single currencies over the
                                  preset's (gateway.ingest.currencies)
[constants]                       fixed values for fields the document lacks
event_type_path                   provider event type, translated through [status_map]
[status_map]                      provider event type (or status) = pending | succeeded |
                                  failed | reversed | refunded
event_id_path, event_time_path    provider event id (replay protection) and its time
[status_api]                      provider status API settings for the reconciler
identity_fields                   which of amount, loan_account_number, cif, payment_date
                                  make a re-sent reference a conflict (default: all four);
                                  event-stream providers whose later events carry their own
                                  time or amount (Stripe) narrow it
================================  ==========================================================

`Channel.extract` turns a provider document into the generic payload. A document
whose event type is not in `status_map` comes back as `status=None` plus an
`ignored_event_type` key: the handler answers `200 {"status": "ignored"}` so the
provider stops retrying, and records nothing.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

from gateway.config import Settings
from gateway.domain.model import IDENTITY_FIELDS, STATUSES
from gateway.errors import ConfigError, ServiceUnavailable, ValidationError
from gateway.ingest.currencies import (
    CurrencyTable,
    currency_code,
    major_units,
    merge_tables,
    parse_table,
    unknown_currency,
)
from gateway.ingest.schemes.registry import build_scheme, decode_key
from gateway.ingest.schemes.registry import spec as scheme_spec_of
from gateway.ingest.signatures import KeyFetchRequired, Scheme, Verified

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

GENERIC = "generic"
CHANNEL_NAME = re.compile(r"[a-z0-9_-]{1,64}")
PAYMENT_FIELDS = frozenset(
    {
        "reference_number",
        "loan_account_number",
        "cif",
        "amount",
        "payment_date",
        "payment_channel",
        "metadata",
        "status",
    }
)
_DATE_FIELDS = ("payment_date",)
# Providers often send numeric ids (Shopify order and customer ids); our columns are text.
_TEXT_FIELDS = ("reference_number", "loan_account_number", "cif", "payment_channel", "event_id")

# Without a currency_path, a channel's minor units are cents, as its configuration says.
_DEFAULT_EXPONENT = 2
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_MINOR_UNITS_MAX = 10**18

_SCALAR_KEYS = frozenset(
    {
        "preset",
        "scheme",
        "secrets",
        "secrets_env",
        "tolerance_seconds",
        "allow_cidrs",
        "rate_per_second",
        "burst",
        "amount_minor_units",
        "currency_path",
        "event_type_path",
        "event_id_path",
        "event_time_path",
        "identity_fields",
        "event_qualifier_paths",
        "status_only_events",
        "event_id_parts",
        "batch_path",
        "batch_item_path",
        "accept_body",
    }
)
_TABLE_KEYS = frozenset(
    {"fields", "constants", "status_map", "status_api", "verify", "minor_units"}
)
_MAPPING_KEYS = (
    "amount_minor_units",
    "currency_path",
    "minor_units",
    "constants",
    "status_map",
    "event_type_path",
    "event_id_path",
    "event_time_path",
    "event_qualifier_paths",
    "status_only_events",
    "event_id_parts",
    "batch_path",
    "batch_item_path",
)
_SEGMENT = re.compile(r"'([^']+)'|([^.']+)")

Path = tuple[tuple[str, ...], ...]  # alternatives, each a tuple of segments


def _segments(alternative: str) -> tuple[str, ...]:
    """Dot-separated keys; a key in single quotes may hold dots (Adyen's
    `additionalData.'metadata.cif'` is one key named `metadata.cif`)."""
    segments: list[str] = []
    pos = 0
    while True:
        match = _SEGMENT.match(alternative, pos)
        if match is None:
            raise ValueError(f"bad path {alternative!r}")
        segments.append(match.group(1) or match.group(2))
        pos = match.end()
        if pos == len(alternative):
            return tuple(segments)
        if alternative[pos] != ".":
            raise ValueError(f"bad path {alternative!r}")
        pos += 1


def _compile_path(spec: str) -> Path:
    return tuple(_segments(alternative.strip()) for alternative in spec.split("|"))


def _part(value: Any) -> str:
    """A value as one part of a composed key (event type qualifier, delivery id)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _lookup(doc: Any, path: Path) -> Any:
    """The first alternative that leads to a non-null value, else None."""
    for segments in path:
        current = doc
        for segment in segments:
            if isinstance(current, dict):
                current = current.get(segment)
            elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
                current = current[int(segment)]
            else:
                current = None
            if current is None:
                break
        if current is not None:
            return current
    return None


def _unix_to_iso(value: Any, name: str) -> Any:
    """Provider times given as unix seconds become ISO 8601 UTC; strings pass through."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    try:
        return datetime.fromtimestamp(value, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        raise ValidationError(name, "timestamp out of range") from None


@dataclass(frozen=True)
class Channel:
    name: str
    scheme: str
    keys: tuple[bytes, ...] = field(default=(), repr=False)
    tolerance_seconds: int = 300
    fields: dict[str, str] | None = None  # payment field -> provider path ("a.b|c" = fallback)
    amount_minor_units: bool = False
    status_map: dict[str, str] = field(default_factory=dict)
    event_type_path: str | None = None
    event_id_path: str | None = None
    event_time_path: str | None = None
    allow_cidrs: tuple[IPNetwork, ...] = ()
    rate_per_second: float | None = None
    burst: int | None = None
    status_api: dict[str, Any] | None = None
    currency_path: str | None = None
    minor_units: CurrencyTable | None = None  # the provider's decimals per currency
    constants: dict[str, Any] = field(default_factory=dict)
    identity_fields: tuple[str, ...] = IDENTITY_FIELDS
    # Paths whose values qualify the event type ("AUTHORISATION" + success "true" is
    # looked up as "AUTHORISATION:true", then "AUTHORISATION").
    event_qualifier_paths: tuple[str, ...] = ()
    # status_map keys whose events only move the status of the payment they name.
    status_only_events: frozenset[str] = frozenset()
    event_id_parts: tuple[str, ...] = ()  # delivery id = these values joined by ":"
    batch_path: str | None = None  # where a multi-event delivery lists its events
    batch_item_path: str | None = None  # where each listed entry holds its event
    accept_body: str | None = None  # the provider's expected text for a 2xx (Adyen)
    verify_options: dict[str, Any] = field(default_factory=dict, repr=False)
    scheme_impl: Scheme | None = field(default=None, repr=False, compare=False)
    _scheme: Scheme = field(init=False, repr=False, compare=False)
    _paths: dict[str, Path] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        impl = self.scheme_impl or build_scheme(self.scheme, self.verify_options)
        object.__setattr__(self, "_scheme", impl)
        paths = {name: _compile_path(spec) for name, spec in (self.fields or {}).items()}
        for attr in (
            "event_type_path", "event_id_path", "event_time_path", "currency_path",
            "batch_path", "batch_item_path",
        ):  # fmt: skip
            spec = getattr(self, attr)
            if spec is not None:
                paths["@" + attr] = _compile_path(spec)
        for index, spec in enumerate(self.event_qualifier_paths):
            paths[f"@qualifier{index}"] = _compile_path(spec)
        for index, spec in enumerate(self.event_id_parts):
            paths[f"@id{index}"] = _compile_path(spec)
        object.__setattr__(self, "_paths", paths)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> Verified:
        """Check the delivery against every active secret; raises SignatureError."""
        return self._scheme.verify(
            headers, body, self.keys, now=now, tolerance=self.tolerance_seconds
        )

    async def verify_after(
        self, need: KeyFetchRequired, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> Verified:
        """Fetch the key a verification asked for, then verify again (once)."""
        await need.fetch()
        try:
            return self.verify(headers, body, now=now)
        except KeyFetchRequired:
            raise ServiceUnavailable(
                "the verification key is not available", code="key_unavailable", retry_after=30
            ) from None

    def split(self, doc: Any) -> list[Any] | None:
        """The events of a multi-event delivery (None for a channel without batches).

        A document without the list is one event on its own: what a stored event of a
        batch looks like when it is processed again.
        """
        if self.batch_path is None:
            return None
        listed = _lookup(doc, self._paths["@batch_path"]) if isinstance(doc, dict) else None
        if listed is None:
            return [doc]
        if not isinstance(listed, list):
            raise ValidationError(self.batch_path, "expected a list of events")
        if self.batch_item_path is None:
            return listed
        items = []
        for entry in listed:
            item = _lookup(entry, self._paths["@batch_item_path"])
            if not isinstance(item, dict):
                raise ValidationError(self.batch_item_path, "an entry holds no event")
            items.append(item)
        return items

    def extract(self, doc: Any) -> Any:
        """Map a provider document into the generic payload dict.

        Keys: reference_number, loan_account_number, cif, amount, payment_date,
        payment_channel, metadata, status, event_time, event_id. Missing paths are
        simply absent (validation names them later). The generic channel (fields
        None) and non-object documents are returned unchanged. Minor units become
        an exact Decimal; float is never used for money. An event type missing from
        `status_map` yields only identification keys, `status=None` and
        `ignored_event_type`, and no amount.
        """
        if self.fields is None or not isinstance(doc, dict):
            return doc
        paths = self._paths
        out: dict[str, Any] = {}
        event_id = _lookup(doc, paths["@event_id_path"]) if self.event_id_path else None
        if self.event_id_parts:
            parts = [_lookup(doc, paths[f"@id{i}"]) for i in range(len(self.event_id_parts))]
            if any(p is not None for p in parts):
                event_id = ":".join(_part(p) for p in parts)
        if event_id is not None:
            out["event_id"] = event_id
        if self.event_time_path:
            event_time = _lookup(doc, paths["@event_time_path"])
            if event_time is not None:
                out["event_time"] = _unix_to_iso(event_time, self.event_time_path)

        for name in self.fields:
            value = _lookup(doc, paths[name])
            if value is not None:
                out[name] = value
        for name, value in self.constants.items():
            out.setdefault(name, value)
        for name in _TEXT_FIELDS:
            value = out.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                out[name] = str(value)

        if self.event_type_path:
            event_type = _lookup(doc, paths["@event_type_path"])
            if event_type is None:
                raise ValidationError(self.event_type_path, "the provider event type is missing")
            source: Any = event_type
        else:
            source = out.get("status")
        if source is not None and self.status_map:
            status, key = self._status_of(doc, source)
            if status is None:
                ignored = {
                    k: out[k] for k in ("reference_number", "event_id", "event_time") if k in out
                }
                return {**ignored, "status": None, "ignored_event_type": key}
            out["status"] = status
            if key in self.status_only_events:
                kept = {
                    k: out[k] for k in ("reference_number", "event_id", "event_time") if k in out
                }
                return {**kept, "status": status}

        currency = _lookup(doc, paths["@currency_path"]) if self.currency_path else None
        code: str | None = None
        if currency is not None:
            code = currency_code(currency, self.currency_path or "currency")
            out["currency"] = code
            metadata = out.get("metadata")
            if metadata is None or isinstance(metadata, dict):
                out["metadata"] = {**(metadata or {})}
                out["metadata"].setdefault("currency", currency)
        if "amount" in out:
            if self.amount_minor_units:
                out["amount"] = self._major_units(out["amount"], code)
            elif code is not None and self.minor_units is not None:
                self._exponent(code)  # a decimal amount in a currency the table lacks
        for name in _DATE_FIELDS:
            if name in out:
                out[name] = _unix_to_iso(out[name], name)
        return out

    def _status_of(self, doc: Any, source: Any) -> tuple[str | None, Any]:
        """The mapped status and the key it was found under (or the full key, unmapped)."""
        if not isinstance(source, str):
            return None, source
        if not self.event_qualifier_paths:
            return self.status_map.get(source), source
        qualifiers = [
            _part(_lookup(doc, self._paths[f"@qualifier{i}"]))
            for i in range(len(self.event_qualifier_paths))
        ]
        for count in range(len(qualifiers), -1, -1):
            key = ":".join([source, *qualifiers[:count]])
            status = self.status_map.get(key)
            if status is not None:
                return status, key
        while qualifiers and not qualifiers[-1]:
            qualifiers.pop()
        return None, ":".join([source, *qualifiers])

    def money_of(self, fields: Any) -> tuple[str | None, int]:
        """The currency an extracted event names and the decimals its amount may carry:
        the currency's exponent in this channel's table, else 2 (the generic body)."""
        code = fields.get("currency") if self.currency_path and isinstance(fields, dict) else None
        if not isinstance(code, str):
            return None, _DEFAULT_EXPONENT
        exponent = self.minor_units.exponent(code) if self.minor_units is not None else None
        return code, _DEFAULT_EXPONENT if exponent is None else exponent

    def _exponent(self, code: str) -> int:
        exponent = self.minor_units.exponent(code) if self.minor_units is not None else None
        if exponent is None:
            raise unknown_currency(code, self.currency_path or "currency")
        return exponent

    def _major_units(self, amount: Any, code: str | None) -> Decimal:
        if isinstance(amount, str) and _INTEGER.fullmatch(amount):
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError("amount", "expected an integer amount in minor units")
        if abs(amount) > _MINOR_UNITS_MAX:
            raise ValidationError(
                "amount", f"exceeds the maximum of {_MINOR_UNITS_MAX} minor units"
            )
        if self.currency_path is None:
            return major_units(amount, _DEFAULT_EXPONENT)
        if code is None:
            raise ValidationError(self.currency_path, "the currency is missing")
        return major_units(amount, self._exponent(code))


class ChannelRegistry:
    """The channels by name, built once at start-up and read on every request."""

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self._channels = dict(channels)

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def names(self) -> list[str]:
        return sorted(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __len__(self) -> int:
        return len(self._channels)


def load_channels(
    settings: Settings, *, environ: Mapping[str, str] | None = None
) -> ChannelRegistry:
    """Build every channel from the settings and CHANNELS_FILE; ConfigError on any flaw."""
    environ = os.environ if environ is None else environ
    tables: dict[str, Any] = {}
    source = "CHANNELS_FILE"
    if settings.channels_file:
        source = settings.channels_file
        tables = _read_channels_file(source)
    channels: dict[str, Channel] = {}
    generic_raw = tables.pop(GENERIC, None)
    if generic_raw is None:
        channels[GENERIC] = _generic_from_settings(settings)
    else:
        channels[GENERIC] = _build(GENERIC, generic_raw, source, settings, environ)
    for name, raw in tables.items():
        channels[name] = _build(name, raw, source, settings, environ)
    return ChannelRegistry(channels)


def _generic_from_settings(settings: Settings) -> Channel:
    return Channel(
        name=GENERIC,
        scheme=settings.webhook_scheme,
        keys=_decode_all(settings.webhook_scheme, settings.webhook_secret, "WEBHOOK_SECRET"),
        tolerance_seconds=settings.signature_tolerance_seconds,
    )


def _decode_all(scheme: str, secrets: Sequence[str], where: str) -> tuple[bytes, ...]:
    keys = []
    for index, secret in enumerate(secrets, 1):
        try:
            keys.append(decode_key(scheme, secret))
        except ConfigError as exc:
            raise ConfigError(f"{where}: secret #{index}: {exc}") from None
    return tuple(keys)


def _read_channels_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read CHANNELS_FILE {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(doc) - {"channels"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key {sorted(unknown)[0]!r}; expected [channels.<name>]"
        )
    channels = doc.get("channels", {})
    if not isinstance(channels, dict):
        raise ConfigError(f"{path}: channels must be a table of [channels.<name>] tables")
    for name, table in channels.items():
        if not CHANNEL_NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: channels.{name}: a channel name must match [a-z0-9_-]{{1,64}}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: channels.{name} must be a table")
    return dict(channels)


_PRESETS: dict[str, dict[str, Any]] = {}


def load_preset(name: str) -> dict[str, Any]:
    """A shipped preset (gateway/presets/<name>.toml) as a raw channel table."""
    if name not in _PRESETS:
        available = sorted(
            entry.name.removesuffix(".toml")
            for entry in resources.files("gateway").joinpath("presets").iterdir()
            if entry.name.endswith(".toml")
        )
        if not CHANNEL_NAME.fullmatch(name) or name not in available:
            raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(available)}")
        text = resources.files("gateway").joinpath("presets", f"{name}.toml").read_text("utf-8")
        preset = tomllib.loads(text)
        for forbidden in ("preset", "secrets", "secrets_env"):
            if forbidden in preset:
                raise ConfigError(f"preset {name!r} must not set {forbidden}")
        _PRESETS[name] = preset
    return _PRESETS[name]


def _build(
    name: str,
    raw: dict[str, Any],
    source: str,
    settings: Settings,
    environ: Mapping[str, str],
) -> Channel:
    where = f"{source}: channels.{name}"

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}.{key}: {problem}")

    for key in raw:
        if key not in _SCALAR_KEYS and key not in _TABLE_KEYS:
            raise fail(key, "unknown key")
    cfg: dict[str, Any] = {}
    if "preset" in raw:
        if not isinstance(raw["preset"], str):
            raise fail("preset", "expected a preset name")
        try:
            preset = load_preset(raw["preset"])
        except ConfigError as exc:
            raise fail("preset", str(exc)) from None
        cfg.update(copy.deepcopy(preset))
    for key, value in raw.items():
        if key == "minor_units":
            cfg[key] = merge_tables(cfg.get(key), value)
        elif key in _TABLE_KEYS and isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value

    scheme = cfg.get("scheme", settings.webhook_scheme if name == GENERIC else "standard")
    if not isinstance(scheme, str):
        raise fail("scheme", "expected a scheme name")
    try:
        scheme_spec = scheme_spec_of(scheme)
    except ConfigError as exc:
        raise fail("scheme", str(exc)) from None
    verify_options = _verify_options(cfg.get("verify", {}), environ, fail)
    scheme_impl = build_scheme(scheme, verify_options, fail)

    if not scheme_spec.uses_secrets:
        for key in ("secrets", "secrets_env"):
            if key in raw:
                raise fail(key, f"scheme {scheme!r} uses no shared secret")
    keys = _channel_keys(name, raw, scheme, settings, environ, fail)
    tolerance = cfg.get("tolerance_seconds", settings.signature_tolerance_seconds)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 1:
        raise fail("tolerance_seconds", "expected an integer >= 1")

    allow = cfg.get("allow_cidrs", [])
    if isinstance(allow, str):
        allow = allow.replace(",", " ").split()
    if not isinstance(allow, list) or not all(isinstance(c, str) for c in allow):
        raise fail("allow_cidrs", "expected a list of CIDR strings")
    networks: list[IPNetwork] = []
    for cidr in allow:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise fail("allow_cidrs", f"{cidr!r} is not a network") from None

    rate = cfg.get("rate_per_second")
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise fail("rate_per_second", "expected a number > 0")
    burst = cfg.get("burst")
    if burst is not None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise fail("burst", "expected an integer >= 1")
        if rate is None:
            raise fail("burst", "needs rate_per_second")
    elif rate is not None:
        burst = max(1, math.ceil(rate))

    fields = _fields(cfg.get("fields"), fail)
    if fields is None:
        for key in _MAPPING_KEYS:
            if key in cfg:
                raise fail(key, "only applies to a channel with a [fields] table")

    minor = cfg.get("amount_minor_units", False)
    if not isinstance(minor, bool):
        raise fail("amount_minor_units", "expected true or false")
    paths: dict[str, str | None] = {}
    for key in ("currency_path", "event_type_path", "event_id_path", "event_time_path"):
        value = cfg.get(key)
        if value is not None and not (isinstance(value, str) and _valid_path(value)):
            raise fail(key, "expected a dotted path")
        paths[key] = value

    minor_units = parse_table(cfg["minor_units"], fail) if "minor_units" in cfg else None
    if minor_units is not None and not paths["currency_path"]:
        raise fail("minor_units", "needs currency_path")
    if minor and paths["currency_path"] and minor_units is None:
        raise fail(
            "minor_units",
            "amount_minor_units with a currency_path needs the provider's [minor_units] table",
        )

    status_map = cfg.get("status_map", {})
    if not isinstance(status_map, dict):
        raise fail("status_map", "expected a table")
    for event, status in status_map.items():
        if status not in STATUSES:
            raise fail(
                f"status_map.{event}", f"unknown status; expected one of {', '.join(STATUSES)}"
            )
    if paths["event_type_path"] and not status_map:
        raise fail("event_type_path", "needs a [status_map] to translate event types")

    constants = cfg.get("constants", {})
    if not isinstance(constants, dict):
        raise fail("constants", "expected a table")
    for key in constants:
        if key not in PAYMENT_FIELDS or key == "amount":
            raise fail(f"constants.{key}", "not a payment field that can be fixed")

    status_api = cfg.get("status_api")
    if status_api is not None and not isinstance(status_api, dict):
        raise fail("status_api", "expected a table")

    identity = cfg.get("identity_fields", list(IDENTITY_FIELDS))
    if not isinstance(identity, list) or any(f not in IDENTITY_FIELDS for f in identity):
        raise fail("identity_fields", f"expected a list drawn from {', '.join(IDENTITY_FIELDS)}")

    lists: dict[str, list[str]] = {}
    for key in ("event_qualifier_paths", "event_id_parts", "status_only_events"):
        value = cfg.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(key, "expected a list of strings")
        if key != "status_only_events" and not all(_valid_path(v) for v in value):
            raise fail(key, "expected a list of dotted paths")
        lists[key] = value
    for event in lists["status_only_events"]:
        if event not in status_map:
            raise fail("status_only_events", f"{event!r} is not a key of [status_map]")
    if lists["event_qualifier_paths"] and not paths["event_type_path"]:
        raise fail("event_qualifier_paths", "needs event_type_path")
    if lists["event_id_parts"] and paths["event_id_path"]:
        raise fail("event_id_parts", "set event_id_path or event_id_parts, not both")
    for key in ("batch_path", "batch_item_path"):
        value = cfg.get(key)
        if value is not None and not (isinstance(value, str) and _valid_path(value)):
            raise fail(key, "expected a dotted path")
        paths[key] = value
    if paths["batch_item_path"] and not paths["batch_path"]:
        raise fail("batch_item_path", "needs batch_path")
    accept_body = cfg.get("accept_body")
    if accept_body is not None and not (isinstance(accept_body, str) and accept_body):
        raise fail("accept_body", "expected a non-empty string")

    return Channel(
        name=name,
        scheme=scheme,
        keys=keys,
        tolerance_seconds=tolerance,
        fields=fields,
        amount_minor_units=minor,
        status_map=dict(status_map),
        event_type_path=paths["event_type_path"],
        event_id_path=paths["event_id_path"],
        event_time_path=paths["event_time_path"],
        allow_cidrs=tuple(networks),
        rate_per_second=float(rate) if rate is not None else None,
        burst=burst,
        status_api=dict(status_api) if status_api is not None else None,
        currency_path=paths["currency_path"],
        minor_units=minor_units,
        constants=dict(constants),
        identity_fields=tuple(f for f in IDENTITY_FIELDS if f in identity),
        event_qualifier_paths=tuple(lists["event_qualifier_paths"]),
        status_only_events=frozenset(lists["status_only_events"]),
        event_id_parts=tuple(lists["event_id_parts"]),
        batch_path=paths["batch_path"],
        batch_item_path=paths["batch_item_path"],
        accept_body=accept_body,
        verify_options=verify_options,
        scheme_impl=scheme_impl,
    )


def _verify_options(raw: Any, environ: Mapping[str, str], fail: Any) -> dict[str, Any]:
    """The scheme's `[verify]` options; `<option>_env = "VAR"` reads the option from VAR
    (for values that are secrets, such as Checkout.com's authorization key)."""
    if not isinstance(raw, dict):
        raise fail("verify", "expected a table")
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.endswith("_env"):
            options.setdefault(key, value)
            continue
        option = key.removesuffix("_env")
        if option in raw:
            raise fail(f"verify.{key}", f"set {option} or {key}, not both")
        if not isinstance(value, str) or not value:
            raise fail(f"verify.{key}", "expected an environment variable name")
        text = environ.get(value, "")
        if not text.strip():
            raise fail(f"verify.{key}", f"environment variable {value} is not set")
        options[option] = text.strip()
    return options


def _channel_keys(
    name: str,
    raw: dict[str, Any],
    scheme: str,
    settings: Settings,
    environ: Mapping[str, str],
    fail: Any,
) -> tuple[bytes, ...]:
    if "secrets" in raw and "secrets_env" in raw:
        raise fail("secrets", "set secrets or secrets_env, not both")
    if "secrets_env" in raw:
        var = raw["secrets_env"]
        if not isinstance(var, str) or not var:
            raise fail("secrets_env", "expected an environment variable name")
        value = environ.get(var, "")
        if not value.strip():
            raise fail("secrets_env", f"environment variable {var} is not set")
        secrets: Sequence[str] = value.split()
        key = f"secrets_env ({var})"
    elif "secrets" in raw:
        secrets = raw["secrets"]
        if isinstance(secrets, str):
            secrets = secrets.split()
        if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
            raise fail("secrets", "expected a list of strings")
        key = "secrets"
    elif name == GENERIC:
        return _decode_all(scheme, settings.webhook_secret, "WEBHOOK_SECRET")
    else:
        return ()
    try:
        return _decode_all(scheme, secrets, "secret list")
    except ConfigError as exc:
        raise fail(key, str(exc)) from None


def _valid_path(spec: str) -> bool:
    try:
        _compile_path(spec)
    except ValueError:
        return False
    return True


def _fields(raw: Any, fail: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise fail("fields", "expected a non-empty table")
    fields: dict[str, str] = {}
    for name, spec in raw.items():
        if name not in PAYMENT_FIELDS:
            raise fail(f"fields.{name}", "not a payment field")
        if isinstance(spec, list) and spec and all(isinstance(p, str) for p in spec):
            spec = "|".join(spec)
        if not isinstance(spec, str) or not _valid_path(spec):
            raise fail(f"fields.{name}", "expected a dotted path or a list of them")
        fields[name] = spec
    return fields
