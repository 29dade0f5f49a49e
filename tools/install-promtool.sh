#!/usr/bin/env bash
# Make `promtool` available for the tests that check deploy/prometheus/ (issue 8).
#
# Idempotent: does nothing when promtool is already on PATH. Otherwise installs
# Debian's `prometheus` package (it ships /usr/bin/promtool) without recommends,
# and with service start-up denied so no Prometheus server is left running.
# Exits non-zero with a clear message when it cannot provide promtool.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

fail() {
    echo "install-promtool: $*" >&2
    echo "install-promtool: install promtool yourself (Debian/Ubuntu: apt-get install prometheus;" >&2
    echo "install-promtool: or a release binary of Prometheus) and put it on PATH." >&2
    exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
    fail "promtool is not on PATH and this system has no apt-get."
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        fail "promtool is not on PATH and installing it needs root (or passwordless sudo)."
    fi
fi

# Package scripts must not start a Prometheus daemon on this machine: deny service
# starts for the duration of the install unless a policy is already in place.
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
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || fail "apt-get install prometheus failed."

# The package's unit may still have been started by a running init: stop it quietly.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null 2>&1 || fail "the prometheus package installed no promtool."
echo "install-promtool: $(promtool --version 2>&1 | head -n 1)"
