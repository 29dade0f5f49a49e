"""Static checks of what operators deploy: Dockerfile, compose stack, alert rules, dashboard.

No Docker engine is needed: the files are parsed and checked against the code they
describe (metric names from gateway.observability.metrics, variables from gateway.config). promtool
validates the rules, the dashboard's queries and the /metrics exposition; it is optional
on a developer's machine but required in CI (tools/install-system-packages.sh installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from gateway import config
from gateway.observability import metrics as gateway_metrics

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "paygate.json"

METRIC_NAME = re.compile(r"\bpaygate_[a-z0-9_]+")
REQUIRED_SECRET = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")
UNSET_SECRET = re.compile(r"^\$\{[A-Z0-9_]+:-\}$")  # optional, empty unless .env sets it
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY)$")
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<password>[^@\s]+)@")


# --- helpers ----------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail("promtool is required in CI: run tools/install-system-packages.sh first")
    pytest.skip("promtool is not installed (tools/install-system-packages.sh installs it)")


def run_promtool(*args: str, stdin: bytes | None = None) -> None:
    result = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"


def declared_metrics() -> list[MetricWrapperBase]:
    return [m for m in vars(gateway_metrics).values() if isinstance(m, MetricWrapperBase)]


def declared_series() -> dict[str, str]:
    """Every series name gateway.observability.metrics can expose, mapped to its family name."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    series: dict[str, str] = {}
    for metric in declared_metrics():
        for family in metric.describe():
            for suffix in suffixes.get(family.type, ("",)):
                series[family.name + suffix] = family.name
    return series


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [value for key, value in walk(dashboard["panels"]) if key == "expr"]
    for variable in dashboard["templating"]["list"]:
        queries.append(variable["definition"])
    return queries


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form for environment"
    return {str(k): str(v) for k, v in env.items()}


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_runs_paygate_as_non_root_on_port_3004() -> None:
    instructions = dockerfile_instructions()
    stages = [args for word, args in instructions if word == "FROM"]
    assert stages, "no FROM"
    assert all(s.split()[0] == "python:3.11-slim" for s in stages)

    final = final_stage(instructions)
    users = [args for word, args in final if word == "USER"]
    assert users, "the runtime stage must switch to an unprivileged USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"

    exposed = {p for word, args in final if word == "EXPOSE" for p in args.split()}
    assert "3004" in exposed or "3004/tcp" in exposed

    env = " ".join(args for word, args in final if word == "ENV")
    assert re.search(r"\bHOST=0\.0\.0\.0\b", env), "bind all interfaces inside the container"
    assert re.search(r"\bPORT=3004\b", env)

    cmds = [args for word, args in final if word == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["paygate", "run"]


def test_dockerfile_sets_only_variables_that_exist() -> None:
    known = {name for name, _, _ in config.describe()} | {"PAYGATE_SQL_DIR"}
    final = final_stage(dockerfile_instructions())
    names = {
        m.group(1)
        for word, args in final
        if word == "ENV"
        for m in re.finditer(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", args)
    }
    ours = {n for n in names if n != "PATH" and not n.startswith(("PYTHON", "PIP_"))}
    assert ours - known == set(), f"unknown settings: {sorted(ours - known)}"
    assert {"HOST", "PORT", "PAYGATE_SQL_DIR"} <= ours


def test_dockerfile_installs_the_project_without_dev_extras_and_ships_migrations() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for word, args in instructions if word == "RUN")
    installs = r"pip install [^&;]*\s'?\.(\[otel\])?'?(\s|$)"
    assert re.search(installs, runs), "the project itself is installed (with traces)"
    assert "[dev]" not in runs

    final = final_stage(instructions)
    env = " ".join(args for word, args in final if word == "ENV")
    copies = [args for word, args in final if word == "COPY"]
    sql_dir = re.search(r"\bPAYGATE_SQL_DIR=(\S+)", env)
    if sql_dir:  # installed into site-packages: the runner is told where sql/ is
        assert any(c.split()[-1].rstrip("/") == sql_dir.group(1) for c in copies), copies
    else:  # editable install: the repo layout (with sql/ beside gateway/) must be kept
        assert "pip install -e" in runs or "pip install --editable" in runs
    assert list((ROOT / "sql").glob("*.sql")), "migrations to ship"


def test_dockerfile_healthcheck_probes_liveness_with_python_only() -> None:
    final = final_stage(dockerfile_instructions())
    checks = [args for word, args in final if word == "HEALTHCHECK"]
    assert len(checks) == 1
    argv = json.loads(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"]
    assert "/health/live" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")  # a syntax error would mark every container unhealthy


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include what the image needs"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "gateway", "workers", "sql"} <= included
    assert not included & {".venv", ".paygate", ".git", ".env", "tests"}


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_uses_official_images() -> None:
    images = {s.get("image", "") for s in compose_services().values()}
    assert "postgres:18" in images
    assert "redis:7" in images
    kafka = [i for i in images if i.startswith("apache/kafka:")]
    assert kafka, "Apache Kafka's official image"
    version = tuple(int(p) for p in kafka[0].split(":")[1].split("-")[0].split("."))
    assert version >= (3, 9, 0)


def test_compose_kafka_is_a_single_kraft_node_without_auto_topic_creation() -> None:
    kafka = next(s for s in compose_services().values() if "apache/kafka" in s.get("image", ""))
    env = environment(kafka)
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert re.fullmatch(r"1@[\w.-]+:\d+", env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
    assert "CONTROLLER://" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "zookeeper" not in json.dumps(kafka).lower()
    # KRaft cluster ids are 16 bytes in URL-safe base64 without padding.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def test_compose_creates_the_events_topic_once() -> None:
    services = compose_services()
    init = services["kafka-init"]
    argv = [*init.get("entrypoint", []), *init["command"]]
    assert "--create" in argv
    assert argv[argv.index("--topic") + 1] == "payment.events"
    assert argv[argv.index("--partitions") + 1] == "3"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init.get("restart", "no") == "no"


def test_compose_postgres_is_healthchecked_and_persists_its_data() -> None:
    postgres = compose_services()["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    # The 18+ images keep PGDATA in /var/lib/postgresql/18/docker: the volume goes on the parent.
    targets = [v.split(":")[1] for v in postgres["volumes"]]
    assert "/var/lib/postgresql" in targets


def test_compose_gateway_waits_for_healthy_deps_and_completed_migrations() -> None:
    services = compose_services()
    assert services["migrate"]["command"] == ["paygate", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    paygate = services["paygate"]
    assert paygate["command"] == ["paygate", "run"]
    deps = {name: d["condition"] for name, d in paygate["depends_on"].items()}
    assert deps["postgres"] == deps["redis"] == deps["kafka"] == "service_healthy"
    assert deps["migrate"] == deps["kafka-init"] == "service_completed_successfully"
    for name in ("postgres", "redis", "kafka"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck to be waited on"

    env = environment(paygate)
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"


def test_compose_passes_only_real_settings_to_paygate() -> None:
    known = {name for name, _, _ in config.describe()}
    services = compose_services()
    for name in ("paygate", "migrate"):
        # OTEL_* are OpenTelemetry's own variables, read by its SDK
        unknown = {k for k in environment(services[name]) if not k.startswith("OTEL_")} - known
        assert not unknown, f"{name} sets variables paygate does not read: {sorted(unknown)}"


def test_compose_holds_no_literal_secret() -> None:
    for name, service in compose_services().items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_SECRET.match(value) or UNSET_SECRET.match(value), (
                    f"{name}.{key} must be ${{{key}:?...}} (or ${{{key}:-}} when optional)"
                )
            url = URL_PASSWORD.match(value)
            if url:
                assert REQUIRED_SECRET.match(url.group("password")), f"{name}.{key} embeds one"
    paygate = environment(compose_services()["paygate"])
    for key in ("WEBHOOK_SECRET", "ADMIN_JWT_SECRET"):
        assert REQUIRED_SECRET.match(paygate[key]), f"{key} comes from the environment or .env"


def test_compose_prometheus_is_optional_and_mounts_the_rules() -> None:
    prometheus = compose_services()["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert any(v.startswith("./deploy/prometheus:") for v in prometheus["volumes"])


def test_compose_ports_bind_loopback_by_default() -> None:
    for name, service in compose_services().items():
        for port in service.get("ports", []):
            host = str(port).rsplit(":", 2)[0]
            assert "127.0.0.1" in host, f"{name} publishes {port} on every interface"


# --- Prometheus rules and config ----------------------------------------------------------


def test_alert_rules_name_only_declared_metrics() -> None:
    series = declared_series()
    families = set(series.values())
    for rule in alert_rules():
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used or rule["expr"].startswith("up{"), f"{rule['alert']} uses no paygate metric"
        assert used <= set(series), f"{rule['alert']}: unknown {sorted(used - set(series))}"
        prose = " ".join(rule["annotations"].values())
        mentioned = set(METRIC_NAME.findall(prose))
        assert mentioned <= set(series) | families, f"{rule['alert']} mentions {mentioned}"


def test_alert_rules_carry_severity_and_a_runbook() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 20, (
            f"{rule['alert']}: the description should tell the on-call what to check and do"
        )


def test_alert_rules_cover_seed_004_and_issue_8() -> None:
    exprs = " ".join(r["expr"] for r in alert_rules())
    for needle in (
        "paygate_staging_backlog",
        "paygate_webhook_request_duration_seconds_bucket",
        'paygate_kafka_publish_total{result!="ok"}',
        'paygate_db_pool_connections{state="in_use"}',
        "paygate_partition_default_rows",
        'paygate_partition_maintenance_runs_total{result="error"}',
        "paygate_dead_letters",
        "paygate_outbox_oldest_age_seconds",
        "paygate_write_queue_depth",
        'outcome="unavailable"',
        "paygate_signature_failures_total",
        'up{job="paygate"}',
    ):
        assert needle in exprs, f"no alert on {needle}"


def test_promtool_accepts_the_alert_rules() -> None:
    run_promtool("check", "rules", str(ALERTS))


def test_promtool_accepts_the_prometheus_config() -> None:
    config_file = load_yaml(PROMETHEUS)
    assert config_file["rule_files"] == ["alerts.yml"]
    targets = config_file["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["paygate:3004"], "the compose service and its PORT"
    run_promtool("check", "config", str(PROMETHEUS))


def _labels_only_rules(tmp_path: Path) -> Path:
    """The alert rules without annotations, so unit tests assert on labels alone."""
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "alerts_labels_only.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def _case(
    series: dict[str, str], alert: str, at: str, fired: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": x} for x in fired]}
        ],
    }


def test_alerts_fire_on_trouble_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    job = 'job="paygate",instance="gw:3004"'
    crit = {"severity": "critical", "job": "paygate"}
    warn = {"severity": "warning", "job": "paygate"}
    cases = [
        _case(
            {f"up{{{job}}}": "0x10"}, "PaygateTargetDown", "5m", [{**crit, "instance": "gw:3004"}]
        ),
        _case({f"up{{{job}}}": "1x10"}, "PaygateTargetDown", "5m", []),
        _case(
            {
                f'paygate_kafka_publish_total{{{job},result="ok"}}': "0+100x30",
                f'paygate_kafka_publish_total{{{job},result="retry"}}': "0+5x30",
            },
            "PaygateKafkaPublishFailures",
            "20m",
            [warn],
        ),
        _case(
            {
                f'paygate_kafka_publish_total{{{job},result="ok"}}': "0+1000x30",
                f'paygate_kafka_publish_total{{{job},result="retry"}}': "0+5x30",
            },
            "PaygateKafkaPublishFailures",
            "20m",
            [],
        ),
        _case(
            {
                f'paygate_db_pool_connections{{{job},state="in_use"}}': "10x20",
                f'paygate_db_pool_connections{{{job},state="max"}}': "10x20",
            },
            "PaygateDbPoolExhausted",
            "10m",
            [{**crit, "instance": "gw:3004"}],
        ),
        _case(
            {
                f'paygate_db_pool_connections{{{job},state="in_use"}}': "5x20",
                f'paygate_db_pool_connections{{{job},state="max"}}': "10x20",
            },
            "PaygateDbPoolExhausted",
            "10m",
            [],
        ),
        _case(
            {
                f'paygate_webhook_request_duration_seconds_bucket{{{job},channel="a",le="0.5"}}': (
                    "0+1x30"
                ),
                f'paygate_webhook_request_duration_seconds_bucket{{{job},channel="a",le="1.0"}}': (
                    "0+20x30"
                ),
                f'paygate_webhook_request_duration_seconds_bucket{{{job},channel="a",le="+Inf"}}': (
                    "0+20x30"
                ),
            },
            "PaygateWebhookLatencyHigh",
            "20m",
            [warn],
        ),
        _case({f"paygate_dead_letters{{{job}}}": "0 0 3x10"}, "PaygateDeadLetters", "5m", [crit]),
        _case({f"paygate_dead_letters{{{job}}}": "0x10"}, "PaygateDeadLetters", "5m", []),
        _case(
            {f"paygate_staging_backlog{{{job}}}": "20000x30"},
            "PaygateStagingBacklogHigh",
            "20m",
            [warn],
        ),
        _case(
            {f"paygate_staging_backlog{{{job}}}": "9000x30"}, "PaygateStagingBacklogHigh", "20m", []
        ),
        _case(
            {
                f'paygate_webhook_requests_total{{{job},channel="a",outcome="created"}}': (
                    "0+90x30"
                ),
                f'paygate_webhook_requests_total{{{job},channel="a",outcome="unavailable"}}': (
                    "0+10x30"
                ),
            },
            "PaygateHigh503Rate",
            "20m",
            [crit],
        ),
        _case(
            {f'paygate_partition_default_rows{{{job},table="payments"}}': "4x60"},
            "PaygateDefaultPartitionRows",
            "45m",
            [{**warn, "table": "payments"}],
        ),
        _case(
            {f"paygate_rate_limit_fallback{{{job}}}": "1x20"},
            "PaygateRateLimitFallback",
            "10m",
            [{**warn, "instance": "gw:3004"}],
        ),
        _case(
            {f"paygate_rate_limit_fallback{{{job}}}": "0x20"}, "PaygateRateLimitFallback", "10m", []
        ),
        _case(
            {
                f"paygate_db_synchronous_replication{{{job}}}": "0x30",
                f'paygate_db_standbys{{{job},state="async"}}': "1x30",
            },
            "PaygateAsynchronousStandby",
            "20m",
            [{**warn, "instance": "gw:3004"}],
        ),
        _case(
            {
                f"paygate_db_synchronous_replication{{{job}}}": "0x30",
                f'paygate_db_standbys{{{job},state="async"}}': "0x30",
            },
            "PaygateAsynchronousStandby",
            "20m",
            [],
        ),
        _case(
            {
                f"paygate_db_synchronous_replication{{{job}}}": "1x30",
                f'paygate_db_standbys{{{job},state="sync"}}': "1x30",
            },
            "PaygateAsynchronousStandby",
            "20m",
            [],
        ),
        _case(
            {f"paygate_outbox_oldest_age_seconds{{{job}}}": "300x20"},
            "PaygateOutboxLag",
            "15m",
            [warn],
        ),
    ]
    rules = _labels_only_rules(tmp_path)
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": cases})
    )
    run_promtool("test", "rules", str(tests))


# --- Grafana dashboard --------------------------------------------------------------------


def test_dashboard_is_importable_with_a_prometheus_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    sources = [value for key, value in walk(dashboard["panels"]) if key == "datasource"]
    assert sources
    assert all(s == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for s in sources)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_has_the_operator_rows() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = " ".join(p["title"].lower() for p in dashboard["panels"] if p["type"] == "row")
    for topic in ("traffic", "dedup", "writer", "outbox", "staging", "partitions", "security"):
        assert topic in rows, f"no {topic} row"


def test_dashboard_queries_name_only_declared_metrics() -> None:
    series = declared_series()
    used: set[str] = set()
    for query in dashboard_queries():
        used |= set(METRIC_NAME.findall(query))
    assert used <= set(series), f"unknown metrics: {sorted(used - set(series))}"
    for required in (
        "paygate_webhook_requests_total",
        "paygate_webhook_request_duration_seconds_bucket",
        "paygate_signature_failures_total",
        "paygate_dedup_hits_total",
        "paygate_write_batch_size_bucket",
        "paygate_write_commit_duration_seconds_bucket",
        "paygate_write_queue_depth",
        "paygate_outbox_pending",
        "paygate_outbox_oldest_age_seconds",
        "paygate_kafka_publish_total",
        "paygate_dead_letters",
        "paygate_staging_rows_total",
        "paygate_staging_backlog",
        "paygate_staging_batch_duration_seconds_bucket",
        "paygate_partition_default_rows",
        "paygate_db_pool_connections",
        "paygate_reconciliation_items_total",
        "paygate_rate_limited_total",
    ):
        assert required in used, f"the dashboard does not show {required}"


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    grafana_vars = {
        "$__rate_interval": "5m",
        "$__interval": "1m",
        "$__range": "6h",
        "$job": ".*",
        "$instance": ".*",
    }
    rules = []
    for n, query in enumerate(dashboard_queries()):
        if query.startswith("label_values("):
            query = query[len("label_values(") : query.rindex(",")]
        for var, value in grafana_vars.items():
            query = query.replace(var, value)
        assert "$" not in query, f"unhandled Grafana variable in {query}"
        rules.append({"record": f"dashboard:query_{n}", "expr": query})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


# --- /metrics exposition --------------------------------------------------------------------


def test_promtool_accepts_the_metrics_exposition() -> None:
    touched: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []
    for metric in declared_metrics():
        labelnames = metric._labelnames
        if labelnames:
            values = tuple("promtool_check" for _ in labelnames)
            metric.labels(*values)
            touched.append((metric, values))
    try:
        text = generate_latest(REGISTRY)
    finally:
        for metric, values in touched:
            metric.remove(*values)

    exposed = set(re.findall(r"^# TYPE (\S+) ", text.decode(), re.MULTILINE))
    for family in {f.name for m in declared_metrics() for f in m.describe()}:
        assert {family, f"{family}_total"} & exposed, f"{family} is missing from /metrics"
    run_promtool("check", "metrics", stdin=text)
