"""What a repair of a drift item publishes (backend/reconciliation/plans.py), without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from backend.reconciliation.plans import corrective_events
from switchboard.snapshots import SnapshotRecord


def missing_here(updated_at: datetime) -> dict:
    record = SnapshotRecord(ref="appointments:A-1", site="north", stage="booked",
                            fields={"service": "passport", "slot_start": "2026-12-06T10:00:00+00:00"},
                            updated_at=datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    return {"id": 41, "updated_at": updated_at, "system": "appointments", "kind": "missing_here",
            "field": None, "record": msgspec.json.encode(record).decode()}


def test_the_same_repair_of_an_item_as_it_stands_publishes_the_same_events():
    """Published before the commit that marks the item `repairing`: a commit that fails and a second
    resolve must not make a second journey change, so the second publication is a duplicate."""
    seen = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    first, again = corrective_events(missing_here(seen), None), corrective_events(missing_here(seen), None)
    assert [e.id for e in first] == [e.id for e in again] and len({e.id for e in first}) == len(first)
    found_again = corrective_events(missing_here(seen + timedelta(minutes=15)), None)
    assert not {e.id for e in found_again} & {e.id for e in first}  # the item found again: a new repair
