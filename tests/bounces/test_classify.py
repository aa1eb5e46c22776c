"""`mailer bounces scan` over real returned mail, one file per case (--dry-run --json).

flufl.bounce's own samples (tests/fixtures/bounces/flufl, with the addresses its
tests/test_detectors.py expects) and ours, in the shapes Gmail, Office 365, Postfix, a Yahoo
feedback loop (ARF) and auto-replies really have.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "bounces"

OWN = [  # file, kind, recipients
    ("postfix_unknown_user.eml", "hard", ["nobody.here@example.net"]),
    ("postfix_mailbox_full.eml", "soft", ["full.box@example.net"]),
    ("postfix_delayed.eml", "delayed", ["slow.server@example.net"]),
    ("gmail_address_not_found.eml", "hard", ["gone.reader@gmail.com"]),
    ("gmail_blocked_unauthenticated.eml", "blocked", ["careful.reader@gmail.com"]),
    ("office365_recipient_not_found.eml", "hard", ["former.staff@contoso.com"]),
    ("arf_complaint.eml", "complaint", ["annoyed.reader@yahoo.com"]),
    ("office365_automatic_reply.eml", "ignored", []),
    ("gmail_vacation_reply.eml", "ignored", []),
    ("exchange2010_recipient_not_found.eml", "hard", ["former.reader@contoso.com"]),  # prose only: "#550 5.1.1 ..."
    ("sieve_vacation_null_sender.eml", "ignored", []),       # RFC 3834 auto-reply from the null sender
]


def scan_json(cli, config, path) -> list[dict]:
    result = cli("--config", config, "bounces", "scan", path, "--dry-run", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.mark.parametrize(("name", "kind", "recipients"), OWN, ids=[row[0] for row in OWN])
def test_own_samples(cli, bounce_config, name, kind, recipients):
    [found] = scan_json(cli, bounce_config, FIXTURES / "own" / name)
    assert (found["kind"], found["recipients"]) == (kind, recipients)
    assert found["file"].endswith(name)


def expected_flufl() -> dict[str, tuple[str, set[str]]]:
    rows = (FIXTURES / "flufl" / "expected.tsv").read_text(encoding="utf-8").splitlines()
    return {name: (verdict, set(addresses.split()))
            for name, verdict, addresses in (row.split("\t") for row in rows if not row.startswith("#"))}


def test_flufl_bounce_samples_agree_at_least_95_percent(cli, bounce_config):
    """Permanent as hard, temporary never hard, and every address flufl.bounce's tests expect."""
    expected = expected_flufl()
    found = {row["file"].rsplit("/", 1)[-1]: row for row in scan_json(cli, bounce_config, FIXTURES / "flufl")}
    assert set(expected) <= set(found)
    disagree = {}
    for name, (verdict, addresses) in expected.items():
        row = found[name]
        kind_ok = row["kind"] == "hard" if verdict == "permanent" else row["kind"] != "hard"
        if not (kind_ok and addresses <= set(row["recipients"])):
            disagree[name] = (verdict, sorted(addresses), row["kind"], row["recipients"])
    assert len(expected) >= 100
    assert (len(expected) - len(disagree)) / len(expected) >= 0.95, disagree
    temporary_as_hard = [n for n, (v, *_rest) in expected.items() if v == "temporary" and found[n]["kind"] == "hard"]
    assert temporary_as_hard == []
    # the one known difference: a DSN whose MTA gave up (Action: failed) on a 4.4.7 timeout; its
    # status class says temporary, so it is soft here (docs/bounces.md)
    assert set(disagree) <= {"dsn_02.txt"}, disagree


@pytest.mark.parametrize(("status", "words", "kind"), [
    ("5.1.1", "550 5.1.1 user unknown", "hard"),
    ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", "hard"),
    ("5.2.1", "550 5.2.1 The email account that you tried to reach is inactive", "hard"),
    ("5.4.4", "550 5.4.4 Unable to route", "hard"),
    ("5.2.2", "552 5.2.2 mailbox full", "soft"),
    ("4.2.2", "452 4.2.2 The recipient's inbox is out of storage space", "soft"),
    ("4.7.0", "421 4.7.0 Try again later", "soft"),
    ("5.7.1", "550 5.7.1 Service unavailable; client host blocked using Spamhaus", "blocked"),
    ("5.7.26", "550 5.7.26 unauthenticated sender", "blocked"),
    ("5.0.0", "550 5.0.0 Message rejected as spam", "blocked"),
    ("5.0.0", "550 5.0.0 <x@example.org>... User unknown", "hard"),
    ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "blocked"),
    ("", "550 Requested action not taken: mailbox unavailable", "hard"),
    ("", "552 Quota exceeded", "soft"),
    ("", "450 try later", "soft"),
])
def test_status_codes(status, words, kind):
    from mailer.events.bounce_mail import classify

    assert classify(status, words) == kind


def test_an_mbox_names_each_message_by_its_index(cli, bounce_config, tmp_path):
    from tests.bounces.samples import dsn, write_mbox

    mbox = write_mbox(tmp_path / "bounces.mbox", [
        dsn("a@example.net", "bounces+1.1@news.example.org", "hard", n=1),
        dsn("b@example.net", "bounces+1.2@news.example.org", "soft", n=2),
        (FIXTURES / "own" / "arf_complaint.eml").read_bytes()])
    rows = scan_json(cli, bounce_config, mbox)
    assert [(r["file"], r["kind"], r["recipients"]) for r in rows] == [
        (f"{mbox}:0", "hard", ["a@example.net"]), (f"{mbox}:1", "soft", ["b@example.net"]),
        (f"{mbox}:2", "complaint", ["annoyed.reader@yahoo.com"])]


def test_a_maildir_and_a_message_that_is_not_a_bounce(cli, bounce_config, tmp_path):
    from tests.bounces.samples import write_maildir

    box = write_maildir(tmp_path / "Maildir", [b"From: friend@example.net\r\nSubject: hello\r\n\r\nHi!\r\n"])
    [row] = scan_json(cli, bounce_config, box)
    assert (row["kind"], row["recipients"]) == ("unrecognized", [])
    assert "/Maildir/new/" in row["file"]


def test_a_missing_path_is_named_in_one_line(cli, bounce_config, tmp_path):
    result = cli("--config", bounce_config, "bounces", "scan", tmp_path / "nope.mbox")
    assert result.code == 1
    assert result.err.strip() == f"error: {tmp_path / 'nope.mbox'}: no such file or folder"


def test_verbose_gives_a_line_per_message_and_the_summary_counts_kinds(cli, bounce_config):
    result = cli("--config", bounce_config, "bounces", "scan", FIXTURES / "own", "--dry-run", "-v")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert f"{FIXTURES / 'own' / 'postfix_mailbox_full.eml'}: soft full.box@example.net" in lines
    assert f"{FIXTURES / 'own' / 'gmail_vacation_reply.eml'}: ignored" in lines
    assert "11 messages: hard 4, soft 1, blocked 1, delayed 1, complaint 1, ignored 3." in lines
    # the samples' refs carry made-up MACs: every report that names someone is unverified
    assert "Dry run: 0 events for known subscribers, 0 for unknown addresses; nothing changed." in lines
    assert "Unverified 8: not tied to a message we sent, so they changed nobody:" in lines
    assert f"  {FIXTURES / 'own' / 'arf_complaint.eml'}: complaint annoyed.reader@yahoo.com (no ref in it verifies " \
        "(unsigned, forged or another key's) and no Message-ID of ours matches the ledger)" in lines
