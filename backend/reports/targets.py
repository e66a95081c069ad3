"""SQL that decides per journey whether its wait stayed within its service's target, reading the sites'
targets from a parameter holding `SiteDirectory.targets_document`."""

from __future__ import annotations


def target_sql(targets: str, journey: str = "j", service: str | None = None) -> str:
    """The wait target in seconds of `journey` (a journeys row), from the document in parameter `targets`;
    `service`: the journey's service where a query has read it out of the state already."""
    service = service or f"({journey}.state->'service'->>1)"
    return (f"coalesce(({targets}->'sites'->{journey}.site->'services'->>{service})::float8,"
            f" ({targets}->'sites'->{journey}.site->>'wait')::float8,"
            f" ({targets}->'default'->'services'->>{service})::float8,"
            f" ({targets}->'default'->>'wait')::float8)")


def wait_sql(journey: str = "j") -> str:
    return f"extract(epoch FROM {journey}.called_at - coalesce({journey}.waiting_at, {journey}.arrived_at))"
