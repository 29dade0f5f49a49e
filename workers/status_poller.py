"""Ask the provider about payments stuck in `pending` (seed 002's reconciliation job).

Webhooks are best effort: a payment can stay pending forever because one delivery was
lost. Every RECONCILE_INTERVAL_SECONDS this worker claims payments pending for longer
than RECONCILE_STALE_AFTER_SECONDS whose channel configures a `[status_api]`, asks the
provider's status API (bounded by RECONCILE_CONCURRENCY, with a timeout and retries
with backoff for 5xx and timeouts), and applies the answer through the same state
machine as a webhook (cause `status_poll`). What it cannot resolve (an answer it cannot
read, a status it cannot map, a payment the provider does not know, an answer older
than what we hold) is flagged in `payment_reviews` and counted; it never guesses.

Each payment is claimed in `status_poll_state` before it is asked about, so several
instances share the work and a payment is asked about at most once per stale period.
The round also applies parked status updates whose payment was recorded by a path
that has no after-commit hook (staging).

Channel configuration (CHANNELS_FILE)::

    [channels.acme.status_api]
    base_url = "https://api.acme.example"
    path_template = "/v1/payments/{reference_number}"
    status_path = "payment.state"          # dotted path to the status in the answer
    event_time_path = "payment.updated_at"  # optional: ISO 8601 or unix seconds
    timeout_seconds = 5.0
    max_retries = 2
    backoff_seconds = 0.5                  # full jitter, doubling, capped at 30 s
    token_env = "ACME_API_TOKEN"           # sent as `Authorization: Bearer <token>`
    auth_header = "Authorization"          # optional: another header name
    auth_scheme = "Bearer"                 # optional: "" sends the bare token
    [channels.acme.status_api.headers]     # optional: fixed headers (an API version)
    Acme-Version = "2024-01-01"
    [channels.acme.status_api.status_map]  # provider status -> ours (else: ours verbatim)
    paid = "succeeded"
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson

from gateway.config import Settings
from gateway.db.status import RETIRED, StatusEvent, apply_status, sweep_parked
from gateway.domain.event_time import check_event_time, latest_event_time
from gateway.domain.lifecycle import Outcome
from gateway.domain.model import STATUSES
from gateway.domain.validation import parse_event_time
from gateway.errors import ConfigError, ValidationError
from gateway.ingest.channels import load_channels
from gateway.notify import Wakeup
from gateway.observability import metrics
from workers.backoff import backoff_delay
from workers.base import Worker

log = logging.getLogger(__name__)

BATCH = 200
MAX_ANSWER_BYTES = 64 * 1024
BACKOFF_CAP = 30.0

_CLAIM = """
WITH cand AS (
    SELECT p.reference_number, p.id
    FROM payment_service.payments p
    LEFT JOIN payment_service.status_poll_state s ON s.reference_number = p.reference_number
    WHERE p.status = 'pending'
      AND p.status_updated_at < now() - make_interval(secs => $1)
      AND (s.reference_number IS NULL OR s.next_poll_at <= now())
    ORDER BY p.status_updated_at
    LIMIT $2
    FOR UPDATE OF p SKIP LOCKED
), claimed AS (
    INSERT INTO payment_service.status_poll_state (reference_number, next_poll_at)
    SELECT reference_number, now() + make_interval(secs => $1) FROM cand
    ON CONFLICT (reference_number) DO UPDATE
    SET next_poll_at = EXCLUDED.next_poll_at, last_polled_at = now(),
        attempts = payment_service.status_poll_state.attempts + 1
)
SELECT c.reference_number, c.id,
       (SELECT w.channel FROM payment_service.webhook_events w
        WHERE w.reference_number = c.reference_number AND w.outcome = 'created'
        LIMIT 1) AS channel
FROM cand c
"""

_FLAG = """
INSERT INTO payment_service.payment_reviews
    (reference_number, payment_id, source, reason, internal_status, provider_status, details)
VALUES ($1, $2, 'status_poll', $3, 'pending', $4, $5)
ON CONFLICT (reference_number, reason) WHERE resolved_at IS NULL DO UPDATE
SET occurrences = payment_reviews.occurrences + 1, last_seen_at = now(),
    provider_status = EXCLUDED.provider_status, details = EXCLUDED.details
