"""`GET /api/v1/audit`: filtered by actor, action, site and time, paged, scoped to the token's sites, and
exported as streamed, formula-safe CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx


def auth(token, role, sites):
    return {"Authorization": f"Bearer {token(role, sites)}"}


async def _fallback_actions(api, token, site, n):
    """Real audited actions: start and end fallbacks at `site` (each is one audit entry)."""
    floor = auth(token, "floor_staff", [site])
    for system in ("crm", "queue", "appointments")[:n]:
        started = await api.post("/api/v1/fallbacks", json={"site": site, "system": system,
                                                           "reason": "=HYPERLINK(\"x\")"}, headers=floor)
        assert started.status_code == 201, started.text


async def test_audit_is_filtered_paged_and_scoped_to_the_tokens_sites(api: httpx.AsyncClient, token, uid):
    site, other = f"audit-{uid}", f"audit-other-{uid}"
    before = datetime.now(UTC) - timedelta(seconds=1)
    await _fallback_actions(api, token, site, 3)
    await _fallback_actions(api, token, other, 1)
    sre = auth(token, "sre", [site])
    params = {"site": site, "action": "fallback.start", "since": before.isoformat()}
    first = (await api.get("/api/v1/audit", params={**params, "limit": 2}, headers=sre)).json()
    second = (await api.get("/api/v1/audit", params={**params, "limit": 2, "cursor": first["next_cursor"]},
                            headers=sre)).json()
    entries = first["items"] + second["items"]
    assert second["next_cursor"] is None and len(entries) == 3
    assert {(e["site"], e["action"], e["actor"]) for e in entries} == \
        {(site, "fallback.start", "test-floor_staff")}
    # without a site filter a site's sre sees only their site's entries; naming another site is refused
    mine = (await api.get("/api/v1/audit", params={"since": before.isoformat()}, headers=sre)).json()["items"]
    assert {e["site"] for e in mine} == {site}
    assert (await api.get("/api/v1/audit", params={"site": other}, headers=sre)).status_code == 403
    everywhere = auth(token, "admin", "*")
    both = (await api.get("/api/v1/audit", params={"since": before.isoformat(), "actor": "test-floor_staff"},
                          headers=everywhere)).json()["items"]
    assert {site, other} <= {e["site"] for e in both}
    assert (await api.get("/api/v1/audit", params={"actor": "nobody-here", "since": before.isoformat()},
                          headers=everywhere)).json()["items"] == []
    assert (await api.get("/api/v1/audit", params={"until": before.isoformat(), "site": site},
                          headers=sre)).json()["items"] == []
    # who may read it at all (contract section 7): sre and admin
    for role in ("manager", "floor_staff"):
        assert (await api.get("/api/v1/audit", headers=auth(token, role, [site]))).status_code == 403
    assert (await api.get("/api/v1/audit", params={"since": "yesterday"}, headers=sre)).status_code == 400


async def test_audit_csv_export_streams_every_entry_and_defuses_formulas(api: httpx.AsyncClient, token, uid):
    site = f"audit-csv-{uid}"
    await _fallback_actions(api, token, site, 2)
    sre = {**auth(token, "sre", [site]), "Accept": "text/csv"}
    async with api.stream("GET", "/api/v1/audit", params={"site": site, "limit": 1}, headers=sre) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv"), (await response.aread())[:300]
        assert "attachment" in response.headers["content-disposition"]
        text = "".join([chunk async for chunk in response.aiter_text()])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2, "every matching entry, not one page"
    assert {r["site"] for r in rows} == {site} and {r["action"] for r in rows} == {"fallback.start"}
    assert all(r["reason"].startswith("'=") for r in rows), [r["reason"] for r in rows]
    manager = {**auth(token, "manager", [site]), "Accept": "text/csv"}
    assert (await api.get("/api/v1/audit", headers=manager)).status_code == 403
