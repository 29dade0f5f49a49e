# syntax=docker/dockerfile:1
# paygate production image: `docker build -t paygate .`
#
# The builder stage installs the project and its dependencies (wheels only, no dev
# extras) into a virtualenv; the runtime stage copies that virtualenv and the SQL
# migrations, and runs as an unprivileged user.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.m[d]: the glob keeps the build working before the README exists.
COPY pyproject.toml README.m[d] ./
COPY gateway ./gateway
COPY workers ./workers
RUN pip install --upgrade pip setuptools wheel \
    && pip install --only-binary=:all: '.[otel]' \
    && pip check


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="paygate" \
      org.opencontainers.image.description="Payment-webhook ingestion gateway"

# A fixed numeric uid/gid so orchestrators can verify runAsNonRoot.
RUN groupadd --system --gid 10001 paygate \
    && useradd --system --uid 10001 --gid paygate --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin paygate \
    && install -d -o paygate -g paygate -m 0750 /var/lib/paygate

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY sql /app/sql

# The package lives in site-packages, so tell the migration runner where sql/ is. The
# data dir is the one writable place (prometheus multiprocess files when WEB_CONCURRENCY > 1).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYGATE_SQL_DIR=/app/sql \
    PAYGATE_DATA_DIR=/var/lib/paygate \
    HOST=0.0.0.0 \
    PORT=3004

USER 10001:10001

EXPOSE 3004

# Liveness only (process up, event loop answering): readiness belongs to the orchestrator.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '3004'), timeout=4)"]

STOPSIGNAL SIGTERM

CMD ["paygate", "run"]
