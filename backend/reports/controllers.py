from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter

from backend.auth import READ, Principal
from backend.reports import services
from backend.reports.schemas import CSV_COLUMNS, DailyReport, DailyReportList
from backend.resources import AppResources

CSV = "text/csv"
MAX_DAYS = 1100  # three years of days per request: every site's answer stays bounded
DEFAULT_SPAN = timedelta(days=400)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """A spreadsheet must not run a cell as a formula: text starting like one is quoted with `'`."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, date | datetime) else str(value)
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text


def as_csv(items: list[DailyReport]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([_cell(getattr(item, column)) for column in CSV_COLUMNS])
    return out.getvalue()


class ReportController(Controller):
    path = "/api/v1/reports"
    tags = ["reports"]

    @get("/daily", opt=READ, operation_id="getDailyReports", media_type="application/json")
    async def daily(
        self, request: Request[Principal, Any, State], resources: AppResources,
        site: FromQuery[str | None] = None,
        first: Annotated[date | None, QueryParameter(name="from")] = None,
        last: Annotated[date | None, QueryParameter(name="to")] = None,
    ) -> Response[Any]:
        """Per site and day (the site's time zone) from `from` to `to` inclusive (default: the last 400
        days, to the latest of the sites' own todays); JSON, or CSV with `Accept: text/csv`."""
        sites = request.user.scope(site)
        last = last or resources.sites.latest_day(datetime.now(UTC), sites)
        first = first or max(date.min + DEFAULT_SPAN, last) - DEFAULT_SPAN  # `to` near year 1 still answers
        if first > last:
            raise ValidationException("`from` is after `to`")
        if (last - first).days > MAX_DAYS:
            raise ValidationException(f"at most {MAX_DAYS} days per request")
        async with resources.pool.acquire() as conn:
            items = await services.daily(conn, sites, first, last)
        if request.accept.best_match(["application/json", CSV], default="application/json") == CSV:
            return Response(as_csv(items), media_type=f"{CSV}; charset=utf-8", headers={
                "content-disposition": f'attachment; filename="daily-{first}-{last}.csv"'})
        return Response(msgspec.to_builtins(DailyReportList(items=items)), media_type="application/json")
