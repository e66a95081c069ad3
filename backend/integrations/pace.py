"""Recovery pacing: how fast a system's commands may go out (AIMD), and how fast staff can take them.

One row per system in `command_pace`, shared by every relay. The relay publishing a system's commands
(under that system's advisory lock) refills and spends its tokens there, so several replicas together
keep one pace.

- The rate (commands per minute) stays within [min, max]. Trouble (a `failed` or `unavailable` answer,
  or no answer in time) halves it, at most once per `HALVE_EVERY_S` (a burst of errors is one signal);
  every trouble-free second adds `increase_per_s`. A system that is down restarts at `start_per_min`
  when it is back, so held commands leave at a trickle that grows as the system copes.
- While a system recovers (rate below max), commands that reach staff (`staff_commands`) are also
  bounded by the floor: at most `per_counter_per_min` per open counter of their site per minute (at
  least one counter is assumed: a closed floor still gets them, slowly). A site whose bound is reached
  keeps its later commands back too, so each site's commands stay in order.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import msgspec

from backend.integrations.config import IntegrationsSection

TROUBLE_WINDOW_S = 60.0
HALVE_EVERY_S = 1.0
# the bucket holds at most this many seconds of the rate (and always one command)
BURST_S = 2.0
TroubleKind = Literal["failed", "unavailable", "timeout"]

_HELD = "held: the system is down"
_AFTER_OUTAGE = "recovering: back after an outage"
_FULL_SPEED = "full speed"


class PacePolicy(msgspec.Struct, frozen=True, kw_only=True):
    min_per_min: float
    max_per_min: float
    start_per_min: float
    increase_per_s: float
    per_counter_per_min: float
    staff_commands: frozenset[str]

    @classmethod
    def from_section(cls, section: IntegrationsSection) -> PacePolicy:
        return cls(min_per_min=section.pace_min_per_min, max_per_min=section.pace_max_per_min,
                   start_per_min=min(section.pace_start_per_min, section.pace_max_per_min),
                   increase_per_s=section.pace_increase_per_s,
                   per_counter_per_min=section.pace_per_counter_per_min,
                   staff_commands=frozenset(section.pace_staff_commands))


class Pace(msgspec.Struct, kw_only=True):
    """A system's pace as stored; `trouble` holds `(kind, epoch seconds)` of the last minute."""

    system: str
    rate_per_min: float
    tokens: float
    refilled_at: datetime
    halved_at: datetime | None = None
    trouble: list[tuple[str, float]] = []
    floor: dict[str, int] = {}
    reason: str = _FULL_SPEED

    @property
    def recovering(self) -> bool:
        return self.reason != _FULL_SPEED

    def recent_trouble(self, now: float | None = None) -> Counter[str]:
        since = (now if now is not None else time.time()) - TROUBLE_WINDOW_S
        return Counter(kind for kind, at in self.trouble if at > since)


def _capacity(rate_per_min: float) -> float:
    return max(1.0, rate_per_min / 60 * BURST_S)


def _plural(n: int, kind: str) -> str:
    noun = {"timeout": "timeout", "failed": "failed answer",
            "unavailable": "unavailable answer"}.get(kind, kind)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe(pace: Pace, policy: PacePolicy, *, down: bool = False) -> str:
    """Why the pace is what it is, in words that change only when the cause does."""
    if down:
        return _HELD
    trouble = pace.recent_trouble()
    if trouble:
        kinds = ", ".join(_plural(n, k) for k, n in sorted(trouble.items()))
        reason = f"recovering: {kinds} in the last minute"
    elif pace.rate_per_min >= policy.max_per_min:
        reason = _FULL_SPEED
    elif pace.reason.startswith(("held", _AFTER_OUTAGE)):
        reason = _AFTER_OUTAGE
    else:
        reason = "recovering: after trouble"
    if pace.floor:
        sites = len(pace.floor)  # how many, never which: every reader of any site sees this reason
        reason += f"; floor: open counters limit staff commands at {sites} site{'' if sites == 1 else 's'}"
    return reason


_decode_trouble = msgspec.json.Decoder(list[tuple[str, float]])
_decode_floor = msgspec.json.Decoder(dict[str, int])


def _from_row(row: asyncpg.Record) -> Pace:
    return Pace(system=row["system"], rate_per_min=row["rate_per_min"], tokens=row["tokens"],
                refilled_at=row["refilled_at"], halved_at=row["halved_at"],
                trouble=_decode_trouble.decode(row["trouble"]),
                floor=_decode_floor.decode(row["floor"]), reason=row["reason"])


async def _locked(conn: asyncpg.Connection, systems: list[str], policy: PacePolicy) -> dict[str, Pace]:
    """The systems' paces, created at full speed when new, locked for the caller's transaction."""
    await conn.execute(
        "INSERT INTO command_pace (system, rate_per_min, tokens, reason) SELECT s, $2, $3, $4 FROM"
        " unnest($1::text[]) s"
        " ON CONFLICT (system) DO NOTHING", systems, policy.max_per_min, _capacity(policy.max_per_min),
        _FULL_SPEED)
    rows = await conn.fetch("SELECT * FROM command_pace WHERE system = ANY($1::text[]) ORDER BY system FOR"
                            " UPDATE",
                            systems)
    return {r["system"]: _from_row(r) for r in rows}


