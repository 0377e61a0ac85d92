"""Shared fixtures: paths to the shipped corpus, the default detector."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trailguard.config import load_config
from trailguard.detect.process import Detector
from trailguard.detect.rules import RuleSet

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CORPUS = DATA / "corpus"


@pytest.fixture(scope="session")
def default_detector() -> Detector:
    return Detector(RuleSet.from_config(load_config(None)))


def _scanner_required() -> bool:
    """CI builds the C scanner (TRAILGUARD_REQUIRE_SCANNER=1): its tests must not skip there."""
    return os.environ.get("CI") == "true"


def use_decoder(kind: str) -> Iterator[None]:
    """Run with the C scanner ("scanner") or with msgspec's passes alone ("msgspec")."""
    from trailguard.detect.decode import SCANNER

    if kind == "scanner" and not SCANNER.available:
        if _scanner_required():
            pytest.fail("the C scanner is not built or has no AVX2 here, and CI=true needs it")
        pytest.skip("the C scanner is not built here (no C compiler?) or the CPU lacks AVX2")
    before = SCANNER.enabled
    SCANNER.enabled = kind == "scanner"
    try:
        yield
    finally:
        SCANNER.enabled = before


@pytest.fixture(scope="module", params=["scanner", "msgspec"])
def both_decoders(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test of a module that uses this runs once per decode path (both must agree)."""
    yield from use_decoder(request.param)


@pytest.fixture
def msgspec_decoder() -> Iterator[None]:
    """For tests of the msgspec path's own parts (the locator)."""
    yield from use_decoder("msgspec")
