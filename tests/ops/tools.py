"""Finding the external programs the ops tests drive (Prometheus, promtool)."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = "install it with: bash tools/install_prometheus.sh (Debian package prometheus)"


def require_binary(name: str) -> str:
    """The path of ``name``; a missing one fails the test in CI and skips it elsewhere.

    CI must never go green without having run Prometheus, so there it is an error.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found on PATH: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
