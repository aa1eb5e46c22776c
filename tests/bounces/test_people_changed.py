"""`mailer bounces scan` counts the people whose state changed, each once, not status changes:
one reader who bounced and complained in the same folder is one subscriber changed."""

from __future__ import annotations

from mailer.send.refs import sign_ref
from tests.bounces.conftest import SECRET
from tests.bounces.samples import complaint, dsn, write_maildir
from tests.bounces.test_apply import VERP, events, scan, statuses, store  # noqa: F401 - the fixture


def test_one_reader_changed_twice_is_one_person(cli, store, tmp_path):  # noqa: F811
    config, engine, ids, send_id = store
    ann, bob = (sign_ref(SECRET, send_id, ids[a]) for a in ("ann@example.org", "bob@example.org"))
    box = write_maildir(tmp_path / "box", [dsn("ann@example.org", VERP.format(ref=ann), "hard", n=1),
                                            complaint(ann, n=2),
                                            dsn("bob@example.org", VERP.format(ref=bob), "hard", n=2)])
    out = scan(cli, config, box).out
    assert statuses(engine) == {"ann@example.org": "complained", "bob@example.org": "bounced", "cat@example.org": None}
    assert len(events(engine)) == 3
    assert "New events 3, already seen 0, unknown addresses 0, subscribers changed 2." in out
