"""The worker registry: names, the old name of the status poller, and the switches."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.notify import Wakeup
from workers.registry import WORKERS, build_workers, resolve


def test_the_old_reconcile_name_means_the_status_poller(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve(["outbox", "reconcile"]) == ["outbox", "status_poller"]
    assert "now called 'status_poller'" in caplog.text


def test_an_unknown_worker_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown worker 'relay'; one of outbox, staging"):
        resolve(["relay"])


def test_settings_switch_workers_on_and_a_name_list_overrides_them() -> None:
    off = Settings.from_env({}, **{spec.switch: False for spec in WORKERS.values()})
    pool = object()  # the workers only keep it until they start
    assert build_workers(pool, off, Wakeup()) == []  # type: ignore[arg-type]
    named = build_workers(pool, off, Wakeup(), only=["staging"])  # type: ignore[arg-type]
    assert [w.name for w in named] == ["staging"]
    only_outbox = {spec.switch: name == "outbox" for name, spec in WORKERS.items()}
    on = Settings.from_env({}, **only_outbox)
    assert [w.name for w in build_workers(pool, on, Wakeup())] == ["outbox"]  # type: ignore[arg-type]


def test_the_command_line_names_every_worker_the_registry_runs() -> None:
    from workers.cli.worker import NAMES

    assert tuple(WORKERS) == NAMES