"""

_RESULT = (
    "UPDATE payment_service.status_poll_state SET last_result = $2 WHERE reference_number = $1"
)


# -- pure parts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    # status | not_found | garbage | unknown_status | future_event_time | unexpected_http | error
    kind: str
    status: str | None = None
    raw_status: str | None = None
    event_at: datetime | None = None
    detail: str = ""


@dataclass(frozen=True)
class StatusApi:
    base_url: str
    path_template: str = "/{reference_number}"
    status_path: tuple[str, ...] = ("status",)
    event_time_path: tuple[str, ...] | None = None
    status_map: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 5.0
    max_retries: int = 2
    backoff_seconds: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(
        cls, channel: str, cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> StatusApi:
        """Checked once at start-up; a flaw names the channel and key, never a token."""
        environ = os.environ if environ is None else environ
        where = f"channels.{channel}.status_api"

        def fail(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}.{key}: {why}")

        base = cfg.get("base_url")
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise fail("base_url", "expected an http(s) URL")
        template = cfg.get("path_template", "/{reference_number}")
        if not isinstance(template, str) or "{reference_number}" not in template:
            raise fail("path_template", "expected a path containing {reference_number}")
        status_map = cfg.get("status_map", {})
        if not isinstance(status_map, dict) or any(v not in STATUSES for v in status_map.values()):
            raise fail("status_map", "expected a table of provider status = our status")
        numbers: dict[str, float] = {}
        for key, default, low in (("timeout_seconds", 5.0, 0.01), ("max_retries", 2, 0),
                                  ("backoff_seconds", 0.5, 0.0)):  # fmt: skip
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise fail(key, f"expected a number >= {low}")
            numbers[key] = value
        extra = cfg.get("headers", {})
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise fail("headers", "expected a table of header = value strings")
        headers: dict[str, str] = dict(extra)
        token_env = cfg.get("token_env")
        if token_env is not None:
            token = environ.get(str(token_env), "")
            if not token:
                raise fail("token_env", f"the variable {token_env} is not set")
            scheme = str(cfg.get("auth_scheme", "Bearer"))
            headers[str(cfg.get("auth_header", "Authorization"))] = f"{scheme} {token}".strip()
        event_path = cfg.get("event_time_path")
        return cls(
            base_url=base.rstrip("/"),
            path_template=template,
            status_path=tuple(str(cfg.get("status_path", "status")).split(".")),
            event_time_path=tuple(str(event_path).split(".")) if event_path else None,
            status_map=dict(status_map),
            timeout_seconds=float(numbers["timeout_seconds"]),
            max_retries=int(numbers["max_retries"]),
            backoff_seconds=float(numbers["backoff_seconds"]),
            headers=headers,
        )

    def url(self, reference: str) -> str:
        return self.base_url + self.path_template.replace(
            "{reference_number}", quote(reference, safe="")
        )

    def interpret(self, body: bytes, *, latest: datetime | None = None) -> Answer:
        """Read a 200 answer: a mapped status, or what is wrong with it. An event time
        after `latest` is flagged, not applied (gateway.domain.event_time)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Answer("garbage", detail="the answer is not JSON")
        raw = _dig(doc, self.status_path)
        if not isinstance(raw, str) or not raw:
            return Answer("garbage", detail="no status at " + ".".join(self.status_path))
        raw = raw[:100]
        status = self.status_map.get(raw, raw if not self.status_map or raw in STATUSES else None)
        if status not in STATUSES:
            return Answer("unknown_status", raw_status=raw, detail="status not mapped")
        event_at = None
        if self.event_time_path is not None:
            try:
                event_at = parse_event_time(_dig(doc, self.event_time_path))
            except ValidationError:
                return Answer("garbage", raw_status=raw, detail="unreadable event time")
            if latest is not None:
                try:
                    check_event_time(event_at, latest)
                except ValidationError as exc:
                    return Answer("future_event_time", raw_status=raw, detail=exc.detail)
        return Answer("status", status=status, raw_status=raw, event_at=event_at)


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


