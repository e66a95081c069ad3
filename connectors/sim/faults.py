"""Faults a simulated upstream can be switched into while it runs (CLI flags, the admin endpoint)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class Faults(msgspec.Struct, kw_only=True):
    outage: bool = False  # heartbeat reports down, commands answered `unavailable`, snapshots refused
    malformed: Probability = 0.0  # share of events sent corrupted (the apply side records them as failures)
    duplicates: Probability = 0.0  # share of events sent twice with the same id
    out_of_order: Probability = 0.0  # share of events held back so later ones overtake them
    drift: Probability = 0.0  # share of record changes made silently: the record changes, no event is sent
    slow: Annotated[float, Meta(ge=0.0, le=60.0)] = 0.0  # seconds added to every command and snapshot answer


class FaultPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A partial update: only the fields given change."""

    outage: bool | None = None
    malformed: Probability | None = None
    duplicates: Probability | None = None
    out_of_order: Probability | None = None
    drift: Probability | None = None
    slow: Annotated[float, Meta(ge=0.0, le=60.0)] | None = None

    def apply_to(self, faults: Faults) -> None:
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if value is not None:
                setattr(faults, field, value)
