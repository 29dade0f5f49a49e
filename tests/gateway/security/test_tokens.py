"""Ops tokens (issue 28 item 11): a bounded lifetime, the issuer and audience checked, and
a revocation list by token id in Postgres that every process reads. Pure checks first,
then the same through the real app."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.errors import Unauthorized
from gateway.security import tokens
from gateway.security.tokens import READ, WRITE, TokenPolicy, TokenTooLong

SECRET = "unit-test-admin-secret-0123456789abcdef"
ADMIN = "test-admin-jwt-secret-0123456789abcdef"  # tests.conftest.make_settings's
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def signed(secret: str = SECRET, **over: Any) -> str:
    now = int(time.time())
    claims = {"sub": "eve", "roles": [WRITE], "iat": now, "exp": now + 600, "jti": "j-1",
              "iss": "paygate", "aud": "paygate-ops", **over}  # fmt: skip
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret)


def test_a_minted_token_names_its_id_issuer_and_audience() -> None:
    token = tokens.mint(SECRET, "alice", [READ], ttl=600)
    claims = tokens.verify(token, SECRET)
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["iss"] == "paygate" and raw["aud"] == "paygate-ops"
    assert claims.token_id == raw["jti"] and len(claims.token_id) >= 16
    assert claims.principal.subject == "alice" and claims.expires == raw["exp"]


@pytest.mark.parametrize(
    "over",
    [
        {"exp": 32503680000},  # 2999-01-01: signed with the right key, lives for centuries
        {"exp": int(time.time()) + 25 * 3600},  # a day and an hour
        {"aud": "paygate-other"},  # minted for another deployment sharing the secret
        {"aud": None},
        {"iss": "someone-else"},
        {"iss": None},
        {"jti": None},  # cannot be revoked: refused
        {"jti": ""},
        {"jti": "x" * 129},
        {"jti": "a\x00b"},  # Postgres text cannot hold NUL: no id the list could hold
        {"sub": "eve\x00"},  # the audit log's actor
        {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 4000},  # issued later
    ],
)
def test_what_the_policy_refuses(over: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        tokens.verify(signed(**over), SECRET)


def test_the_lifetime_bound_is_the_policy_s() -> None:
    hour = TokenPolicy(max_ttl=3600)
    two_hours = signed(exp=int(time.time()) + 7200)
    assert tokens.verify(two_hours, SECRET).principal.subject == "eve"
    with pytest.raises(Unauthorized):
        tokens.verify(two_hours, SECRET, hour)
    with pytest.raises(TokenTooLong):
        tokens.mint(SECRET, "a", [READ], ttl=3601, policy=hour)


def test_the_policy_comes_from_the_settings() -> None:
    settings = Settings.from_env({"OPS_TOKEN_ISSUER": "bank-a", "OPS_TOKEN_AUDIENCE": "ops-eu",
                                  "OPS_TOKEN_MAX_TTL_SECONDS": "7200"})  # fmt: skip
    assert tokens.policy_of(settings) == TokenPolicy("bank-a", "ops-eu", 7200)
    assert tokens.policy_of(Settings.from_env({})).max_ttl == 24 * 3600


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_api_refuses_a_token_valid_until_2999_and_one_for_another_audience(
    client: TestClient[Any, Any],
) -> None:
    good = await client.get("/api/v1/payments", headers=bearer(tokens.mint(ADMIN, "a", [READ])))
    assert good.status == 200
    now = int(time.time())
    reviewed = jwt.encode({"sub": "eve", "roles": [WRITE], "iat": now, "exp": 32503680000},
                          ADMIN)  # the review's token: accepted until this change  # fmt: skip
    for token in (reviewed, signed(ADMIN, exp=32503680000), signed(ADMIN, aud="paygate-staging")):
        answer = await client.get("/api/v1/payments", headers=bearer(token))
        assert answer.status == 401, await answer.text()
        assert (await answer.json())["error"] == "unauthorized"


async def test_a_revoked_token_stops_working_in_every_process(
    make_client: MakeClient,
) -> None:
    one, two = await make_client(), await make_client()  # two gateways, one database
    admin = tokens.mint(ADMIN, "admin", [WRITE])
    leaked = tokens.mint(ADMIN, "mallory", [READ])
    leaked_id = tokens.verify(leaked, ADMIN).token_id
    for app in (one, two):
        assert (await app.get("/api/v1/payments", headers=bearer(leaked))).status == 200

    refused = await one.post("/api/v1/tokens/revoke", json={"jti": leaked_id},
                             headers=bearer(leaked))  # fmt: skip
    assert refused.status == 403  # revoking needs ops:write
    answer = await one.post("/api/v1/tokens/revoke", json={"jti": leaked_id},
                            headers=bearer(admin))  # fmt: skip
    assert answer.status == 200 and (await answer.json()) == {"revoked": leaked_id}

    for app in (one, two):
        after = await app.get("/api/v1/payments", headers=bearer(leaked))
        assert after.status == 401
    assert (await two.get("/api/v1/payments", headers=bearer(admin))).status == 200
    for jti in ("", "a\x00b", "line\nbreak"):  # a NUL was a 500 (schemathesis found it)
        bad = await one.post("/api/v1/tokens/revoke", json={"jti": jti}, headers=bearer(admin))
        assert bad.status == 422 and (await bad.json())["field"] == "jti", jti


async def test_a_shorter_configured_lifetime_refuses_longer_tokens(
    make_client: MakeClient,
) -> None:
    client = await make_client(ops_token_max_ttl_seconds=3600)
    two_hours = tokens.mint(ADMIN, "a", [READ], ttl=7200)  # fine under the default policy
    assert (await client.get("/api/v1/payments", headers=bearer(two_hours))).status == 401
    hour = tokens.mint(ADMIN, "a", [READ], ttl=3600)
    assert (await client.get("/api/v1/payments", headers=bearer(hour))).status == 200
