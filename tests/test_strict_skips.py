"""tools/test.sh, the README's test command, fails a run in which any test was skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = """
import pytest

def test_runs():
    pass

def test_skips_itself():
    pytest.skip("no widget installed")

@pytest.mark.skipif(True, reason="marked away")
def test_marked():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_skip_fails_the_run_under_the_plugin(tmp_path: Path) -> None:
    plain = _pytest(tmp_path)
    assert plain.returncode == 0, plain.stdout
    assert "2 skipped" in plain.stdout, plain.stdout
    strict = _pytest(tmp_path, "-p", "tests.strict_skips")
    assert strict.returncode == 1, strict.stdout
    assert "test_skips_itself was skipped (Skipped: no widget installed)" in strict.stdout
    assert "test_marked was skipped (Skipped: marked away)" in strict.stdout
    assert "skipped" not in strict.stdout.splitlines()[-1]  # the summary counts none
    assert "1 xfailed" in strict.stdout.splitlines()[-1]  # xfail is not a skip


def test_readme_and_ci_run_the_tests_through_the_script() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert commands is not None
    lines = commands.group(1).splitlines()
    assert len(lines) == 2 and lines[1].startswith("tools/test.sh "), lines
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tools/test.sh --setup-only" in ci and "bash tools/test.sh --no-setup" in ci
    script = (ROOT / "tools" / "test.sh").read_text()
    assert "exec python3 -m pytest -p tests.strict_skips" in script
    assert os.access(ROOT / "tools" / "test.sh", os.X_OK)
