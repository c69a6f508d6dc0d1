#!/usr/bin/env bash
# The README's test command (and CI's test step): installs everything the tests need,
# then runs every test. A skipped test fails the run (tests/strict_skips.py): on a fresh
# machine nothing may be left out silently.
#
#   tools/test.sh                 set up, then python3 -m pytest (arguments pass through)
#   tools/test.sh --setup-only    set up only (.ci/run: before its lint steps)
#   tools/test.sh --no-setup ...  run the tests only
#
# Needs Python 3.11, Java 17, Maven and a Rust toolchain (cargo); installs the package
# with its dev extras, the native engine core, Prometheus and promtool (Debian package,
# root or sudo), systemd-analyze (for the unit-file check), the Kafka broker jars and,
# when the script exists, headless Chromium (tools/install_chromium.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

setup=1
tests=1
case "${1:-}" in
    --setup-only) tests=0; shift ;;
    --no-setup) setup=0; shift ;;
esac

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check "$@"
}

native_is_current() {
    # The installed extension is newer than every source it is built from.
    python3 - <<'PY'
import pathlib, sys
try:
    import clearing_native
except ImportError:
    sys.exit(1)
built = pathlib.Path(clearing_native.__file__).stat().st_mtime
sources = [p for p in pathlib.Path("native").rglob("*")
           if p.is_file() and "target" not in p.parts and p.suffix in (".rs", ".toml", ".lock")]
sys.exit(0 if all(p.stat().st_mtime <= built for p in sources) else 1)
PY
}

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "tools/test.sh: need root or sudo to apt-get install $*" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "$setup" -eq 1 ]; then
    echo "== install (the package and its dev extras)"
    pip_install -e '.[dev,report]'

    echo "== native engine core (Rust, built by maturin)"
    if native_is_current; then
        echo "clearing_native is installed and newer than native/: kept"
    else
        command -v cargo >/dev/null || { echo "cargo not found: the native core needs a Rust toolchain" >&2; exit 1; }
        pip_install ./native
        python3 -c "import clearing_native" || { echo "the native core did not install" >&2; exit 1; }
    fi

    echo "== Prometheus and promtool (Debian package)"
    bash tools/install_prometheus.sh

    echo "== systemd-analyze (the unit file check)"
    command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
    systemd-analyze --version | head -n 1

    echo "== Kafka broker jars (Maven Central, cached)"
    python3 tools/kafka_local.py fetch

    if [ -f tools/install_chromium.sh ]; then
        echo "== headless Chromium (the report's rendering check)"
        bash tools/install_chromium.sh
    fi
fi

if [ "$tests" -eq 1 ]; then
    echo "== tests (a skipped test fails the run)"
    exec python3 -m pytest -p tests.strict_skips "$@"
fi
