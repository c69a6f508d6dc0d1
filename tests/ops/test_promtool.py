"""promtool (from the Debian prometheus package) validates the deploy assets.

In CI (CI set) a missing promtool fails the test: run tools/install_prometheus.sh.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.ops.tools import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_is_valid() -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    # deploy/prometheus/alerts_test.yml: input series and the alerts they must fire.
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
