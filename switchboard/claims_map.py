"""The claims map (`SWITCHBOARD_CLAIMS_MAP`, a TOML file): how an identity provider's groups or roles become
Switchboard roles, each held at its own sites. The backend and the dashboard read the same file.

    claims = ["groups", "realm_access.roles"]   # where the names are; dotted paths reach into objects

    [groups."branch-north-floor"]
    roles = ["floor_staff"]
    sites = ["north"]                            # ["*"]: every site

A role is held at the sites of the groups that grant it, never at the sites another group grants another
role: floor_staff at north and manager at south is not manager at north. Names no group of the map
mentions are ignored (a provider sends the groups of every application).

Without a map a token's own `roles` and `sites` claims hold (every role at every listed site), as for the
tokens `switchboard token` mints.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from switchboard.settings import load_section
from switchboard.tokens import ROLES

EVERY_SITE = "*"

# role -> the sites it is held at; None: every site
Grants = Mapping[str, frozenset[str] | None]


class ClaimsMapSection(msgspec.Struct, frozen=True, kw_only=True):
    # the claims map file; unset: tokens carry `roles` and `sites` claims of their own
    claims_map: str | None = None


class GroupGrant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    roles: list[str]
    sites: list[str]


class ClaimsMap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    claims: list[str] = msgspec.field(default_factory=lambda: ["groups"])
    groups: dict[str, GroupGrant] = msgspec.field(default_factory=dict)

    def names(self, claims: Mapping[str, Any]) -> set[str]:
        """The group and role names the token carries in the map's claims."""
        found: set[str] = set()
        for path in self.claims:
            value: Any = claims
            for part in path.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
        return found

    def grants(self, claims: Mapping[str, Any]) -> dict[str, frozenset[str] | None]:
        """Each Switchboard role the token's groups grant, with the sites it is held at."""
        held: dict[str, frozenset[str] | None] = {}
        for name in sorted(self.names(claims)):
            grant = self.groups.get(name)
            if grant is None:
                continue
            sites = None if EVERY_SITE in grant.sites else frozenset(grant.sites)
            for role in grant.roles:
                held[role] = _widest(held[role], sites) if role in held else sites
        return held


class ClaimsMapError(ValueError):
    """The claims map file cannot be used."""


def _widest(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def flat_grants(roles: Iterable[str], sites: frozenset[str] | None) -> dict[str, frozenset[str] | None]:
    """A token's own `roles` and `sites` claims: every role at every site listed."""
    return dict.fromkeys(roles, sites)


def union_sites(grants: Grants, roles: Iterable[str] | None = None) -> frozenset[str] | None:
    """Every site at which any of `roles` (all the held ones when None) is held; None: every site."""
    wanted = grants.keys() if roles is None else set(roles) & grants.keys()
    sites: frozenset[str] | None = frozenset()
    for role in wanted:
        sites = _widest(sites, grants[role])
    return sites


def parse_claims_map(text: str, origin: str = "the claims map") -> ClaimsMap:
    try:
        document = msgspec.convert(tomllib.loads(text), ClaimsMap)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ClaimsMapError(f"{origin}: {exc}") from exc
    if not document.claims or not all(path.strip() for path in document.claims):
        raise ClaimsMapError(f"{origin}: `claims` must name at least one claim")
    for name, grant in document.groups.items():
        unknown = set(grant.roles) - ROLES
        if unknown or not grant.roles:
            raise ClaimsMapError(f"{origin}: group {name!r} grants {sorted(unknown) or 'no role'}; roles are"
                                 f" {', '.join(sorted(ROLES))}")
        if not grant.sites or not all(site.strip() for site in grant.sites):
            raise ClaimsMapError(f"{origin}: group {name!r} names no site (use [\"*\"] for every site)")
    return document


def load_claims_map(path: str | Path) -> ClaimsMap:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClaimsMapError(f"SWITCHBOARD_CLAIMS_MAP {path}: {exc.strerror}") from exc
    return parse_claims_map(text, f"SWITCHBOARD_CLAIMS_MAP {path}")


@functools.cache
def configured_claims_map() -> ClaimsMap | None:
    """The process's claims map (read once), or None when SWITCHBOARD_CLAIMS_MAP is unset."""
    path = load_section(ClaimsMapSection).claims_map
    return load_claims_map(path) if path else None
