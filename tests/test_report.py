"""`mailer report ISSUE`: the figures of one issue from the ledger and the events, with rates and
the bulk-sender warnings; the HTML page is self-contained (checked in headless Chromium)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from subscribers.events import DeliveryEvent, EventType, Severity
from tests.services import missing

CHROMIUM = "/usr/bin/chromium"
T0 = datetime(2024, 11, 5, 14, 0, tzinfo=UTC)


@pytest.fixture
def sent(config_file, db_url, monkeypatch):
    """Issue 2024-11 sent to 500 readers of crank (490 accepted, 6 failed, 4 deferred), then:
    11 hard and 3 soft bounces, 2 blocks, 1 complaint, 4 unsubscribes, 300 opens by 200 readers."""
    from mailer.migrate import connect
    from mailer.send.ledger import deliveries, sends
    from subscribers import store
    from subscribers.policy import Limits, ingest

    text = config_file.read_text().replace('url = "sqlite:///mailer.db"', f'url = "{db_url}"')
    config_file.write_text(text)
    engine = connect(db_url)
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        ids = [store.add_subscriber(conn, f"r{i}@example.org", crank).subscriber_id for i in range(500)]
        send_id = conn.execute(insert(sends).values(
            issue="2024-11", list_id=crank, list_name="crank", subject="s", backend="sendgrid", status="stopped",
            total=500, started_at=T0).returning(sends.c.id)).scalar()
        states = ["accepted"] * 490 + ["failed"] * 6 + ["deferred"] * 4
        conn.execute(insert(deliveries), [{"send_id": send_id, "subscriber_id": sid, "state": state, "attempts": 1}
                                          for sid, state in zip(ids, states, strict=True)])

        def events(kind, readers, severity=None, minutes=0, prefix=""):
            return [DeliveryEvent(type=kind, recipient=f"r{i}@example.org", severity=severity, source="test",
                                  at=T0 + timedelta(minutes=minutes + i), event_id=f"{prefix}{kind.value}-{i}",
                                  issue="2024-11") for i in readers]

        batch = (events(EventType.DELIVERED, range(480)) + events(EventType.BOUNCED, range(480, 491), Severity.HARD)
                 + events(EventType.BOUNCED, range(3), Severity.SOFT) + events(EventType.BLOCKED, range(3, 5))
                 + events(EventType.COMPLAINED, [7]) + events(EventType.UNSUBSCRIBED, range(10, 14))
                 + events(EventType.OPENED, range(200), minutes=30)
                 + events(EventType.OPENED, range(100), minutes=90, prefix="again-"))
        ingest(conn, batch, Limits(soft_bounce_limit=99, soft_bounce_window_days=30))
    engine.dispose()
    monkeypatch.setenv("COLUMNS", "200")
    return config_file


def test_figures_rates_and_warnings_as_json(cli, sent):
    result = cli("--config", sent, "report", "2024-11", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["figures"] == {"readers": 500, "accepted": 490, "failed": 6, "deferred": 4, "skipped": 0,
                               "in_doubt": 0, "pending": 0, "delivered": 480,
                               "hard_bounces": 11, "soft_bounces": 3, "blocks": 2, "complaints": 1,
                               "unsubscribes": 4, "opens": 200, "clicks": 0,
                               "machine_clicks": 0, "machine_opens": 0}
    assert data["rates"]["accepted"] == 0.98 and data["rates"]["opens"] == round(200 / 490, 6)
    assert data["rates"]["bounces"] == round(14 / 490, 6)
    assert data["warnings"] == ["complaint rate 0.20% is above 0.1%, Gmail's and Yahoo's guidance for bulk senders",
                                "bounce rate 2.86% is above 2%: clean the list before the next issue"]
    assert data["lists"] == ["crank"]


def test_the_table_names_each_figure_and_warns_on_stderr(cli, sent):
    result = cli("--config", sent, "report", "2024-11")
    assert result.code == 0
    assert "Hard bounces" in result.out and "2.24%" in result.out        # 11 of 490
    assert "warning: complaint rate 0.20%" in result.err


def test_an_issue_never_sent_is_one_clear_line(cli, sent):
    result = cli("--config", sent, "report", "2099-01")
    assert (result.code, result.err.strip()) == (
        1, "error: issue '2099-01' was never sent: nothing to report (see `mailer send`)")
    result = cli("--config", sent, "report", "2024-11", "--list", "digest")
    assert "never sent to list 'digest'" in result.err


@pytest.mark.browser
def test_the_html_page_is_self_contained_and_shows_the_chart(cli, sent, tmp_path, request):
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Debian's chromium is not installed at {CHROMIUM}")
    page_file = tmp_path / "report.html"
    assert cli("--config", sent, "report", "2024-11", "--html", page_file).code == 0
    playwright = request.getfixturevalue("playwright")   # the process's one (tests/conftest.py)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_file.as_uri())
    assert page.locator("h1").inner_text() == "Issue 2024-11"
    assert page.get_by_role("alert").count() == 2
    svg = page.locator("figure svg")
    assert svg.bounding_box()["width"] > 500
    assert page.locator("figure svg .series").count() >= 5      # delivered, bounced, blocked, ...
    assert "opened" in svg.text_content()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    browser.close()
    assert requests == [page_file.as_uri()]                           # nothing from the network
