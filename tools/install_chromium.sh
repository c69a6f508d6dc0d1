#!/usr/bin/env bash
# Install headless Chromium from the Debian package, for the rendered-report test
# (tests/report/test_rendered.py screenshots a report.html and checks the picture; it is
# never skipped, so without Chromium that test fails and names this script).
#
# Idempotent: does nothing when `chromium --version` already works. CI runs as root;
# elsewhere it uses sudo when it is available. Fonts come with it: fonts-dejavu-core is
# named explicitly because --no-install-recommends would otherwise leave the page's text
# without a font on a bare container.
set -euo pipefail

have_chromium() {
    command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1
}

# Debian's launcher script prints shell noise on stderr: keep only the version line.
version() {
    chromium --version 2>/dev/null | head -n 1
}

if have_chromium; then
    echo "chromium already installed: $(version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_chromium.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if ! have_chromium; then
    echo "install_chromium.sh: chromium still not runnable after install" >&2
    exit 1
fi
echo "installed: $(version)"
