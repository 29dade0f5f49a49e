"""Calling the ops API in tests: tokens, authorised requests, and a channel whose mapping
can be broken and fixed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.security.auth import READ, WRITE, mint_token
from gateway.security.reload import reload_channels
from tests.conftest import TEST_SECRET

# The provider sends its amount as "amount_value"; the broken mapping looks for "total".
BROKEN_MAPPING = "total"
FIXED_MAPPING = "amount_value"


def token(client: TestClient[Any, Any], *, role: str = WRITE, subject: str = "alice") -> str:
    secret = client.server.app[appkeys.SETTINGS].admin_jwt_secret
    return mint_token(secret, subject, [role])


def auth(
    client: TestClient[Any, Any], *, role: str = WRITE, subject: str = "alice"
) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(client, role=role, subject=subject)}"}


async def get(
    client: TestClient[Any, Any], path: str, *, role: str = READ, **params: Any
) -> tuple[int, Any]:
    resp = await client.get(path, params=params, headers=auth(client, role=role))
    return resp.status, await resp.json(content_type=None)


async def post(
    client: TestClient[Any, Any], path: str, doc: Any = None, *, role: str = WRITE,
    subject: str = "alice",
) -> tuple[int, Any]:  # fmt: skip
    resp = await client.post(path, json=doc if doc is not None else {},
                             headers=auth(client, role=role, subject=subject))  # fmt: skip
    return resp.status, await resp.json(content_type=None)


def partner_channels(tmp_path: Path, amount_path: str) -> str:
    """A `partner` channel (standard scheme, the test secret) mapping its own field names."""
    path = tmp_path / "channels.toml"
    path.write_text(
        f"""
[channels.partner]
secrets = ["{TEST_SECRET}"]
event_type_path = "type"
[channels.partner.fields]
reference_number = "ref"
amount = "{amount_path}"
loan_account_number = "account"
cif = "customer"
payment_date = "paid_on"
[channels.partner.status_map]
"payment.succeeded" = "succeeded"
"""
    )
    return str(path)


def fix_partner_mapping(client: TestClient[Any, Any], path: str) -> None:
    """Rewrite the channels file with the fixed mapping and reload it (what SIGHUP does)."""
    text = Path(path).read_text().replace(f'"{BROKEN_MAPPING}"', f'"{FIXED_MAPPING}"')
    Path(path).write_text(text)
    app = client.server.app
    assert reload_channels(app[appkeys.CHANNELS], app[appkeys.SETTINGS])


def partner_doc(
    ref: str, *, event_type: str = "payment.succeeded", amount: str = "42.10"
) -> dict[str, Any]:
    return {"type": event_type, "ref": ref, FIXED_MAPPING: amount, "account": "LA-7",
            "customer": "CIF-7", "paid_on": datetime.now(UTC).date().isoformat()}  # fmt: skip
