"""A list's welcome mail (`mailer lists welcome`, mailer/send/welcome.py): lint-gated when set and
when sent, once per reader through the send ledger and the configured backend (the outbox here),
with the one-click headers and the footer, never a second time, never archived."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer import engines
from mailer.config import database_url, load_settings
from mailer.send import ledger
from mailer.send.ledger import sends

SECRET = "test-secret-key-0123456789abcdef"
pytestmark = pytest.mark.filterwarnings("ignore::mailer.compose.personalize.UnsafeUnsubscribeUrl")
WELCOME = """+++
subject = "Welcome to CRANK Call"
date = 2024-11-01
preheader = "What to expect, once a month"
+++
# Welcome

Thank you for confirming, {{ first_name | default("reader") }}.

## What comes next

One issue a month, on the first Tuesday.
"""


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture
def folder(config_file, repo, cli) -> Path:
    folder = config_file.parent
    shutil.copytree(repo / "templates", folder / "templates")
    (folder / "issues").mkdir()
    (folder / "issues" / "welcome.md").write_text(WELCOME, encoding="utf-8")
    for name in ("crank", "other"):
        assert cli("--config", config_file, "lists", "create", name).code == 0
    return folder


def welcomes_sent(folder: Path) -> list:
    found = sorted((folder / "outbox").glob("welcome.*.eml")) if (folder / "outbox").is_dir() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in found]


def broken(folder: Path, name: str = "welcome.md") -> Path:
    path = folder / "issues" / name
    path.write_text(WELCOME.replace("One issue", "Dear {{ nmae }}, one issue"), encoding="utf-8")
    return path


def test_a_broken_welcome_is_refused_when_set(cli, config_file, folder):
    path = broken(folder, "broken.md")
    refused = cli("--config", config_file, "lists", "welcome", "crank", path)
    assert refused.code == 1 and "lint error" in refused.err and "nmae" in refused.err
    shown = json.loads(cli("--config", config_file, "lists", "--json").out)
    assert [lst["welcome"] for lst in shown] == [None, None]
    assert cli("--config", config_file, "lists", "welcome", "crank").code == 2           # neither FILE nor --off
    assert cli("--config", config_file, "lists", "welcome", "nope", "welcome").code == 1


def test_once_per_reader_with_headers_and_footer_and_not_archived(cli, config_file, folder):
    c = ("--config", config_file)
    made = cli(*c, "lists", "welcome", "crank", "welcome")
    assert made.code == 0 and "Welcome to CRANK Call" in made.out
    assert "welcome.md" in cli(*c, "lists").out
    added = cli(*c, "subscribers", "add", "ann@example.org", "--list", "crank", "--confirmed", "--name", "Ann")
    assert added.code == 0 and "Sent crank's welcome mail." in added.out
    [mail] = welcomes_sent(folder)
    assert mail["Subject"] == "Welcome to CRANK Call" and mail["To"].addresses[0].addr_spec == "ann@example.org"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and "/unsubscribe/" in mail["List-Unsubscribe"]
    text = mail.get_body(("plain",)).get_content()
    assert "Thank you for confirming, Ann." in text and "/unsubscribe/" in text     # merge fields, the footer
    # confirming again, leaving and coming back, another list without a welcome: no second one
    assert "welcome" not in cli(*c, "subscribers", "add", "ann@example.org", "--list", "crank").out.lower()
    assert cli(*c, "subscribers", "remove", "ann@example.org", "--list", "crank").code == 0
    back = cli(*c, "subscribers", "add", "ann@example.org", "--list", "crank", "--resubscribe")
    assert back.code == 0 and "welcome" not in back.out.lower()
    assert "welcome" not in cli(*c, "subscribers", "add", "ann@example.org", "--list", "other").out.lower()
    assert cli(*c, "subscribers", "add", "unc@example.org", "--list", "crank", "--unconfirmed").code == 0
    assert len(welcomes_sent(folder)) == 1
    settings = load_settings(config_file)
    with engines.get(database_url(settings)).connect() as conn:
        assert ledger.archived(conn) == []
        [row] = conn.execute(select(sends.c.issue, sends.c.segment, sends.c.total, sends.c.sent)).all()
    assert tuple(row) == ("welcome", "welcome", 1, 1)
    off = cli(*c, "lists", "welcome", "crank", "--off")
    assert off.code == 0 and "any more" in off.out
    cli(*c, "subscribers", "add", "bob@example.org", "--list", "crank")
    assert len(welcomes_sent(folder)) == 1


def test_a_welcome_broken_later_is_reported_and_sent_once_fixed(cli, config_file, folder):
    c = ("--config", config_file)
    assert cli(*c, "lists", "welcome", "crank", "welcome").code == 0
    broken(folder)
    added = cli(*c, "subscribers", "add", "bob@example.org", "--list", "crank")
    assert added.code == 0 and "Added bob@example.org" in added.out     # the confirmation stands
    assert "was not sent now" in added.out and welcomes_sent(folder) == []
    settings = load_settings(config_file)
    with engines.get(database_url(settings)).connect() as conn:
        status, error = conn.execute(select(sends.c.status, sends.c.last_error)).one()
    assert status == "stopped" and "nmae" in error
    (folder / "issues" / "welcome.md").write_text(WELCOME, encoding="utf-8")
    cli(*c, "subscribers", "add", "cat@example.org", "--list", "crank")
    assert sorted(m["To"].addresses[0].addr_spec for m in welcomes_sent(folder)) == ["bob@example.org",
                                                                                     "cat@example.org"]


def test_enqueue_is_once_per_reader_on_both_databases(db_url, settings, tmp_path):
    from mailer.send import welcome
    from mailer.send.ledger import deliveries
    from subscribers import store

    settings = settings.__class__(**{**settings.__dict__, "database": settings.database.__class__(url=db_url)})
    engine = engines.get(db_url)
    with engine.begin() as conn:
        lst = store.create_list(conn, "crank")
        other = store.create_list(conn, "other")
        ann = store.add_subscriber(conn, "ann@example.org", lst.id).subscriber_id
        bob = store.add_subscriber(conn, "bob@example.org", lst.id).subscriber_id
        assert welcome.enqueue(conn, settings, ann, lst.id) is None          # no welcome yet
        welcome.set_welcome(conn, lst.id, tmp_path / "welcome.md", "welcome", "Welcome")
        first = welcome.enqueue(conn, settings, ann, lst.id)
        assert first is not None
        assert welcome.enqueue(conn, settings, ann, lst.id) is None          # had it
        assert welcome.enqueue(conn, settings, bob, lst.id) == first
        assert welcome.enqueue(conn, settings, bob, other.id) is None        # a list without a welcome
        assert [r.id for r in welcome.due(conn)] == [first]
        assert conn.execute(select(sends.c.total, sends.c.runner)).one() == (2, None)
        assert len(conn.execute(select(deliveries.c.id)).all()) == 2
        assert welcome.clear_welcome(conn, lst.id) and not welcome.clear_welcome(conn, lst.id)
