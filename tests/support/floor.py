"""Floor operations through the API (CONTRACT section 10): sites, the floor, actions on a customer."""

from __future__ import annotations

import random
import string
import uuid
from pathlib import Path
from typing import Any

import httpx


def letters(n: int = 8) -> str:
    """A suffix without digits: no reference built from it can look like a phone or an id number."""
    return "".join(random.choices(string.ascii_lowercase, k=n))


def sites_file(folder: Path, sites: dict[str, dict[str, Any]]) -> Path:
    """A sites file (TOML) naming these sites with their settings; defaults in Europe/Amsterdam, 600 s."""
    lines = ['[defaults]', 'time_zone = "Europe/Amsterdam"', 'wait_target_s = 600', '']
    for name, entry in sites.items():
        lines.append(f"[sites.{name}]")
        for key, value in entry.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {v}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    path = folder / f"sites-{uuid.uuid4().hex[:8]}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


async def act(api: httpx.AsyncClient, headers: dict[str, str], journey_id: str, action: str,
              step_id: str | None = None, **fields: Any) -> httpx.Response:
    body = {"action": action, "step_id": step_id or uuid.uuid4().hex, **fields}
    return await api.post(f"/api/v1/journeys/{journey_id}/actions", json=body, headers=headers)


async def floor_of(api: httpx.AsyncClient, headers: dict[str, str], site: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/sites/{site}/floor", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def customer(api: httpx.AsyncClient, headers: dict[str, str], site: str,
                   ref: str) -> dict[str, Any] | None:
    """The customer holding `ref` on the site's floor, if there."""
    return next((c for c in (await floor_of(api, headers, site))["customers"] if ref in c["refs"]), None)