async def ask(
    session: aiohttp.ClientSession,
    api: StatusApi,
    reference: str,
    *,
    latest: datetime | None = None,
) -> Answer:
    """One question to the provider, retried on timeouts, connection errors, 429 and 5xx."""
    last = ""
    for attempt in range(api.max_retries + 1):
        if attempt:
            await asyncio.sleep(backoff_delay(attempt, api.backoff_seconds, BACKOFF_CAP))
        try:
            timeout = aiohttp.ClientTimeout(total=api.timeout_seconds)
            async with session.get(
                api.url(reference), headers=dict(api.headers), timeout=timeout
            ) as resp:
                if resp.status >= 500 or resp.status == 429:
                    last = f"HTTP {resp.status}"
                    continue
                if resp.status == 404:
                    return Answer("not_found", detail="HTTP 404")
                if resp.status != 200:
                    return Answer("unexpected_http", detail=f"HTTP {resp.status}")
                body = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(body) > MAX_ANSWER_BYTES:
                    return Answer("garbage", detail="the answer is too large")
                return api.interpret(body, latest=latest)
        except TimeoutError:
            last = "timeout"
        except aiohttp.ClientError as exc:
            last = type(exc).__name__
    return Answer("error", detail=last)


# -- the worker ------------------------------------------------------------------------------


class StatusPoller(Worker):
    name = "status_poller"

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        wakeup: Wakeup | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # The shared wake-up belongs to the outbox relay: waiting on it would steal its
        # signal. We ring it after applying changes and poll on our own schedule.
        super().__init__(settings.reconcile_interval_seconds, Wakeup())
        self.pool = pool
        self.settings = settings
        self.outbox_wake = wakeup
        channels = load_channels(settings, environ=environ)
        self.apis: dict[str, StatusApi] = {}
        for name in channels.names():
            channel = channels.get(name)
            if channel is not None and channel.status_api:
                self.apis[name] = StatusApi.from_config(name, channel.status_api, environ)
        self.session: aiohttp.ClientSession | None = None

    async def on_start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers={"User-Agent": "paygate-status-poller"})

    async def on_stop(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    async def run_once(self) -> bool:
        topic = self.settings.kafka_topic
        if await sweep_parked(self.pool, topic=topic, actor="status_poller"):
            self._ring()
        if not self.apis:
            return False
        await self.on_start()
        claims = await self.pool.fetch(_CLAIM, self.settings.reconcile_stale_after_seconds, BATCH)
        limit = asyncio.Semaphore(self.settings.reconcile_concurrency)

        async def one(claim: asyncpg.Record) -> None:
            async with limit:
                result = await self._poll(claim)
            metrics.status_poll.labels(result).inc()
            await self.pool.execute(_RESULT, claim["reference_number"], result)

        await asyncio.gather(*(one(c) for c in claims))
        return len(claims) == BATCH

    async def _poll(self, claim: asyncpg.Record) -> str:
        reference = claim["reference_number"]
        api = self.apis.get(claim["channel"] or "")
        if api is None:
            return "skipped"
        assert self.session is not None
        latest = latest_event_time(datetime.now(UTC), self.settings.payment_date_max_future_days)
        answer = await ask(self.session, api, reference, latest=latest)
        if answer.kind == "error":
            log.warning(
                "status API of %s failed for a payment: %s", claim["channel"], answer.detail
            )
            return "error"
        if answer.kind != "status":
            await self._flag(claim, answer.kind, answer)
            return "flagged"
        assert answer.status is not None
        async with self.pool.acquire() as conn:
            event = StatusEvent(
                reference, answer.status, answer.event_at, cause="status_poll",
                actor="status_poller", channel=claim["channel"],
            )  # fmt: skip
            result = await apply_status(conn, event, topic=self.settings.kafka_topic, park=False)
        if result.outcome == Outcome.UPDATED:
            self._ring()
            return "applied"
        if result.outcome == Outcome.UNCHANGED:
            return "unchanged"
        if result.outcome == Outcome.STALE:
            await self._flag(claim, "stale_answer", answer)
            return "flagged"
        if result.outcome == RETIRED:  # its month was retired meanwhile: kept for review
            return "flagged"
        return "skipped"  # the payment and its reference are gone

    async def _flag(self, claim: asyncpg.Record, reason: str, answer: Answer) -> None:
        details = {"channel": claim["channel"], "detail": answer.detail}
        await self.pool.execute(
            _FLAG, claim["reference_number"], claim["id"], reason, answer.raw_status, details
        )

    def _ring(self) -> None:
        if self.outbox_wake is not None:
            self.outbox_wake.ring()
