"""The sites' wait targets as one JSON document, so that SQL can decide per journey whether its wait stayed
within its service's target (`WITHIN_TARGET_SQL`, with the document as the parameter it names)."""

from __future__ import annotations

import msgspec

from backend.sites.config import SiteDirectory, SiteSettings


def _entry(settings: SiteSettings) -> dict[str, object]:
    return {"wait": settings.wait_target_s, "services": settings.service_targets_s}


def targets_document(sites: SiteDirectory) -> str:
    return msgspec.json.encode({"sites": {name: _entry(sites.get(name)) for name in sites.configured},
                                "default": _entry(sites.default)}).decode()


def target_sql(targets: str, journey: str = "j") -> str:
    """The wait target in seconds of `journey` (a journeys row), from the document in parameter `targets`."""
    service = f"({journey}.state->'service'->>1)"
    return (f"coalesce(({targets}->'sites'->{journey}.site->'services'->>{service})::float8,"
            f" ({targets}->'sites'->{journey}.site->>'wait')::float8,"
            f" ({targets}->'default'->'services'->>{service})::float8,"
            f" ({targets}->'default'->>'wait')::float8)")


def wait_sql(journey: str = "j") -> str:
    return f"extract(epoch FROM {journey}.called_at - coalesce({journey}.waiting_at, {journey}.arrived_at))"
