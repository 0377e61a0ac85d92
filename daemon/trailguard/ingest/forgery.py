"""Checking a delivery's records against the event ledger, and flagging the detections of an
eventID the ledger has seen with other content (one of the two records is forged).

Used by the daemon (ingest/messages.py) and by local replay alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from trailguard.detect.detection import Detection
from trailguard.observe import ForgerySuspected, Observer

if TYPE_CHECKING:
    from trailguard.detect.digest import EventDigest
    from trailguard.state.ledger import EventLedger
    from trailguard.vocabulary import DeliveryPath

__all__ = ["check_ledger", "flag_conflicts"]


async def check_ledger(
    ledger: EventLedger,
    events: Sequence[EventDigest],
    path: DeliveryPath,
    observer: Observer,
) -> dict[str, bool]:
    """Record the digests in the event ledger; the conflicted eventIDs among them, each True
    when this delivery made the conflict (a content the ledger did not know): those are
    reported as :class:`~trailguard.observe.ForgerySuspected` (logged as ``ledger.conflict``,
    counted in ``trailguard_forgery_suspected_total``)."""
    conflicts = await ledger.observe(events, path=path)
    for conflict in conflicts:
        if conflict.new:
            observer.observe(ForgerySuspected(conflict, path))
    return {conflict.event_id: conflict.new for conflict in conflicts}


def flag_conflicts(detections: list[Detection], conflicted: Mapping[str, bool]) -> list[Detection]:
    """The detections, those of a conflicted eventID flagged ``forgery_suspected``."""
    if not conflicted:
        return detections
    return [
        msgspec.structs.replace(d, forgery_suspected=True)
        if d.event_id is not None and d.event_id in conflicted
        else d
        for d in detections
    ]
