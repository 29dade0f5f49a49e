"""Settings from environment variables.

One frozen dataclass; every field names its variable, its parser and whether it
is a secret. A bad value stops start-up with a message that names the variable
(never its value when it is a secret), and `repr` never shows a secret.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from gateway.errors import ConfigError

Parser = Callable[[str], Any]

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(low: int | None = None, high: int | None = None) -> Parser:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if low is not None and value < low:
            raise ValueError(f"must be >= {low}")
        if high is not None and value > high:
            raise ValueError(f"must be <= {high}")
        return value

    return parse


def _float(low: float = 0.0) -> Parser:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not value >= low:  # also rejects NaN
            raise ValueError(f"must be >= {low}")
        return value

    return parse


def _fraction(raw: str) -> float:
    value = float(raw.strip())
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError("must be between 0 and 1")
    return value


def _decimal(raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip())
    except InvalidOperation as exc:
        raise ValueError("expected a decimal number") from exc
    if not value.is_finite() or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def _choice(*options: str) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw.strip()


def _secret_list(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.split() if part)


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    parts = [p for p in raw.replace(",", " ").split() if p]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def _upper_choice(*options: str) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (a bracketed IPv6 host keeps its colons)."""
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {part!r}")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected debug, info, warning, error or critical")
    return value


