"""Secret rotation without a restart: SIGHUP re-reads the channels file.

The new registry is built completely (every key decoded, every CIDR parsed) before it
replaces the old one in a single reference swap, so a request sees either the old or
the new configuration, never a mix. A bad file changes nothing and is logged with the
loader's message (file and key, never a value). The log names each channel and how
many secrets it holds, never the secrets. Secrets given through `secrets_env` come
from this process's environment, which a signal cannot change: rotate those in the
file (`secrets = [...]`, file mode 0600) or restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.ingest.channels import Channel, ChannelRegistry, load_channels

log = logging.getLogger("paygate.security.reload")


class ReloadableChannels(ChannelRegistry):
    """The registry the app holds for its whole life; `swap` replaces what it serves."""

    def __init__(self, current: ChannelRegistry) -> None:
        super().__init__({})
        self.current = current

    def swap(self, new: ChannelRegistry) -> None:
        self.current = new

    def get(self, name: str) -> Channel | None:
        return self.current.get(name)

    def names(self) -> list[str]:
        return self.current.names()

    def __contains__(self, name: object) -> bool:
        return name in self.current

    def __len__(self) -> int:
        return len(self.current)


def describe(registry: ChannelRegistry) -> str:
    parts = []
    for name in registry.names():
        channel = registry.get(name)
        keys = len(channel.keys) if channel is not None else 0
        parts.append(f"{name} (keys={keys})")
    return ", ".join(parts)


def reload_channels(
    registry: ChannelRegistry, settings: Settings, *, environ: Mapping[str, str] | None = None
) -> bool:
    """Re-read the channels; True when the new configuration is live."""
    if not isinstance(registry, ReloadableChannels):
        log.error("channels reload unavailable: the registry is not reloadable")
        return False
    try:
        fresh = load_channels(settings, environ=environ)
    except (ConfigError, OSError) as exc:
        log.error("channels reload failed, keeping the previous configuration: %s", exc)
        return False
    registry.swap(fresh)
    log.info("channels reloaded: %s", describe(fresh))
    return True


@asynccontextmanager
async def reload_on_sighup(registry: ChannelRegistry, settings: Settings) -> AsyncIterator[None]:
    """Reload on SIGHUP while the app runs (only possible in the main thread)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_channels, registry, settings)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGHUP)
