"""The ingest settings section: trust in the data, and how events are read and applied."""

from __future__ import annotations

import msgspec


class IngestSection(msgspec.Struct, frozen=True, kw_only=True):
    # trust in the data (CONTRACT section 9): how far in the future an event may be dated, and `system=other`
    # pairs naming the other systems whose references a system's events may have as subject
    max_future_s: float = 300.0
    acts_for: tuple[str, ...] = ("contact_center=appointments",)
    apply_batch: int = 500
    max_event_bytes: int = 64 * 1024
    # systems beyond the five seed systems whose connectors may publish
    extra_systems: tuple[str, ...] = ()
