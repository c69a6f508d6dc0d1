"""The deploy assets agree with each other and with the code, and the unit file verifies."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clearing.ops.http import DEFAULT_PORT

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMMAND = "run --config /etc/clearing/clearing.toml"


def test_unit_and_container_run_the_same_command() -> None:
    unit = (DEPLOY / "systemd" / "clearing.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert exec_start.endswith(f"/clearing {COMMAND}")
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert 'ENTRYPOINT ["clearing"]' in containerfile
    assert 'CMD ["run", "--config", "/etc/clearing/clearing.toml"]' in containerfile
    assert f"EXPOSE {DEFAULT_PORT}" in containerfile
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in containerfile


def test_scrape_config_targets_the_default_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "clearing"]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_PORT}"]
    assert config["rule_files"] == ["alerts.yml"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists the ExecStart binary exists; point it at one that does.
    unit = (DEPLOY / "systemd" / "clearing.service").read_text()
    copy = tmp_path / "clearing.service"
    copy.write_text(unit.replace("/opt/clearing/bin/clearing", "/bin/true"))
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_install_script_is_idempotent() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed: the script would run apt-get")
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "install_prometheus.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("prometheus already installed")
