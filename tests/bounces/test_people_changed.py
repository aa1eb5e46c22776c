"""`mailer bounces scan` counts the people whose state changed, each once, not status changes:
one reader who bounced and complained in the same folder is one subscriber changed."""

from __future__ import annotations

from tests.bounces.samples import dsn, write_maildir
from tests.bounces.test_apply import events, scan, statuses, store  # noqa: F401 - the fixture

COMPLAINT = b"""From: feedback@arf.example.net
To: fbl@news.example.org
Subject: complaint
Message-ID: <fbl-2@arf.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b"

--b
Content-Type: text/plain

An abuse report.
--b
Content-Type: message/feedback-report

Feedback-Type: abuse
Version: 1
Original-Rcpt-To: <ann@example.org>

--b--
"""


def test_one_reader_changed_twice_is_one_person(cli, store, tmp_path):  # noqa: F811
    config, engine, _ids, _send_id = store
    box = write_maildir(tmp_path / "box", [dsn("ann@example.org", "bounces@n.example.org", "hard", n=1), COMPLAINT,
                                            dsn("bob@example.org", "bounces@n.example.org", "hard", n=2)])
    out = scan(cli, config, box).out
    assert statuses(engine) == {"ann@example.org": "complained", "bob@example.org": "bounced", "cat@example.org": None}
    assert len(events(engine)) == 3
    assert "New events 3, already seen 0, unknown addresses 0, subscribers changed 2." in out
