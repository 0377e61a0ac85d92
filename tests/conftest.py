"""Shared fixtures: paths to the shipped corpus, the default detector."""

from __future__ import annotations

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
