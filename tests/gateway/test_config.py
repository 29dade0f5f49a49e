"""Settings: defaults, parsing, and errors that name the variable but never a secret."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from gateway.config import Settings, describe
from gateway.errors import ConfigError


def test_defaults_match_seed_004_where_it_applies() -> None:
    s = Settings.from_env({})
    assert s.port == 3004
    assert s.redis_ttl_seconds == 86400
    assert s.kafka_topic == "payment.events"
    assert s.staging_batch_size == 1000
    assert s.staging_interval_seconds == 30
    assert s.staging_max_retries == 3
    assert s.webhook_timeout_ms == 5000
    assert s.reference_cache_ttl_days == 90
    assert s.partition_retention_months == 12
    assert s.partition_premake_months == 3
    assert s.max_body_bytes == 256 * 1024


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "PORT": "8080",
            "ENABLE_REDIS_CACHE": "false",
            "WEBHOOK_SECRET": "whsec_a  whsec_b",
            "RECONCILE_AMOUNT_TOLERANCE": "0.50",
            "TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "LOG_LEVEL": "debug",
        }
    )
    assert s.port == 8080
    assert s.enable_redis_cache is False
    assert s.webhook_secret == ("whsec_a", "whsec_b")
    assert s.reconcile_amount_tolerance == Decimal("0.50")
    assert len(s.trusted_proxies) == 2
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("ENABLE_METRICS", "maybe"),
        ("STAGING_BATCH_SIZE", "0"),
        ("PARTITION_RETENTION_ACTION", "archive"),
        ("TRUSTED_PROXIES", "not-a-cidr"),
        ("WRITE_BATCH_MAX_WAIT_MS", "nan"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_errors_and_repr_never_show_secrets() -> None:
    url = "postgresql://app:hunter2-secret@db:5432/pay"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"DATABASE_URL": "mysql://app:hunter2-secret@db/pay"})
    assert "hunter2" not in str(err.value)
    s = Settings.from_env(
        {"DATABASE_URL": url, "WEBHOOK_SECRET": "whsec_topsecret", "ADMIN_JWT_SECRET": "jwt-secret"}
    )
    shown = repr(s) + str(s)
    for secret in ("hunter2", "topsecret", "jwt-secret"):
        assert secret not in shown


def test_seed_style_database_variables_build_the_url() -> None:
    s = Settings.from_env(
        {"DB_HOST": "pg", "DB_PORT": "6543", "DB_DATABASE": "collect", "DB_USERNAME": "u",
         "DB_PASSWORD": "p@ss"}
    )  # fmt: skip
    assert s.database_url == "postgresql://u:p%40ss@pg:6543/collect"
    assert Settings.from_env({"KAFKA_BROKERS": "k:9092"}).kafka_bootstrap_servers == "k:9092"
    both = Settings.from_env({"DATABASE_URL": "postgresql://x@y/z", "DB_HOST": "pg"})
    assert both.database_url == "postgresql://x@y/z"


def test_pool_bounds_are_checked_together() -> None:
    with pytest.raises(ConfigError, match="DB_POOL_MIN"):
        Settings.from_env({"DB_POOL_MIN": "20", "DB_POOL_MAX": "5"})


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    documented = page.read_text()
    missing = [name for name, _, _ in describe() if f"`{name}`" not in documented]
    assert not missing, f"docs/configuration.md lacks: {missing}"


def test_server_processes_default_to_usable_cpus_and_an_explicit_value_wins() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert Settings.from_env({}).server_processes == cpus
    assert Settings.from_env({"WEB_CONCURRENCY": "3"}).server_processes == 3
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        Settings.from_env({"WEB_CONCURRENCY": "-1"})
