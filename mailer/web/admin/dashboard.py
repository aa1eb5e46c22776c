"""/admin: every list with its counts per status, the last issues with their figures, a chart of
the last 30 days' events and the next scheduled send."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from mailer.web.admin import figures, search
from mailer.web.admin.lists import STATUSES

router = APIRouter()
LAST_ISSUES = 5


def _read(conn, counts, schedule) -> dict:
    return {"lists": search.overview(conn, counts), "issues": figures.issues_sent(conn, LAST_ISSUES),
            "chart": figures.chart(figures.events_by_day(conn)), "next_send": figures.next_scheduled(conn, schedule),
            "scheduler": figures.heartbeat(conn, schedule)}


@router.get("", include_in_schema=False)
async def dashboard(request: Request) -> Response:
    ctx = request.app.state.admin
    data = await run_in_threadpool(ctx.web.read, _read, ctx.counts, ctx.settings.schedule)
    return ctx.page(request, "dashboard.html.j2", statuses=STATUSES, **data)
