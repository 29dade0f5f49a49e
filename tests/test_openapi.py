"""docs/openapi.yaml describes exactly the routes the app registers, except the console's
HTML pages under /console (not an API: the browser tests in tests/gateway/http/console/
cover them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gateway.app import create_app
from gateway.config import Settings

SPEC = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
METHODS = {"get", "post", "put", "patch", "delete"}
CONSOLE = "/console"


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return loaded


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def app_routes() -> set[tuple[str, str]]:
    settings = Settings.from_env({}, admin_jwt_secret="x" * 32, enable_metrics=True)
    app = create_app(settings)
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route}"
        if path == CONSOLE or path.startswith(CONSOLE + "/"):
            continue
        routes.add((route.method, _normalise(path)))
    return routes


def spec_routes() -> set[tuple[str, str]]:
    routes = set()
    for path, item in spec()["paths"].items():
        for method in item:
            if method in METHODS:
                routes.add((method.upper(), _normalise(path)))
    return routes


def test_every_route_is_documented() -> None:
    assert app_routes() - spec_routes() == set()


def test_every_documented_route_exists() -> None:
    assert spec_routes() - app_routes() == set()


def declared_protected() -> dict[tuple[str, str], bool]:
    """Whether each API route needs a token, as the route itself declares (its access)."""
    from gateway.http.routes import ROUTES
    from gateway.security.access import Access

    return {
        (r.method, _normalise(r.path)): r.access in (Access.OPS_READ, Access.OPS_WRITE)
        for r in ROUTES
    }


def test_spec_is_openapi_31_with_bearer_security() -> None:
    doc = spec()
    declared = declared_protected()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            protected = declared[(method.upper(), _normalise(path))]
            assert (op.get("security") != []) is protected, (method, path)
            if protected:
                assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_webhook_responses_are_all_documented() -> None:
    doc = spec()
    for path in ("/api/v1/payments/webhook", "/api/v1/payments/webhook/{channel}"):
        codes = set(doc["paths"][path]["post"]["responses"])
        expected = {"201", "200", "202", "400", "401", "403", "404", "409", "413", "422", "429"}
        assert expected | {"503"} <= codes
