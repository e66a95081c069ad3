"""HTTP to the backend: reads on demand (a lookup, a filter), actions, and what this backend offers.

What the backend offers is read from its OpenAPI document, so a page shows an action or a view only
when the backend it talks to has the endpoint, whatever version either side is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

_PARAMETER = re.compile(r"\{[^}]*\}")


class BackendError(Exception):
    """The backend answered with a problem document, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Capabilities:
    """The (method, path template) pairs the backend serves, path parameters normalised to `{}`."""

    operations: frozenset[tuple[str, str]]

    @classmethod
    def from_openapi(cls, document: dict[str, Any]) -> Capabilities:
        return cls(frozenset(
            (method.upper(), _PARAMETER.sub("{}", path))
            for path, item in document.get("paths", {}).items() for method in item
            if method in {"get", "post", "put", "patch", "delete"}
        ))

    def has(self, method: str, path: str) -> bool:
        return (method.upper(), _PARAMETER.sub("{}", path)) in self.operations


def _problem(response: httpx.Response) -> str:
    """What the backend said went wrong: a validation problem's fields (its `detail` is only "Bad Request"),
    or its detail."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)
    extra = body.get("extra")
    problems = extra if isinstance(extra, list) else []
    fields = [f"{e['key']}: {e['message']}" for e in problems
              if isinstance(e, dict) and {"key", "message"} <= e.keys()]
    return "; ".join(fields) or str(body.get("detail") or body.get("title") or body)


class BackendClient:
    """One signed-in user's HTTP client. The token travels in a header only, never in a URL."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"the backend could not be reached ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise BackendError(_problem(response), response.status_code)
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        """`path` may carry its own query; `params` replace it (httpx drops a URL's query for any params)."""
        given = {k: v for k, v in params.items() if v is not None}
        return await self._request("GET", path, params=given or None)

    async def get_csv(self, path: str, **params: Any) -> bytes:
        """The same read as CSV (`Accept: text/csv`), for a download."""
        try:
            response = await self._http.get(path, params={k: v for k, v in params.items() if v is not None},
                                            headers={"Accept": "text/csv"})
        except httpx.HTTPError as exc:
            raise BackendError(f"the backend could not be reached ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise BackendError(_problem(response), response.status_code)
        return response.content

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self._request("POST", path, json=body)

    async def capabilities(self) -> Capabilities:
        return Capabilities.from_openapi(await self.get("/schema/openapi.json"))