def env(name: str, default: Any, parse: Parser = _str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": name, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # Server
    host: str = env("HOST", "127.0.0.1")
    port: int = env("PORT", 3004, _int(0, 65535))
    # 0: one server process per CPU this process may use (server_processes).
    web_concurrency: int = env("WEB_CONCURRENCY", 0, _int(0, 64))
    log_level: str = env("LOG_LEVEL", "INFO", _log_level)
    enable_metrics: bool = env("ENABLE_METRICS", True, _bool)
    metrics_port: int = env("METRICS_PORT", 0, _int(0, 65535))
    max_body_bytes: int = env("MAX_BODY_BYTES", 256 * 1024, _int(1024, 64 * 1024 * 1024))
    webhook_timeout_ms: int = env("WEBHOOK_TIMEOUT_MS", 5000, _int(10, 600_000))
    shutdown_timeout_seconds: float = env("SHUTDOWN_TIMEOUT_SECONDS", 15.0, _float(0.1))
    max_in_flight_requests: int = env("MAX_IN_FLIGHT_REQUESTS", 4096, _int(1))
    client_timeout_seconds: float = env("CLIENT_TIMEOUT_SECONDS", 10.0, _float(0.1))
    # Connections open at once from one address (IPv6: a /64), per process; 0: no bound.
    max_connections_per_source: int = env("MAX_CONNECTIONS_PER_SOURCE", 1024, _int(0))
    tls_cert_file: str = env("TLS_CERT_FILE", "")
    tls_key_file: str = env("TLS_KEY_FILE", "")

    # Connections. Unset URLs mean "start the embedded server" under `paygate dev`.
    database_url: str = env("DATABASE_URL", "", secret=True)
    redis_url: str = env("REDIS_URL", "", secret=True)
    kafka_bootstrap_servers: str = env("KAFKA_BOOTSTRAP_SERVERS", "")
    db_pool_min: int = env("DB_POOL_MIN", 2, _int(1, 1000))
    db_pool_max: int = env("DB_POOL_MAX", 10, _int(1, 1000))
    db_statement_cache_size: int = env("DB_STATEMENT_CACHE_SIZE", 100, _int(0))

    # Redis
    enable_redis_cache: bool = env("ENABLE_REDIS_CACHE", True, _bool)
    redis_ttl_seconds: int = env("REDIS_TTL_SECONDS", 86400, _int(1))
    redis_timeout_ms: int = env("REDIS_TIMEOUT_MS", 50, _int(1, 60_000))
    redis_breaker_failures: int = env("REDIS_BREAKER_FAILURES", 3, _int(1))
    redis_breaker_reset_seconds: float = env("REDIS_BREAKER_RESET_SECONDS", 5.0, _float(0.01))

    # Redis over TLS (a rediss:// URL), Sentinel and Cluster
    redis_tls_ca_file: str = env("REDIS_TLS_CA_FILE", "")
    redis_tls_cert_file: str = env("REDIS_TLS_CERT_FILE", "")
    redis_tls_key_file: str = env("REDIS_TLS_KEY_FILE", "")
    redis_sentinels: tuple[tuple[str, int], ...] = env("REDIS_SENTINELS", (), _host_ports)
    redis_sentinel_master: str = env("REDIS_SENTINEL_MASTER", "")
    redis_sentinel_password: str = env("REDIS_SENTINEL_PASSWORD", "", secret=True)
    redis_cluster: bool = env("REDIS_CLUSTER", False, _bool)

    # Rate limits: `redis` shares each channel's bucket through Redis (per process when
    # there is no REDIS_URL at all); `local` keeps one bucket per process
    rate_limit_backend: str = env("RATE_LIMIT_BACKEND", "redis", _choice("redis", "local"))
    rate_limit_fallback_floor: float = env("RATE_LIMIT_FALLBACK_FLOOR", 0.0, _fraction)
    # A source whose webhooks fail verification is refused (429) before its next body is
    # read once it has failed this often; 0 turns it off. Per process.
    unverified_rate_per_source: float = env("UNVERIFIED_RATE_PER_SOURCE", 1.0, _float(0.0))
    unverified_burst_per_source: int = env("UNVERIFIED_BURST_PER_SOURCE", 30, _int(1))

    # Kafka
    kafka_topic: str = env("KAFKA_TOPIC", "payment.events")
    kafka_client_id: str = env("KAFKA_CLIENT_ID", "paygate")
    kafka_batch_size: int = env("KAFKA_BATCH_SIZE", 500, _int(1, 100_000))
    kafka_topic_partitions: int = env("KAFKA_TOPIC_PARTITIONS", 3, _int(1, 1000))
    # 0: 3, or fewer when the cluster has fewer brokers (a dev broker gets 1)
    kafka_topic_replication_factor: int = env("KAFKA_TOPIC_REPLICATION_FACTOR", 0, _int(0, 32))
    kafka_enable_idempotence: bool = env("KAFKA_ENABLE_IDEMPOTENCE", False, _bool)
    kafka_request_timeout_ms: int = env("KAFKA_REQUEST_TIMEOUT_MS", 5000, _int(100))
    kafka_security_protocol: str = env(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _upper_choice(*KAFKA_SECURITY_PROTOCOLS),
    )
    kafka_sasl_mechanism: str = env(
        "KAFKA_SASL_MECHANISM", "", _upper_choice(*KAFKA_SASL_MECHANISMS)
    )
    kafka_sasl_username: str = env("KAFKA_SASL_USERNAME", "")
    kafka_sasl_password: str = env("KAFKA_SASL_PASSWORD", "", secret=True)
    kafka_ssl_ca_file: str = env("KAFKA_SSL_CA_FILE", "")
    kafka_ssl_cert_file: str = env("KAFKA_SSL_CERT_FILE", "")
    kafka_ssl_key_file: str = env("KAFKA_SSL_KEY_FILE", "")

    # Webhooks and signatures
    webhook_secret: tuple[str, ...] = env("WEBHOOK_SECRET", (), _secret_list, secret=True)
    webhook_scheme: str = env(
        "WEBHOOK_SCHEME", "standard", _choice("standard", "stripe", "github", "shopify")
    )
    channels_file: str = env("CHANNELS_FILE", "")
    signature_tolerance_seconds: int = env("SIGNATURE_TOLERANCE_SECONDS", 300, _int(1))
    payment_date_max_future_days: int = env("PAYMENT_DATE_MAX_FUTURE_DAYS", 31, _int(0))
    trusted_proxies: tuple[Any, ...] = env("TRUSTED_PROXIES", (), _networks)

    # Dedup
    enable_memory_cache: bool = env("ENABLE_MEMORY_CACHE", True, _bool)
    memory_cache_max_size: int = env("MEMORY_CACHE_MAX_SIZE", 100_000, _int(1))
    cache_warm_count: int = env("CACHE_WARM_COUNT", 10_000, _int(0))
    reference_cache_ttl_days: int = env("REFERENCE_CACHE_TTL_DAYS", 90, _int(1))

    # Group commit
    write_batch_max_size: int = env("WRITE_BATCH_MAX_SIZE", 500, _int(1, 100_000))
    write_batch_max_wait_ms: float = env("WRITE_BATCH_MAX_WAIT_MS", 2.0, _float(0.0))
    write_concurrency: int = env("WRITE_CONCURRENCY", 1, _int(1, 64))
    write_queue_max: int = env("WRITE_QUEUE_MAX", 20_000, _int(1))

    # Outbox relay
    enable_outbox_relay: bool = env("ENABLE_OUTBOX_RELAY", True, _bool)
    outbox_max_attempts: int = env("OUTBOX_MAX_ATTEMPTS", 10, _int(1))
    outbox_poll_interval_ms: int = env("OUTBOX_POLL_INTERVAL_MS", 1000, _int(10))
    outbox_backoff_base_ms: int = env("OUTBOX_BACKOFF_BASE_MS", 500, _int(1))
    outbox_backoff_max_seconds: float = env("OUTBOX_BACKOFF_MAX_SECONDS", 300.0, _float(0.01))

    # Staging processor
    enable_staging_processor: bool = env("ENABLE_STAGING_PROCESSOR", True, _bool)
    staging_batch_size: int = env("STAGING_BATCH_SIZE", 1000, _int(1, 1_000_000))
    staging_interval_seconds: float = env("STAGING_INTERVAL_SECONDS", 30.0, _float(0.01))
    staging_max_retries: int = env("STAGING_MAX_RETRIES", 3, _int(0))

    # Partitions and retention
    enable_partition_maintenance: bool = env("ENABLE_PARTITION_MAINTENANCE", True, _bool)
    partition_retention_months: int = env("PARTITION_RETENTION_MONTHS", 12, _int(1))
    partition_premake_months: int = env("PARTITION_PREMAKE_MONTHS", 3, _int(0, 120))
    # Keep a payments month past retention while work still depends on it (pending
    # payments, parked updates, unpublished events, open exceptions): workers/partitions.py.
    partition_retention_wait: bool = env("PARTITION_RETENTION_WAIT", True, _bool)
    partition_retention_action: str = env(
        "PARTITION_RETENTION_ACTION", "detach", _choice("detach", "drop")
    )
    partition_maintenance_interval_seconds: float = env(
        "PARTITION_MAINTENANCE_INTERVAL_SECONDS", 3600.0, _float(1)
    )
    webhook_events_retention_months: int = env("WEBHOOK_EVENTS_RETENTION_MONTHS", 3, _int(1))
    audit_log_retention_months: int = env("AUDIT_LOG_RETENTION_MONTHS", 84, _int(1))

    # Reconciliation
    enable_status_poller: bool = env("ENABLE_STATUS_POLLER", True, _bool)
    reconcile_stale_after_seconds: float = env("RECONCILE_STALE_AFTER_SECONDS", 3600.0, _float(1))
    reconcile_interval_seconds: float = env("RECONCILE_INTERVAL_SECONDS", 300.0, _float(0.01))
    reconcile_concurrency: int = env("RECONCILE_CONCURRENCY", 4, _int(1, 256))
    reconcile_amount_tolerance: Decimal = env("RECONCILE_AMOUNT_TOLERANCE", Decimal("0"), _decimal)
    reconcile_date_tolerance_days: int = env("RECONCILE_DATE_TOLERANCE_DAYS", 3, _int(0, 366))
    # Statement uploads: spooled to a temporary file before the import takes a connection.
    reconcile_max_statement_bytes: int = env(
        "RECONCILE_MAX_STATEMENT_BYTES", 256 * 1024 * 1024, _int(1024)
    )
    reconcile_max_line_bytes: int = env("RECONCILE_MAX_LINE_BYTES", 64 * 1024, _int(64))
    reconcile_upload_timeout_seconds: float = env(
        "RECONCILE_UPLOAD_TIMEOUT_SECONDS", 300.0, _float(0.1)
    )

    # Ops API
    admin_jwt_secret: str = env("ADMIN_JWT_SECRET", "", secret=True)
    # What an ops token must claim, and the longest lifetime one may have (longer is refused)
    ops_token_issuer: str = env("OPS_TOKEN_ISSUER", "paygate")
    ops_token_audience: str = env("OPS_TOKEN_AUDIENCE", "paygate-ops")
    ops_token_max_ttl_seconds: int = env("OPS_TOKEN_MAX_TTL_SECONDS", 86400, _int(60, 30 * 86400))
    # The console is reached over https whatever the connection says (a TLS-terminating
    # proxy that is not in TRUSTED_PROXIES or sends no X-Forwarded-Proto)
    force_https: bool = env("FORCE_HTTPS", False, _bool)

    # Embedded development stack (`paygate dev`)
    data_dir: str = env("PAYGATE_DATA_DIR", ".paygate")
    embedded_pg_port: int = env("EMBEDDED_PG_PORT", 54329, _int(0, 65535))
    embedded_redis_port: int = env("EMBEDDED_REDIS_PORT", 63799, _int(0, 65535))
    embedded_kafka_port: int = env("EMBEDDED_KAFKA_PORT", 19092, _int(0, 65535))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                shown = "" if f.metadata["secret"] else f" (got {raw!r})"
                raise ConfigError(f"invalid value for {name}{shown}: {exc}") from None
        values.setdefault("database_url", _database_url_from_parts(environ))
        values.setdefault("redis_url", _redis_url_from_parts(environ))
        master = environ.get("REDIS_SENTINEL_MASTER", "").strip()
        if master and environ.get("REDIS_SENTINELS", "").strip() and not values["redis_url"]:
            # The sentinels name the master's address; the URL then only carries the
            # scheme (TLS or not), credentials and database, and may be left out.
            values["redis_url"] = f"redis://{quote(master, safe='')}/0"
        kafka = environ.get("KAFKA_BROKERS", "").strip()
        if kafka:
            values.setdefault("kafka_bootstrap_servers", kafka)
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.db_pool_min > self.db_pool_max:
            raise ConfigError("invalid value for DB_POOL_MIN: must be <= DB_POOL_MAX")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        for name, url, schemes in (
            ("DATABASE_URL", self.database_url, ("postgres://", "postgresql://")),
            ("REDIS_URL", self.redis_url, ("redis://", "rediss://", "unix://")),
        ):
            if url and not url.startswith(schemes):
                raise ConfigError(f"invalid value for {name}: expected a {schemes[0]} URL")
        _check_files(self)
        _check_kafka_security(self)
        _check_redis_topology(self)

    @property
    def shared_rate_limits(self) -> bool:
        """Channel buckets in Redis (shared by every process) rather than per process."""
        if self.rate_limit_backend == "local":
            return False
        return bool(self.redis_url)

    def require_database(self) -> None:
        """Every command that talks to Postgres starts here: one message for a missing URL."""
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set (or DB_HOST and friends; `paygate dev` starts "
                "an embedded Postgres instead)"
            )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def server_processes(self) -> int:
        """How many server processes share the port: WEB_CONCURRENCY when given, else one
        per CPU this process may run on (its affinity mask, which a container's cpuset
        narrows; not the host's core count)."""
        return self.web_concurrency or usable_cpus()

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"] and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__


def _check_files(s: Settings) -> None:
    """Certificate files are read when a client connects, maybe minutes after start-up:
    a wrong path must stop start-up instead, naming the variable."""
    for name in (
        "TLS_CERT_FILE", "TLS_KEY_FILE", "KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE",
        "KAFKA_SSL_KEY_FILE", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE",
    ):  # fmt: skip
        path = getattr(s, name.lower())
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"invalid value for {name}: {path!r} is not a readable file")


