"""A pytest plugin that fails every skipped test: ``python -m pytest -p tests.strict_skips``.

tools/test.sh (the README's test command, and CI's) loads it after installing every test
prerequisite: from then on a skip means something is missing, and a run that did not
test everything must not pass. An expected failure (``xfail``) is not a skip.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{item.nodeid} was skipped ({reason}), and under tools/test.sh every test must "
        f"run: install what it needs (the script's set-up steps) and run again"
    )
