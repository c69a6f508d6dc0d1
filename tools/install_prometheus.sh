#!/usr/bin/env bash
# Install Prometheus (server + promtool) from the Debian package, for the ops tests.
#
# Idempotent: does nothing when `prometheus --version` and `promtool --version` already
# work. CI runs as root; elsewhere it uses sudo when it is available. The Debian package
# also enables a prometheus.service unit; the tests never use it (they start their own
# server on a free loopback port), and on a container without systemd it is not started.
set -euo pipefail

have_prometheus() {
    command -v prometheus >/dev/null 2>&1 && prometheus --version >/dev/null 2>&1 \
        && command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1
}

if have_prometheus; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_prometheus.sh: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Keep dpkg from starting the packaged service (invoke-rc.d honours policy-rc.d exit 101):
# the tests start their own server, and a stray one would hold :9090 on the CI machine.
# Only a policy file this script created is removed again.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if ! have_prometheus; then
    echo "install_prometheus.sh: prometheus/promtool still not runnable after install" >&2
    exit 1
fi
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
