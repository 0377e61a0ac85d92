"""The event ledger's contract, the same tests on both backends (tests/unit/state/test_ledger.py's
tests of the protocol)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import MotoServer
from tests.integration.state_backends import BACKENDS, open_backend
from tests.unit.state import test_ledger as unit
from trailguard.detect.digest import EventDigest
from trailguard.state.ledger import EventLedger

pytestmark = pytest.mark.integration


@pytest.fixture(params=BACKENDS)
async def ledger(
    request: pytest.FixtureRequest, tmp_path: Path, moto_server: MotoServer
) -> AsyncIterator[EventLedger]:
    async with open_backend(
        request.param, tmp_path, moto_server, clock=time.time, history=True
    ) as state:
        assert state.ledger is not None
        yield state.ledger


test_the_same_content_twice_is_no_conflict = unit.test_the_same_content_twice_is_no_conflict
test_a_second_content_is_a_conflict = unit.test_a_second_content_is_a_conflict
test_two_contents_in_one_batch_are_a_conflict = unit.test_two_contents_in_one_batch_are_a_conflict
test_observe_refuses_what_is_not_a_digest = unit.test_observe_refuses_what_is_not_a_digest


async def test_forged_event_ids_stay_their_own(ledger: EventLedger) -> None:
    """eventIDs are attacker-chosen: one that looks like another's key is another eventID."""
    real = unit.digest(unit.put(eventID="evt-1"))
    forged = EventDigest(event_id="evt-1#DIGEST#x", digest="sha256:" + "0" * 64)
    long_id = EventDigest(event_id="e" * 5000, digest="sha256:" + "1" * 64)
    assert await ledger.observe([real, forged, long_id], path="s3") == []
    assert await ledger.conflicts(["evt-1", "evt-1#DIGEST#x", "e" * 5000]) == {}
