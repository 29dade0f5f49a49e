"""Logs as the operator reads them: one JSON object per line, the request id of the request
that caused it, and never a secret or a payment payload."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest

from gateway import appkeys
from gateway.observability import logs
from gateway.observability.logs import JsonFormatter, request_id_var
from tests.conftest import TEST_SECRET
from tests.webhooks import payment_doc, post_webhook, signed_headers


class Capture:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        """Every captured line, each parsed as one JSON object (fails on anything else)."""
        return [orjson.loads(line) for line in self.buffer.getvalue().splitlines()]

    def text(self) -> str:
        return self.buffer.getvalue()


def _capture(level: int) -> Iterator[Capture]:
    capture = Capture()
    handler = logging.StreamHandler(capture.buffer)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield capture
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def info_logs() -> Iterator[Capture]:
    yield from _capture(logging.INFO)


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    yield from _capture(logging.DEBUG)


def _bad_signature_request() -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(payment_doc())
    return body, signed_headers(body, key=b"some-other-key-that-is-not-ours!")


async def test_failing_webhook_is_logged_as_json_with_the_request_id(
    client: Any, db: Any, info_logs: Capture
) -> None:
    body, headers = _bad_signature_request()
    headers["X-Request-ID"] = "req-obs-0001"
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)

    assert resp.status == 401
    assert resp.headers["X-Request-ID"] == "req-obs-0001"
    lines = info_logs.lines()
    mine = [x for x in lines if x.get("logger") == "paygate.webhook"]
    assert len(mine) == 1
    line = mine[0]
    assert line["request_id"] == "req-obs-0001"
    assert (line["level"], line["channel"], line["outcome"]) == ("info", "generic", "unauthorized")
    assert isinstance(line["duration_ms"], float)
    assert "unauthorized" in line["message"]
    datetime.fromisoformat(line["time"])


async def test_successful_webhooks_stay_below_info(
    client: Any, db: Any, info_logs: Capture
) -> None:
    status, _, _ = await post_webhook(client, payment_doc())
    assert status == 201
    assert not [x for x in info_logs.lines() if x.get("logger") == "paygate.webhook"]


async def test_request_id_is_generated_when_missing_or_unsafe(
    client: Any, db: Any, info_logs: Capture
) -> None:
    ids = []
    for sent in (None, "has spaces and\ttabs", "x" * 300):
        body, headers = _bad_signature_request()
        if sent is not None:
            headers["X-Request-ID"] = sent
        resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)
        assert resp.status == 401
        rid = resp.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        ids.append(rid)
    assert len(set(ids)) == 3
    logged = [x["request_id"] for x in info_logs.lines() if x.get("logger") == "paygate.webhook"]
    assert logged == ids


async def test_no_secret_or_payload_reaches_logs_or_metrics(
    client: Any, db: Any, stack: Any, debug_logs: Capture
) -> None:
    settings = client.server.app[appkeys.SETTINGS]
    marker = "PAYLOAD-MARKER-7f3a9c"
    doc = payment_doc(metadata={"note": marker})
    from gateway.security.auth import READ, mint_token

    token = mint_token(settings.admin_jwt_secret, "test-ops", [READ])

    # Good, duplicate, conflicting, badly signed, unsigned and malformed deliveries.
    assert (await post_webhook(client, doc))[0] == 201
    assert (await post_webhook(client, doc))[0] == 200
    assert (await post_webhook(client, {**doc, "amount": "1.00"}))[0] == 409
    body, headers = _bad_signature_request()
    assert (await client.post("/api/v1/payments/webhook", data=body, headers=headers)).status == 401
    resp = await client.post("/api/v1/payments/webhook", data=orjson.dumps(doc))
    assert resp.status == 401
    raw = b'{"reference_number": "' + marker.encode() + b'", '
    assert (await post_webhook(client, None, raw=raw, headers=signed_headers(raw)))[0] == 400
    invalid = {**payment_doc(), "amount": "-5", "metadata": {"note": marker}}
    assert (await post_webhook(client, invalid))[0] == 422
    # The ops API with a good token, a forged one and none.
    for auth in (f"Bearer {token}", "Bearer forged.token.value", None):
        headers = {"Authorization": auth} if auth else {}
        await client.get("/api/v1/payments/stats", headers=headers)
    metrics_text = await (await client.get("/metrics")).text()

    secrets = [TEST_SECRET, TEST_SECRET.removeprefix("whsec_"), settings.admin_jwt_secret]
    password = urlparse(stack.database_url).password
    if password:
        secrets.append(password)
    if token:
        secrets.append(token)
    logged = debug_logs.text()
    debug_logs.lines()  # every line is JSON
    for secret in secrets:
        assert secret not in logged
        assert secret not in metrics_text
    info_and_up = [x for x in debug_logs.lines() if x["level"] not in ("debug",)]
    assert marker not in orjson.dumps(info_and_up).decode()
    assert marker not in metrics_text


# ---------------------------------------------------------------- the formatter itself


def _record(msg: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("paygate.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_formatter_writes_one_object_with_known_fields() -> None:
    record = _record("hello %s", "world", channel="stripe", outcome="created", duration_ms=1.5)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["message"] == "hello world"
    assert (out["level"], out["logger"]) == ("warning", "paygate.test")
    assert (out["channel"], out["outcome"], out["duration_ms"]) == ("stripe", "created", 1.5)
    assert "request_id" not in out
    datetime.fromisoformat(out["time"])


def test_formatter_takes_the_request_id_from_the_context() -> None:
    token = request_id_var.set("ctx-id-1")
    try:
        assert orjson.loads(JsonFormatter().format(_record()))["request_id"] == "ctx-id-1"
        explicit = _record(request_id="explicit-id")
        assert orjson.loads(JsonFormatter().format(explicit))["request_id"] == "explicit-id"
    finally:
        request_id_var.reset(token)


def test_formatter_keeps_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exception"]


def test_formatter_survives_values_json_cannot_encode() -> None:
    out = orjson.loads(JsonFormatter().format(_record("x", outcome=object())))
    assert out["outcome"].startswith("<object")


def test_configure_installs_one_json_handler_at_the_level() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    noisy = {n: logging.getLogger(n).level for n in ("aiokafka", "asyncio", "aiohttp.access")}
    try:
        logs.configure("DEBUG")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("aiokafka").level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in noisy.items():
            logging.getLogger(name).setLevel(level)
