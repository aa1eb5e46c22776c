"""Warm-up (`mailer send --warmup`, `[delivery.pacing] warmup`): each UTC day's readers capped on the
ramp, the engaged first, continued on the following days; `send --status` shows the day's cap.
On SQLite and PostgreSQL, through the real send run (outbox) and the CLI."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from mailer.send import dispatch, ledger, warmup
from mailer.send.tracking import tracking_hits
from subscribers.models import memberships, subscribers, utcnow
from tests.deliver.helpers import seed

SECRET = "test-secret-key-0123456789abcdef"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture(scope="module")
def composed():
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from tests.conftest import REPO

    return compose_issue(REPO / "issues" / "2024-11.md", load_settings(REPO / "config.toml"))


@pytest.mark.parametrize(("day", "cap"), [(0, 1000), (1, 2000), (2, 5000), (3, 10_000), (4, 20_000), (5, 40_000)])
def test_the_ramp(day, cap):
    assert warmup.cap(1000, day) == cap


def warming(settings, db_url, first_day: int = 3):
    d = settings.delivery
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url),
                               delivery=dataclasses.replace(d, pacing=dataclasses.replace(
                                   d.pacing, warmup=True, warmup_first_day=first_day)))


def engage(engine) -> None:
    """r9 clicked last week (a person, "reader" tracking); r7 and r8 confirmed last month; r6 a year ago."""
    now = utcnow()
    with engine.begin() as conn:
        ids = dict(conn.execute(select(subscribers.c.email, subscribers.c.id)).all())
        for who, days in (("r7", 30), ("r8", 20), ("r6", 400)):
            conn.execute(update(memberships).where(memberships.c.subscriber_id == ids[f"{who}@example.org"])
                         .values(optin_at=now - timedelta(days=days)))
        old = conn.execute(insert(ledger.sends).values(issue="2024-10", list_name="crank", subject="October",
                                                       backend="outbox", status="done", started_at=now)
                           .returning(ledger.sends.c.id)).scalar_one()
        conn.execute(insert(tracking_hits).values(send_id=old, kind="click", copy="r9", at=now - timedelta(days=7),
                                                  subscriber_id=ids["r9@example.org"]))


def sent_to(settings) -> list[str]:
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        return list(conn.execute(select(subscribers.c.email).join_from(
            ledger.deliveries, subscribers, subscribers.c.id == ledger.deliveries.c.subscriber_id)
            .where(ledger.deliveries.c.state == "accepted").order_by(ledger.deliveries.c.id)).scalars())


def back_one_day(settings) -> None:
    engine = dispatch.open_store(settings)
    with engine.begin() as conn:
        row = conn.execute(select(warmup.send_warmups)).one()
        conn.execute(update(warmup.send_warmups).values(first_day=row.first_day - timedelta(days=1),
                                                        capped_on=row.capped_on - timedelta(days=1)))
        conn.execute(update(ledger.deliveries).where(ledger.deliveries.c.updated_at.is_not(None))
                     .values(updated_at=utcnow() - timedelta(days=1)))


def test_each_day_its_cap_the_engaged_first(settings, db_url, composed):
    seed(db_url, 12)
    s = warming(settings, db_url)
    engage(dispatch.open_store(s))
    notes: list[str] = []

    first = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"), notice=notes.append)
    assert first.sent == 3 and first.status == "stopped"
    assert sent_to(s) == ["r9@example.org", "r7@example.org", "r8@example.org"]   # the click, then confirmations
    assert "warm-up day 1: today's cap of 3 is reached" in notes[-1]
    assert warmup.capped_today(dispatch.open_store(s), first.send_id)
    assert not warmup.capped_today(dispatch.open_store(s), first.send_id, utcnow() + timedelta(days=1))

    again = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))   # the same day: nothing more
    assert again.sent == 3

    back_one_day(s)
    plain = dataclasses.replace(s, delivery=dataclasses.replace(s.delivery, pacing=dataclasses.replace(
        s.delivery.pacing, warmup=False)))                                   # the send remembers it warms up
    second = dispatch.run_send(plain, dispatch.plan_send(plain, composed, "crank"))
    assert second.sent == 3 + 6 and second.status == "stopped"              # day 2: twice the first

    back_one_day(s)
    third = dispatch.run_send(plain, dispatch.plan_send(plain, composed, "crank"))
    assert third.sent == 12 and third.status == "done"                       # day 3's 15 is more than is left


def test_send_cli_warmup_and_status(cli, config_file, repo, monkeypatch):
    for folder in ("templates", "issues"):
        (config_file.parent / folder).symlink_to(repo / folder)
    text = config_file.read_text().replace("warmup_first_day = 1000", "warmup_first_day = 2")
    config_file.write_text(text)
    seed(f"sqlite:///{config_file.parent / 'mailer.db'}", 5)
    result = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--yes", "--warmup")
    assert result.code == 0, result.err
    assert "warm-up day 1: today's cap of 2 is reached; the other 3 readers go on the next days" in result.err
    status = cli("--config", config_file, "send", "2024-11", "--list", "crank", "--status")
    assert status.code == 0, status.err
    assert "warm-up day 1, cap 2 today, 2 sent today, 0 left today; 3 readers still to send" in status.out


def test_the_scheduler_waits_for_tomorrow(settings, db_url, composed):
    from mailer.schedule.scheduler import Scheduler

    seed(db_url, 4)
    s = warming(settings, db_url, first_day=2)
    summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))
    scheduler = Scheduler(s)
    send = type("Send", (), {"id": summary.send_id})()
    row = type("Row", (), {"runner": None})()
    assert scheduler._resumable(row, send, utcnow()) is False
    assert scheduler._resumable(row, send, utcnow() + timedelta(days=1)) is True