async def _save(conn: asyncpg.Connection, paces: list[Pace]) -> None:
    await conn.executemany(
        "UPDATE command_pace SET rate_per_min = $2, tokens = $3, refilled_at = $4, halved_at = $5, trouble ="
        " $6::jsonb, floor = $7::jsonb, reason = $8, updated_at = now() WHERE system = $1",
        [(p.system, p.rate_per_min, p.tokens, p.refilled_at, p.halved_at,
          msgspec.json.encode(p.trouble).decode(),
          msgspec.json.encode(p.floor).decode(), p.reason) for p in paces])


async def hold_while_down(conn: asyncpg.Connection, down: set[str], policy: PacePolicy) -> None:
    """A system that is down restarts at `start_per_min` with an empty bucket once it is back."""
    if not down:
        return
    async with conn.transaction():
        paces = await _locked(conn, sorted(down), policy)
        changed = [p for p in paces.values()
                   if p.reason != _HELD or p.rate_per_min > policy.start_per_min or p.tokens]
        now = datetime.now(UTC)
        for pace in changed:
            pace.rate_per_min = min(pace.rate_per_min, policy.start_per_min)
            pace.tokens, pace.refilled_at, pace.floor = 0.0, now, {}
            pace.reason = describe(pace, policy, down=True)
        await _save(conn, changed)


async def record_trouble(conn: asyncpg.Connection, trouble: dict[str, list[TroubleKind]],
                         policy: PacePolicy) -> None:
    """Trouble answers seen by the relay, in its transaction: halve the rate, remember them for a minute."""
    if not trouble:
        return
    paces = await _locked(conn, sorted(trouble), policy)
    now = datetime.now(UTC)
    epoch = now.timestamp()
    for system, kinds in trouble.items():
        pace = paces[system]
        pace.trouble = [(k, at) for k, at in pace.trouble if at > epoch - TROUBLE_WINDOW_S][-200:]
        pace.trouble += [(kind, epoch) for kind in kinds]
        _refill(pace, policy, now)
        if pace.halved_at is None or (now - pace.halved_at).total_seconds() >= HALVE_EVERY_S:
            pace.rate_per_min = max(policy.min_per_min, pace.rate_per_min / 2)
            pace.tokens = min(pace.tokens, _capacity(pace.rate_per_min))
            pace.halved_at = now
        pace.reason = describe(pace, policy)
    await _save(conn, list(paces.values()))


def _refill(pace: Pace, policy: PacePolicy, now: datetime) -> None:
    elapsed = max(0.0, (now - pace.refilled_at).total_seconds())
    last_trouble = max((at for _, at in pace.trouble), default=0.0)
    calm = min(elapsed, max(0.0, now.timestamp() - last_trouble))
    pace.tokens = min(_capacity(pace.rate_per_min), pace.tokens + pace.rate_per_min / 60 * elapsed)
    pace.rate_per_min = min(policy.max_per_min, pace.rate_per_min + policy.increase_per_s * calm)
    pace.refilled_at = now


class Allowance(msgspec.Struct, kw_only=True):
    """What one publish round of a system may send: `commands` in all, and per site for staff commands."""

    pace: Pace
    commands: int
    floor_budget: dict[str, int]
    counters_open: dict[str, int]


async def allowance(conn: asyncpg.Connection, system: str, sites: list[str], policy: PacePolicy) -> Allowance:
    """In the publishing transaction, under the system's advisory lock: refill and say what may go out."""
    pace = (await _locked(conn, [system], policy))[system]
    _refill(pace, policy, datetime.now(UTC))
    granted = Allowance(pace=pace, commands=int(pace.tokens), floor_budget={}, counters_open={})
    await add_sites(conn, granted, sites, policy)
    return granted


async def add_sites(conn: asyncpg.Connection, granted: Allowance, sites: list[str],
                    policy: PacePolicy) -> None:
    """The floor budgets of `sites` (those `granted` has not yet: a round's later window meets other sites),
    while the system recovers."""
    sites = [site for site in sites if site not in granted.floor_budget]
    if granted.pace.rate_per_min >= policy.max_per_min or not sites:
        return
    rows = await conn.fetch(
        "SELECT c.site, c.counters_open, (SELECT count(*) FROM commands m WHERE m.site = c.site"
        "   AND m.command = ANY($2::text[]) AND m.sent_at > now() - interval '1 minute') AS sent"
        " FROM capacity c WHERE c.site = ANY($1::text[])", sites, sorted(policy.staff_commands))
    for r in rows:
        granted.counters_open[r["site"]] = r["counters_open"]
        per_minute = int(policy.per_counter_per_min * max(r["counters_open"], 1))
        granted.floor_budget[r["site"]] = per_minute - r["sent"]


async def spend(conn: asyncpg.Connection, granted: Allowance, sent: int, floor_held: set[str],
                policy: PacePolicy) -> None:
    pace = granted.pace
    pace.tokens = max(0.0, pace.tokens - sent)
    pace.floor = {site: granted.counters_open[site] for site in floor_held}
    pace.reason = describe(pace, policy)
    await _save(conn, [pace])


async def read(conn: asyncpg.Connection, systems: list[str] | None = None) -> dict[str, Pace]:
    rows = await conn.fetch("SELECT * FROM command_pace WHERE $1::text[] IS NULL OR system = ANY($1)",
                            systems)
    return {r["system"]: _from_row(r) for r in rows}
