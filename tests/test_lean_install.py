"""A daemon install leaves out the report's plotting library (the ``report`` extra)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clearing.cli import main

ROOT = Path(__file__).resolve().parent.parent

# Every module of the package imported with matplotlib made unimportable.
_IMPORT_ALL = """
import importlib, pkgutil, sys
sys.modules["matplotlib"] = None  # import matplotlib now raises ImportError
import clearing
for module in pkgutil.walk_packages(clearing.__path__, "clearing."):
    if not module.name.endswith(".__main__"):  # `python -m clearing` runs the CLI
        importlib.import_module(module.name)
print("imported", len([m for m in sys.modules if m.startswith("clearing")]))
"""


def test_every_module_imports_without_matplotlib() -> None:
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("imported ")


def test_report_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "matplotlib" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clearing[report]" in err, err
