"""What a repair of a drift item would do and publishes (backend/reconciliation/plans.py), and which
snapshot records a read keeps (backend/reconciliation/snapshot_client.py), without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from backend.reconciliation.plans import corrective_events, plan
from backend.reconciliation.snapshot_client import CannotKeep, keep, skipped_summary
from switchboard.snapshots import SnapshotRecord


def missing_here(updated_at: datetime) -> dict:
    record = SnapshotRecord(ref="appointments:A-1", site="north", stage="booked",
                            fields={"service": "passport", "slot_start": "2026-12-06T10:00:00+00:00"},
                            updated_at=datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    return {"id": 41, "updated_at": updated_at, "system": "appointments", "site": "north", "ref": record.ref,
            "kind": "missing_here", "field": None, "ours": None, "theirs": None, "conflict": False,
            "fallback_id": None, "record": msgspec.json.encode(record).decode()}


def test_the_same_repair_of_an_item_as_it_stands_publishes_the_same_events():
    """Published before the commit that marks the item `repairing`: a commit that fails and a second
    resolve must not make a second journey change, so the second publication is a duplicate."""
    seen = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    first, again = corrective_events(missing_here(seen), None), corrective_events(missing_here(seen), None)
    assert [e.id for e in first] == [e.id for e in again] and len({e.id for e in first}) == len(first)
    found_again = corrective_events(missing_here(seen + timedelta(minutes=15)), None)
    assert not {e.id for e in found_again} & {e.id for e in first}  # the item found again: a new repair


def test_a_missing_record_whose_links_lead_to_another_site_s_journey_is_not_taken():
    """Its corrective events speak for the whole system: the links they carry would join the other site's
    journey and move it to the item's site. Pushing ours and ignoring are not concerned."""
    item = missing_here(datetime(2026, 12, 6, 9, 0, tzinfo=UTC))
    refused = plan(item, "accept_source", None, links_elsewhere={"queue:T-SOUTH"})
    assert not refused.possible and refused.note == ("its links lead to journeys at another site: reconcile"
                                                     " there, or ignore")
    assert "T-SOUTH" not in refused.note  # another site's reference is not this site's readers' to see
    assert plan(item, "accept_source", None, links_elsewhere=set()).possible
    assert plan(item, "ignore", None, links_elsewhere={"queue:T-SOUTH"}).possible


def snapshot_record(**changes: Any) -> SnapshotRecord:
    return msgspec.convert({"ref": "queue:T-1", "site": "north", "stage": "waiting",
                            "fields": {"ticket": "T-1"}, "updated_at": "2026-12-06T09:00:00Z", **changes},
                           SnapshotRecord)


def nested(levels: int) -> Any:
    value: Any = "T-1"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("changes", "reason"), [
    ({"updated_at": "9999-12-31T23:59:59-01:00"}, "outside the years 1970 to 2999"),
    ({"stage": "John.Smith"}, "look like personal data"),
    ({"links": ["crm:44770090012345"]}, "look like personal data"),
    ({"fields": {"ticket": "T\u00001"}}, "NUL"),
    ({"fields": {"ticket": nested(500)}}, "nest more than"),  # redacting it recursed past Python's limit
])
def test_a_record_switchboard_cannot_keep_is_refused_with_its_reason_and_none_of_its_values(changes, reason):
    with pytest.raises(CannotKeep) as refused:
        keep("queue", snapshot_record(**changes))
    assert reason in str(refused.value)
    assert "John" not in str(refused.value) and "4477009" not in str(refused.value)


def test_what_a_record_keeps_is_all_that_is_judged():
    """A field the map has it neither compare nor read is dropped unread, however deep or odd."""
    record = keep("queue", snapshot_record(fields={"ticket": "T-1", "notes": nested(500), "memo": "\u0000"}))
    assert record.fields == {"ticket": "T-1"}


def test_a_log_line_names_the_records_skipped_but_none_that_looks_personal():
    skipped = {f"queue:T-{n}": "its updated_at is outside the years 1970 to 2999" for n in range(6)}
    skipped["crm:44770090012345"] = "its reference, stage or links look like personal data"
    summary = skipped_summary(skipped)
    assert "4477009" not in summary and "queue:T-0 (its updated_at" in summary and summary.endswith("2 more")
