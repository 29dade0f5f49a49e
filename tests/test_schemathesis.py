"""schemathesis against docs/openapi.yaml with the real app served on 127.0.0.1.

The server runs on its own event loop in a thread (schemathesis calls are blocking);
every operation gets generated requests with an ops:write token: no 5xx, and every
status code, content type, header and body must match the spec.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.clients.kafka import ensure_topic
from gateway.security.auth import WRITE, mint_token
from tests.conftest import make_settings
from tests.stack import TestStack as Stack

SPEC = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedApp:
    """The app on a private loop in a thread, listening on 127.0.0.1:port."""

    def __init__(self, app_settings: Any) -> None:
        self.settings = app_settings
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        await ensure_topic(self.settings)
        runner = web.AppRunner(create_app(self.settings), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.stop_event = asyncio.Event()
            self.started.set()
            await self.stop_event.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> ServedApp:
        self.thread.start()
        assert self.started.wait(60), "the app did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def served(stack: Stack, db: Any) -> Iterator[ServedApp]:
    app_settings = make_settings(stack, db_pool_max=4)
    with ServedApp(app_settings) as served:
        yield served


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(str(SPEC))
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_api_conforms_to_the_spec(served: ServedApp, operation: Any) -> None:
    base_url = f"http://127.0.0.1:{served.port}"
    token = mint_token(served.settings.admin_jwt_secret, "schemathesis", [WRITE])
    headers = {"Authorization": f"Bearer {token}"}

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    check()
