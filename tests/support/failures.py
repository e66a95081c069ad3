"""Reading recorded failures through the API."""

from __future__ import annotations

import httpx

from tests.support.waits import eventually


def bearer(token, role, sites="*") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sites)}"}


async def failures_of(api: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[dict]:
    response = await api.get("/api/v1/failures", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def one_failure(api, headers, **params) -> dict:
    async def found():
        items = await failures_of(api, headers, **params)
        return items[0] if len(items) == 1 else None

    return await eventually(found)
