"""Every proof keeps its own outbox file, the scheduler's proof to the editors included, and the
scheduler's log says where each went (the CLI's and the admin's: tests/test_send_cli.py,
tests/web/test_admin_pages.py)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from mailer.schedule.scheduler import Scheduler, schedule_issue
from mailer.send import dispatch
from tests.test_schedule import BEFORE, DEC_SLOT, EDITOR, SECRET, sched, with_schedule  # noqa: F401 - fixture

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_the_schedulers_proof_and_a_later_proof_keep_their_own_files(sched, monkeypatch, caplog):  # noqa: F811
    from mailer.compose.render import compose_issue

    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    caplog.set_level(logging.INFO, "mailer.schedule")
    s = with_schedule(sched, proof_hours_before=24)
    schedule_issue(s, "2024-12", None, BEFORE)
    Scheduler(s).tick(DEC_SLOT - timedelta(hours=23))
    outbox = s.delivery.outbox_dir
    [first] = outbox.glob("2024-12.proof.*.eml")
    [line] = [r.getMessage() for r in caplog.records if "proof sent to 1 of 1 editors" in r.getMessage()]
    assert line.endswith(f": {EDITOR} written to {first}")
    composed = compose_issue(s.compose.issues_dir / "2024-12.md", s, proof=True)
    again = dispatch.send_proof(s, composed, [EDITOR, EDITOR])          # the editors' own proofs after it
    paths = [first] + [Path(r.raw) for r in again]
    assert sorted(outbox.glob("2024-12.proof.*.eml")) == sorted(paths) and len(set(paths)) == 3
    assert [dispatch.proof_where(r, "outbox") for r in again] == [f"written to {r.raw}" for r in again]


@pytest.mark.parametrize(("result", "backend", "said"), [
    (("accepted", None, None, "/srv/outbox/2024-12.proof.x.1.eml"), "outbox",
     "written to /srv/outbox/2024-12.proof.x.1.eml"),
    (("accepted", "<a.b@news.example.org>", None, "250 ok"), "smtp", "accepted by smtp as <a.b@news.example.org>"),
    (("accepted", None, None, None), "sendgrid", "accepted by sendgrid"),
    (("rejected", None, "550 5.1.1 no such user", None), "smtp", "rejected (550 5.1.1 no such user)"),
    (("retry_later", None, None, None), "outbox", "retry_later"),
])
def test_where_each_proof_went(result, backend, said):
    from mailer.send.deliver.base import Result, ResultStatus

    status, provider_id, detail, raw = result
    assert dispatch.proof_where(Result("proof.x.1", ResultStatus(status), provider_id, detail, raw), backend) == said
