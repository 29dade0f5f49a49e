"""Source security and the ops API's door: installed by `gateway.app` as a feature.

- allowlist + per-channel token bucket, run by the webhook handler before the body is
  read (`appkeys.SOURCE_GUARD`);
- the delivery-id replay guard (`appkeys.REPLAY_GUARD`);
- a global in-flight bound on webhook requests (`appkeys.INFLIGHT`, entered by the webhook
  handler), and bearer-JWT auth for the rest of /api/v1/ (a request gate run by the
  request-context middleware, so errors render as JSON);
- SIGHUP reloads the channels file.

docs/security.md lists which limit fails open and which fails closed, and why.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import appkeys
from gateway.security.auth import ops_gate
from gateway.security.guard import ChannelSourceGuard
from gateway.security.inflight import InFlight
from gateway.security.reload import ReloadableChannels, reload_channels, sighup_ctx
from gateway.security.replay import DeliveryReplayGuard

__all__ = ["INFLIGHT", "install", "reload_channels"]

log = logging.getLogger("paygate.security")

INFLIGHT = appkeys.INFLIGHT


def install(app: web.Application) -> None:
    settings = app[appkeys.SETTINGS]
    if settings.admin_jwt_secret and len(settings.admin_jwt_secret.encode()) < 32:
        log.warning("ADMIN_JWT_SECRET is shorter than 32 bytes; use a longer random secret")
    channels = app[appkeys.CHANNELS]
    registry = (
        channels if isinstance(channels, ReloadableChannels) else ReloadableChannels(channels)
    )
    app[appkeys.CHANNELS] = registry

    def tolerance_of(name: str) -> int:
        channel = registry.get(name)
        return (
            channel.tolerance_seconds
            if channel is not None
            else settings.signature_tolerance_seconds
        )

    replay = DeliveryReplayGuard(tolerance_of)
    app[appkeys.SOURCE_GUARD] = ChannelSourceGuard(settings.trusted_proxies)
    app[appkeys.REPLAY_GUARD] = replay

    app[INFLIGHT] = InFlight(settings.max_in_flight_requests)
    app[appkeys.REQUEST_GATES].append(ops_gate(settings.admin_jwt_secret))

    app.cleanup_ctx.append(sighup_ctx)
