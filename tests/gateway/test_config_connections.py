"""Settings for production servers: Kafka security, Redis TLS/Sentinel/Cluster. A
combination that cannot work stops start-up with a message naming the variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not read by the settings, only checked to exist\n")
    return str(path)


def test_kafka_security_defaults_to_plaintext() -> None:
    s = Settings.from_env({})
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.kafka_sasl_mechanism == ""


def test_kafka_sasl_settings_are_parsed_case_insensitively() -> None:
    s = Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "paygate", "KAFKA_SASL_PASSWORD": "s3cret",
    })  # fmt: skip
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u",
          "KAFKA_SASL_PASSWORD": "p"}, "needs KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"},
         "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
          "KAFKA_SASL_PASSWORD": "p"}, "does not use SASL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI"},
         "expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of PLAINTEXT, SSL"),
        ({"KAFKA_SSL_CA_FILE": "{pem}"}, "does not use TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_FILE": "{pem}"},
         "KAFKA_SSL_KEY_FILE needs KAFKA_SSL_CERT_FILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
         "KAFKA_SSL_CA_FILE: '/nonexistent/ca.pem' is not a readable file"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "must be set together"),
        ({"REDIS_SENTINELS": "127.0.0.1", "REDIS_SENTINEL_MASTER": "m"}, "expected host:port"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m",
          "REDIS_CLUSTER": "true"}, "exclude each other"),
        ({"REDIS_URL": "redis://cache:6379/0", "REDIS_TLS_CA_FILE": "{pem}"},
         "not a rediss:// (TLS) URL"),
        ({"REDIS_URL": "rediss://cache:6380/0", "REDIS_TLS_KEY_FILE": "{pem}"},
         "REDIS_TLS_KEY_FILE needs REDIS_TLS_CERT_FILE"),
    ],
)  # fmt: skip
def test_combinations_that_cannot_work_stop_start_up(
    environ: dict[str, str], message: str, pem: str
) -> None:
    environ = {k: v.format(pem=pem) for k, v in environ.items()}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(environ)


def test_a_secret_is_not_shown_when_a_combination_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"KAFKA_SASL_PASSWORD": "hunter2-very-secret"})
    assert "hunter2" not in str(caught.value)


def test_sentinels_without_a_url_get_one_naming_the_master() -> None:
    s = Settings.from_env({
        "REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379,[fd00::3]:26379",
        "REDIS_SENTINEL_MASTER": "payments",
    })  # fmt: skip
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("fd00::3", 26379))
    assert s.redis_url == "redis://payments/0"
    assert s.shared_rate_limits  # Redis counts as configured


def test_sentinels_keep_the_urls_scheme_and_credentials() -> None:
    s = Settings.from_env({
        "REDIS_URL": "rediss://paygate:pw@ignored:6379/2",
        "REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": "payments",
    })  # fmt: skip
    assert s.redis_url == "rediss://paygate:pw@ignored:6379/2"
