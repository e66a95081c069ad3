"""Manual fallback calls through the API."""

from __future__ import annotations

from typing import Any

import httpx


async def start(api: httpx.AsyncClient, headers: dict[str, str], site: str, system: str = "queue",
                reason: str = "queue system unreachable") -> httpx.Response:
    return await api.post("/api/v1/fallbacks", json={"site": site, "system": system, "reason": reason},
                          headers=headers)


async def act(api: httpx.AsyncClient, headers: dict[str, str], fallback_id: int,
              **body: Any) -> httpx.Response:
    return await api.post(f"/api/v1/fallbacks/{fallback_id}/actions", json=body, headers=headers)


async def acted(api, headers, fallback_id, **body) -> dict[str, Any]:
    response = await act(api, headers, fallback_id, **body)
    assert response.status_code == 201, response.text
    return response.json()
