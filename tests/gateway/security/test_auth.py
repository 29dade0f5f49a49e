"""Ops tokens: what decodes, what does not, and which role allows which method."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.errors import Unauthorized
from gateway.security.auth import (
    READ,
    WRITE,
    Principal,
    bearer_token,
    decode_token,
    mint_token,
    required_role,
)

SECRET = "unit-test-admin-secret-0123456789abcdef" * 2  # long enough for HS512 too


def claims(**over: object) -> dict[str, object]:
    """What `paygate token` puts in a token, with `over` changed."""
    now = int(time.time())
    base = {"sub": "a", "roles": [READ], "iat": now, "exp": now + 60, "jti": "t-1",
            "iss": "paygate", "aud": "paygate-ops"}  # fmt: skip
    return {**base, **over}


def test_round_trip() -> None:
    principal = decode_token(mint_token(SECRET, "alice", [READ]), SECRET)
    assert principal == Principal("alice", frozenset({READ}))


def test_single_role_claim_is_accepted() -> None:
    body = claims(sub="bob", role=WRITE)
    del body["roles"]
    token = jwt.encode(body, SECRET)
    assert decode_token(token, SECRET).roles == {WRITE}


def test_unknown_roles_are_dropped() -> None:
    token = jwt.encode(claims(sub="x", roles=["admin", READ]), SECRET)
    assert decode_token(token, SECRET).roles == {READ}


def _bad_tokens() -> list[str]:
    now = int(time.time())
    good = claims()
    unsigned = jwt.encode(good, None, algorithm="none")
    return [
        mint_token("another-secret-of-sufficient-length-000", "a", [READ]),  # wrong key
        jwt.encode({**good, "exp": now - 3600}, SECRET),  # expired
        jwt.encode({k: v for k, v in good.items() if k != "exp"}, SECRET),  # no exp
        jwt.encode({k: v for k, v in good.items() if k != "sub"}, SECRET),  # no sub
        jwt.encode({**good, "sub": ""}, SECRET),
        jwt.encode(good, SECRET, algorithm="HS512"),  # another algorithm
        unsigned,  # alg none
        unsigned.rsplit(".", 1)[0] + ".",
        "not.a.token",
        "",
        mint_token(SECRET, "a", [READ])[:-3],  # truncated signature
    ]


@pytest.mark.parametrize("token", _bad_tokens())
def test_bad_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        decode_token(token, SECRET)


def test_write_grants_read_but_not_the_reverse() -> None:
    assert Principal("a", frozenset({WRITE})).allows(READ)
    assert not Principal("a", frozenset({READ})).allows(WRITE)
    assert not Principal("a", frozenset()).allows(READ)


@pytest.mark.parametrize(
    "method, role", [("GET", READ), ("HEAD", READ), ("POST", WRITE), ("DELETE", WRITE)]
)
def test_required_role(method: str, role: str) -> None:
    assert required_role(method) == role


@pytest.mark.parametrize(
    "header, token",
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
    ],
)
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token
