"""/admin/issues tells the schedule's truth: an issue that failed at its slot is "failed" with the
reason and listed once, a missed slot shows without a scheduler, times are in the schedule's zone,
and whether a scheduler is running is said on the page and the dashboard."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta

from tests.conftest import REPO
from tests.web.admin_helpers import add_user, login

HTML = {"accept": "text/html"}


def _state(live, issue: str, state: str, send_at: datetime, reason: str | None = None) -> None:
    from sqlalchemy import insert

    from mailer.schedule.states import issue_states

    with live.web.engine.begin() as conn:
        conn.execute(insert(issue_states).values(issue=issue, state=state, source=f"issues/{issue}.md",
                                                 subject=f"Subject of {issue}", list_name="crank", send_at=send_at,
                                                 pinned=False, reason=reason, updated_at=send_at))


def test_failed_and_missed_issues_are_named_once_with_times_in_the_schedules_zone(live):
    from mailer.schedule.slots import shown

    for slug in ("2024-10", "2024-11", "2024-12", "2025-01"):
        shutil.copy(REPO / "tests/fixtures/issues/minimal.md", live.settings.compose.issues_dir / f"{slug}.md")
    now = datetime.now(UTC).replace(microsecond=0)
    _state(live, "2024-10", "failed", now - timedelta(days=3), "the list crank does not exist")
    _state(live, "2024-11", "scheduled", now - timedelta(days=1))                  # missed: no scheduler ran
    later = now + timedelta(days=20)
    _state(live, "2024-12", "scheduled", later)
    add_user(live)
    admin = login(live)
    page = admin.get("/admin/issues", headers=HTML).text
    for slug in ("2024-10", "2024-11", "2024-12", "2025-01"):
        assert len(re.findall(rf'href="/admin/issues/{slug}"', page)) == 1, slug
    failed = page[page.index('id="failed-h"'):page.index('id="scheduled-h"')]
    assert "2024-10" in failed and "failed: the list crank does not exist" in failed
    assert "2024-11" in failed and "missed: its time" in failed and "nothing was sent" in failed
    drafts = page[page.index('id="drafts-h"'):page.index('id="failed-h"')]
    assert "2025-01" in drafts and "2024-10" not in drafts
    assert f"2024-12</a> (Subject of 2024-12) to crank at {shown(later, live.settings.schedule)}" in page
    assert "0 readers to reach, 0 already have it" in page
    assert "Scheduler: not running (none has ever run on this database)" in page
    one = admin.get("/admin/issues/2024-12", headers=HTML).text
    assert f"Scheduled for {shown(later, live.settings.schedule)} to crank." in one
    missed = admin.get("/admin/issues/2024-11", headers=HTML).text
    assert "Missed: its time" in missed
    board = admin.get("/admin", headers=HTML).text
    assert 'id="scheduler"' in board and "Scheduler: not running" in board
