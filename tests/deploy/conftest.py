"""Fixtures of the deployment tests: the moto server of the integration tests, Docker, timings."""

from __future__ import annotations

import pytest

from tests.deploy.support import CACHE, FIGURES, TIMINGS
from tests.integration.conftest import (  # noqa: F401  (fixtures, by name)
    boto3_session_clients,
    clean_moto,
    moto_server,
    proxy,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("deployment tests: durations (measured, not asserted)")
    for what, secs in TIMINGS:
        terminalreporter.write_line(f"{secs:8.1f} s  {what}")
    for what, value in FIGURES:
        terminalreporter.write_line(f"{value:>10}  {what}")
    terminalreporter.write_line(f"cache: {CACHE}")