def _check_kafka_security(s: Settings) -> None:
    """Refuse combinations that cannot work, rather than a client that silently ignores
    half of them (or fails its handshake later with a less helpful message)."""
    protocol = s.kafka_security_protocol
    sasl = protocol.startswith("SASL_")
    if sasl and not s.kafka_sasl_mechanism:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM "
            f"({', '.join(KAFKA_SASL_MECHANISMS)})"
        )
    if sasl and not (s.kafka_sasl_username and s.kafka_sasl_password):
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    if not sasl and (s.kafka_sasl_mechanism or s.kafka_sasl_username or s.kafka_sasl_password):
        raise ConfigError(
            f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
            "(SASL_SSL or SASL_PLAINTEXT)"
        )
    files = s.kafka_ssl_ca_file or s.kafka_ssl_cert_file or s.kafka_ssl_key_file
    if files and not protocol.endswith("SSL"):
        raise ConfigError(
            f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
            "(SSL or SASL_SSL)"
        )
    if s.kafka_ssl_key_file and not s.kafka_ssl_cert_file:
        raise ConfigError("KAFKA_SSL_KEY_FILE needs KAFKA_SSL_CERT_FILE (the client certificate)")


def _check_redis_topology(s: Settings) -> None:
    if bool(s.redis_sentinels) != bool(s.redis_sentinel_master):
        raise ConfigError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER must be set together")
    if s.redis_sentinels and s.redis_cluster:
        raise ConfigError("REDIS_SENTINELS and REDIS_CLUSTER=true exclude each other")
    if s.redis_sentinels and not s.redis_url:
        raise ConfigError("REDIS_SENTINELS is set but REDIS_URL is empty")
    if (s.redis_cluster or s.redis_sentinels) and s.redis_url.startswith("unix://"):
        raise ConfigError("REDIS_URL: a unix:// socket cannot reach a Sentinel or Cluster")
    if (s.redis_tls_ca_file or s.redis_tls_cert_file) and not s.redis_url.startswith("rediss://"):
        raise ConfigError("REDIS_TLS_* is set but REDIS_URL is not a rediss:// (TLS) URL")
    if s.redis_tls_key_file and not s.redis_tls_cert_file:
        raise ConfigError("REDIS_TLS_KEY_FILE needs REDIS_TLS_CERT_FILE (the client certificate)")


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _database_url_from_parts(environ: Mapping[str, str]) -> str:
    """Seed 004 configures Postgres as DB_HOST/DB_PORT/...; DATABASE_URL wins when set."""
    host = environ.get("DB_HOST", "").strip()
    if not host:
        return ""
    user = quote(environ.get("DB_USERNAME", "postgres"), safe="")
    password = environ.get("DB_PASSWORD", "")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    port = environ.get("DB_PORT", "5432").strip()
    database = quote(environ.get("DB_DATABASE", "postgres"), safe="")
    return f"postgresql://{auth}@{host}:{port}/{database}"


def _redis_url_from_parts(environ: Mapping[str, str]) -> str:
    host = environ.get("REDIS_HOST", "").strip()
    if not host:
        return ""
    port = environ.get("REDIS_PORT", "6379").strip()
    return f"redis://{host}:{port}/0"


def describe() -> list[tuple[str, str, bool]]:
    """(variable, default, secret) per setting; docs/configuration.md is checked against it."""
    return [
        (f.metadata["env"], repr(f.default), f.metadata["secret"])
        for f in dataclasses.fields(Settings)
    ]
