"""The policy history's contract, the same tests on both backends and on replay's scratch store
(in memory, and moved to SQLite), taken from tests/unit/state/test_policy_history.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import MotoServer
from tests.integration.state_backends import BACKENDS, open_backend
from tests.unit.state import test_policy_history as unit
from trailguard.state.policy_history import PolicyHistoryStore
from trailguard.state.policy_history_memory import MAX_SCRATCH_BYTES, ScratchHistoryStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=[*BACKENDS, "scratch", "scratch-spilled"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, moto_server: MotoServer
) -> AsyncIterator[PolicyHistoryStore]:
    if request.param.startswith("scratch"):
        # replay's scratch history: in memory, or (max_bytes 0) moved to SQLite at once
        scratch = ScratchHistoryStore(
            tmp_path, max_bytes=0 if request.param == "scratch-spilled" else MAX_SCRATCH_BYTES
        )
        yield scratch
        await scratch.close()
        return
    async with open_backend(
        request.param, tmp_path, moto_server, clock=time.time, history=True
    ) as state:
        assert state.history is not None
        yield state.history


test_inline_policy_is_ordered_by_event_time_not_arrival = (
    unit.test_inline_policy_is_ordered_by_event_time_not_arrival
)
test_before_is_strict = unit.test_before_is_strict
test_ties_in_event_time_are_broken_by_event_id = unit.test_ties_in_event_time_are_broken_by_event_id
test_a_position_within_one_second_counts_lower_event_ids = (
    unit.test_a_position_within_one_second_counts_lower_event_ids
)
test_a_position_within_one_second_for_managed_policies = (
    unit.test_a_position_within_one_second_for_managed_policies
)
test_boundary_put_is_the_last_set_even_if_removed_since = (
    unit.test_boundary_put_is_the_last_set_even_if_removed_since
)
test_inline_policies_are_keyed_by_account_principal_and_name = (
    unit.test_inline_policies_are_keyed_by_account_principal_and_name
)
test_the_latest_put_is_returned_even_when_its_document_is_unknown = (
    unit.test_the_latest_put_is_returned_even_when_its_document_is_unknown
)
test_recording_the_same_event_again_changes_nothing = (
    unit.test_recording_the_same_event_again_changes_nothing
)
test_facts_come_back_exactly = unit.test_facts_come_back_exactly
test_attach_and_detach_fold_in_event_time_order = (
    unit.test_attach_and_detach_fold_in_event_time_order
)
test_aws_managed_policy_attachments_are_per_account = (
    unit.test_aws_managed_policy_attachments_are_per_account
)
test_boundary_is_the_last_one_set = unit.test_boundary_is_the_last_one_set
test_managed_policy_versions_fold_in_event_time_order = (
    unit.test_managed_policy_versions_fold_in_event_time_order
)
test_policy_version_and_whether_it_was_default = unit.test_policy_version_and_whether_it_was_default
test_recreated_policy_starts_afresh = unit.test_recreated_policy_starts_afresh
test_versions_without_the_creation_still_fold = unit.test_versions_without_the_creation_still_fold
test_a_version_whose_id_is_unknown_makes_the_default_unknown = (
    unit.test_a_version_whose_id_is_unknown_makes_the_default_unknown
)
test_snapshot_facts_take_part_in_time_order = unit.test_snapshot_facts_take_part_in_time_order
test_concurrent_records_are_serialised = unit.test_concurrent_records_are_serialised
test_bad_input_is_a_caller_error = unit.test_bad_input_is_a_caller_error


async def test_names_that_look_like_key_parts_stay_their_own(store: PolicyHistoryStore) -> None:
    """Names come from the trail: a policy named like another's sort-key prefix is its own."""
    await store.record(
        [
            unit.inline("put", 1, "e1", policy_name="guard#put#2026", document=unit.doc(1)),
            unit.inline("put", 2, "e2", policy_name="guard", document=unit.doc(2)),
            unit.inline("put", 3, "e3", policy_name="g" * 2000, document=unit.doc(3)),
        ]
    )
    found = await store.inline_policy(unit.ACCT, "role", "app", "guard#put#2026", before=None)
    assert found is not None
    assert found.document == unit.doc(1)
    plain = await store.inline_policy(unit.ACCT, "role", "app", "guard", before=None)
    assert plain is not None
    assert plain.document == unit.doc(2)
    long = await store.inline_policy(unit.ACCT, "role", "app", "g" * 2000, before=None)
    assert long is not None
    assert long.document == unit.doc(3)
