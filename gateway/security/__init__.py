"""Source security and the ops API's door, built once per app by `gateway.app`:

- allowlist and the failed-verification budget per source, run by the webhook handler
  before the body is read, and the per-channel token bucket, charged after the signature
  passes (`appkeys.SOURCE_GUARD`);
- the delivery-id replay guard (`appkeys.REPLAY_GUARD`);
- a global in-flight bound on webhook requests (`appkeys.INFLIGHT`, entered by the webhook
  handler), and bearer-JWT auth for the ops routes (the gates of `ops:read` and
  `ops:write` routes, run by the request context, so errors render as JSON);
- SIGHUP reloads the channels file (`reload.reload_on_sighup`).

docs/security.md lists which limit fails open and which fails closed, and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.config import Settings
from gateway.ingest.channels import ChannelRegistry
from gateway.security.access import Access, Gate
from gateway.security.auth import READ, WRITE, ops_gate
from gateway.security.guard import ChannelSourceGuard
from gateway.security.inflight import InFlight
from gateway.security.ratelimit import RateLimiter
from gateway.security.reload import ReloadableChannels
from gateway.security.replay import DeliveryReplayGuard
from gateway.security.shared_ratelimit import SharedRateLimiter
from gateway.security.tokens import Revocations, policy_of
from gateway.security.unverified import UnverifiedSources

log = logging.getLogger("paygate.security")


@dataclass(frozen=True)
class SourceSecurity:
    channels: ReloadableChannels
    source_guard: ChannelSourceGuard
    # The shared limiter, when the channel buckets live in Redis: `gateway.app` attaches
    # its lease store once Redis is open.
    shared_limiter: SharedRateLimiter | None
    replay_guard: DeliveryReplayGuard
    inflight: InFlight
    ops_gates: dict[Access, Gate]


def build(
    settings: Settings, channels: ChannelRegistry, revocations: Revocations | None = None
) -> SourceSecurity:
    if settings.admin_jwt_secret and len(settings.admin_jwt_secret.encode()) < 32:
        log.warning("ADMIN_JWT_SECRET is shorter than 32 bytes; use a longer random secret")
    registry = (
        channels if isinstance(channels, ReloadableChannels) else ReloadableChannels(channels)
    )

    def tolerance_of(name: str) -> int:
        channel = registry.get(name)
        return (
            channel.tolerance_seconds
            if channel is not None
            else settings.signature_tolerance_seconds
        )

    shared = (
        SharedRateLimiter(
            None,
            timeout=settings.redis_timeout_ms / 1000,
            floor=settings.rate_limit_fallback_floor,
            default_instances=settings.server_processes,
        )
        if settings.shared_rate_limits
        else None
    )
    policy = policy_of(settings)
    return SourceSecurity(
        channels=registry,
        source_guard=ChannelSourceGuard(
            settings.trusted_proxies,
            shared or RateLimiter(),
            UnverifiedSources(
                settings.unverified_rate_per_source, settings.unverified_burst_per_source
            ),
        ),
        shared_limiter=shared,
        replay_guard=DeliveryReplayGuard(tolerance_of),
        inflight=InFlight(settings.max_in_flight_requests),
        ops_gates={
            access: ops_gate(settings.admin_jwt_secret, role, policy, revocations)
            for access, role in ((Access.OPS_READ, READ), (Access.OPS_WRITE, WRITE))
        },
    )
