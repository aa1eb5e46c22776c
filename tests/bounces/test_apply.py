"""Bounce mail through the one policy, on SQLite and PostgreSQL: which ref to trust, rescans,
dry runs; and the end-to-end loop: send over SMTP, bounces come back to the VERP address, scan,
the next issue skips them."""

from __future__ import annotations

import dataclasses
import email
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select

from mailer.send.refs import read_ref, sign_ref
from tests.bounces.conftest import SECRET, with_database
from tests.bounces.samples import complaint, dsn, write_maildir
from tests.conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose
VERP = "bounces+{ref}@news.example.org"


# ----------------------------------------------------------------------------- refs

def test_a_signed_ref_verifies_only_under_its_key():
    ref = sign_ref(SECRET, 12, 345)
    assert read_ref(ref, SECRET) == (12, 345, True)
    assert read_ref(ref.upper(), SECRET).signed                     # a server folded the case
    assert read_ref(ref, "another key").signed is False
    assert read_ref(ref.replace("12.", "13.", 1), SECRET).signed is False   # moved to another send
    assert read_ref("12.345", SECRET) == (12, 345, False)           # mailed before signing
    assert read_ref("12.345.aaaaaaaaaa", SECRET).signed is False    # forged
    assert read_ref("proof.1", SECRET) is None and read_ref("", SECRET) is None


@pytest.mark.parametrize("key, send_id, subscriber_id", [
    (SECRET, 12, 345), (SECRET, 1, 1), ("k", 0, 0), (b"\xff\x00raw bytes", 7, 10**12 - 1),
    ("another key", 2**31 - 1, 2**40), (SECRET, 99, 123456789)])
def test_a_refs_mac_is_still_the_first_ten_base32_characters_of_the_hmac(key, send_id, subscriber_id):
    """refs._mac is written out for speed; refs already mailed must keep verifying: it must equal
    base32(HMAC-SHA256(sha256(salt + key), "SEND.SUBSCRIBER"))[:10], lower case."""
    import base64
    import hashlib
    import hmac

    from mailer.send import refs

    raw = key.encode() if isinstance(key, str) else key
    digest = hmac.new(hashlib.sha256(refs._SALT + raw).digest(), f"{send_id}.{subscriber_id}".encode(),
                      hashlib.sha256).digest()
    expected = base64.b32encode(digest).decode("ascii")[:10].lower()
    assert sign_ref(key, send_id, subscriber_id) == f"{send_id}.{subscriber_id}.{expected}"


# ----------------------------------------------------------------------------- the policy

OLD_KEY = "a key the sender used before this one"


def our_message_id(send_id: int, subscriber_id: int, key: str = SECRET) -> str:
    """The Message-ID mailer/compose/personalize.py gives a reader's copy."""
    return f"<2024-11.{sign_ref(key, send_id, subscriber_id)}.s{send_id}@example.org>"


@pytest.fixture
def store(bounce_config, db_url):
    """(config path, engine, {address: subscriber id}, send id) with three readers on list crank, a
    send, and its ledger: each reader's copy accepted with the Message-ID it was sent with (ann's
    signed under the key used before this one)."""
    from mailer.migrate import connect
    from mailer.send.ledger import deliveries, sends
    from subscribers import store as st
    from subscribers.models import utcnow

    with_database(bounce_config, db_url)
    engine = connect(db_url)
    with engine.begin() as conn:
        crank = st.create_list(conn, "crank").id
        ids = {a: st.add_subscriber(conn, a, crank).subscriber_id
               for a in ("ann@example.org", "bob@example.org", "cat@example.org")}
        send_id = conn.execute(sends.insert().values(
            issue="2024-11", list_id=crank, list_name="crank", subject="s", backend="smtp", status="done",
            started_at=utcnow()).returning(sends.c.id)).scalar()
        conn.execute(deliveries.insert(), [
            {"send_id": send_id, "subscriber_id": sid, "state": "accepted",
             "provider_id": our_message_id(send_id, sid, OLD_KEY if a == "ann@example.org" else SECRET)}
            for a, sid in ids.items()])
    yield bounce_config, engine, ids, send_id
    engine.dispose()


def statuses(engine) -> dict[str, str | None]:
    from subscribers.models import subscribers

    with engine.connect() as conn:
        return dict(conn.execute(select(subscribers.c.email, subscribers.c.global_status)).all())


def events(engine) -> list[tuple]:
    from subscribers.policy import events as table

    with engine.connect() as conn:
        return conn.execute(select(table.c.subscriber_id, table.c.type, table.c.severity, table.c.send_ref,
                                   table.c.issue).order_by(table.c.id)).all()


def scan(cli, config, path, *extra):
    result = cli("--config", config, "bounces", "scan", path, *extra)
    assert result.code == 0, result.err
    return result


def test_a_signed_ref_names_the_reader_even_when_the_mail_was_forwarded(cli, store, tmp_path):
    config, engine, ids, send_id = store
    ref = sign_ref(SECRET, send_id, ids["ann@example.org"])
    box = write_maildir(tmp_path / "box", [dsn("ann.forwarded@elsewhere.example", VERP.format(ref=ref), "hard")])
    scan(cli, config, box)
    assert statuses(engine)["ann@example.org"] == "bounced"
    assert events(engine) == [(ids["ann@example.org"], "bounced", "hard", ref, "2024-11")]


def test_a_forged_ref_alone_changes_nothing(cli, store, tmp_path):
    config, engine, ids, send_id = store
    forged = f"{send_id}.{ids['bob@example.org']}.aaaaaaaaaa"
    genuine = f"{send_id}.{ids['cat@example.org']}"
    box = write_maildir(tmp_path / "box", [dsn("nobody@elsewhere.example", VERP.format(ref=forged), "hard", ref=forged),
                                            dsn("stranger@example.net", VERP.format(ref=genuine))])
    out = scan(cli, config, box).out
    assert statuses(engine) == dict.fromkeys(ids)
    assert events(engine) == []
    assert "Unverified 2: not tied to a message we sent, so they changed nobody:" in out


# Who a report may change (docs/bounces.md, "Which report to trust"): a table of returned mail.
# Each row: what the message is, the DSN's arguments (with {ann} etc. filled in later), who ends up
# bounced (None: nobody, the report is unverified).
MAC_OF = {"ann": "ann@example.org", "bob": "bob@example.org", "cat": "cat@example.org"}
TRUST = [
    ("signed VERP ref, mail forwarded", dict(to="ann.new@forwarded.example", verp="ann"), "ann"),
    ("signed X-Mailer-Ref quoted, plain bounce address", dict(to="bob@example.org", xref="bob"), "bob"),
    ("our Message-ID quoted, its ref signed", dict(to="cat@example.org", mid="cat"), "cat"),
    ("our Message-ID quoted, signed by the old key, as in the ledger", dict(to="ann@example.org", mid="ann:old"),
     "ann"),
    ("signed ref of one reader, another reader as Original-Recipient",
     dict(to="x@elsewhere.example", original="ann@example.org", verp="cat"), "cat"),
    ("signed ref of one reader in a DSN naming every reader",
     dict(to="x@elsewhere.example", verp="cat", more=("ann@example.org", "bob@example.org")), "cat"),
    ("no ref at all", dict(to="bob@example.org"), None),
    ("unsigned ref (two numbers) in the VERP address", dict(to="bob@example.org", verp="bob:unsigned"), None),
    ("wrong MAC in the VERP address", dict(to="bob@example.org", verp="bob:forged"), None),
    ("forged X-Mailer-Ref", dict(to="bob@example.org", xref="bob:forged"), None),
    ("the victim only as Original-Recipient", dict(to="stranger@example.net", original="ann@example.org"), None),
    ("a Message-ID of our shape the ledger does not have", dict(to="cat@example.org", mid="cat:forged"), None),
    ("our old-key Message-ID for another reader", dict(to="bob@example.org", mid="bob:old"), None),
]


def _trust_dsn(ids: dict, send_id: int, to: str, verp: str = "", xref: str = "", mid: str = "",
               original: str | None = None, more: tuple[str, ...] = ()) -> bytes:
    def ref(spec: str) -> str:
        who, _, how = spec.partition(":")
        sid = ids[MAC_OF[who]]
        return {"": sign_ref(SECRET, send_id, sid), "unsigned": f"{send_id}.{sid}",
                "forged": f"{send_id}.{sid}.aaaaaaaaaa", "old": sign_ref(OLD_KEY, send_id, sid)}[how]

    def message_id(spec: str) -> str:
        who, _, how = spec.partition(":")
        if how == "forged":
            return f"<2024-11.{send_id}.{ids[MAC_OF[who]]}.s{send_id}@example.org>"
        return our_message_id(send_id, ids[MAC_OF[who]], OLD_KEY if how == "old" else SECRET)

    return dsn(to, VERP.format(ref=ref(verp)) if verp else "bounces@news.example.org", "hard",
               ref=ref(xref) if xref else None, message_id=message_id(mid) if mid else None, original=original,
               more=more)


@pytest.mark.parametrize(("case", "made", "bounced"), TRUST, ids=[row[0] for row in TRUST])
def test_a_report_changes_a_reader_only_when_tied_to_a_message_we_sent_them(cli, store, tmp_path, case, made,
                                                                            bounced):
    config, engine, ids, send_id = store
    box = write_maildir(tmp_path / "box", [_trust_dsn(ids, send_id, **made)])
    out = scan(cli, config, box).out
    expected = dict.fromkeys(ids)
    if bounced:
        expected[MAC_OF[bounced]] = "bounced"
    assert statuses(engine) == expected
    if bounced:
        assert [(sid, t) for sid, t, *_ in events(engine)] == [(ids[MAC_OF[bounced]], "bounced")]
        assert "Unverified" not in out
    else:
        assert events(engine) == []
        assert "Unverified 1: not tied to a message we sent, so they changed nobody:" in out
        assert unverified_rows(engine) == [("hard", 1)]


# Real shapes (tests/fixtures/bounces/own), each naming an address we know: as found (their refs
# carry made-up MACs) they change nobody; with the ref signed for that reader, they act.
REAL = [  # file, the address it names, its kind, the reader's status once it is proven
    ("postfix_unknown_user.eml", "nobody.here@example.net", "hard", "bounced"),
    ("postfix_mailbox_full.eml", "full.box@example.net", "soft", None),
    ("postfix_delayed.eml", "slow.server@example.net", "delayed", None),
    ("gmail_address_not_found.eml", "gone.reader@gmail.com", "hard", "bounced"),
    ("gmail_blocked_unauthenticated.eml", "careful.reader@gmail.com", "blocked", None),
    ("office365_recipient_not_found.eml", "former.staff@contoso.com", "hard", "bounced"),
    ("exchange2010_recipient_not_found.eml", "former.reader@contoso.com", "hard", "bounced"),
    ("arf_complaint.eml", "annoyed.reader@yahoo.com", "complaint", "complained"),
]
FIXTURES = REPO / "tests" / "fixtures" / "bounces" / "own"


@pytest.mark.parametrize(("name", "address", "kind", "proven"), REAL, ids=[row[0] for row in REAL])
def test_real_reports_change_the_reader_they_name_only_with_a_ref_that_verifies(cli, store, tmp_path, name,
                                                                                address, kind, proven):
    from subscribers import store as st

    config, engine, _ids, send_id = store
    with engine.begin() as conn:
        sid = st.add_subscriber(conn, address, st.get_list(conn, "crank").id).subscriber_id
    data = (FIXTURES / name).read_bytes()
    made_up = re.search(rb"7\.\d\d\.abcdefghij", data).group(0)
    as_found = write_maildir(tmp_path / "as-found", [data])
    out = scan(cli, config, as_found).out
    assert f"{kind} {address} (no ref in it verifies" in out
    assert statuses(engine)[address] is None and events(engine) == []

    signed = data.replace(made_up, sign_ref(SECRET, send_id, sid).encode())
    now = format_datetime(datetime.now(UTC)).encode()     # after the reader subscribed, or the policy waves it off
    signed = re.sub(rb"^Date: [^\r\n]*", b"Date: " + now, signed, count=1, flags=re.M)
    scan(cli, config, write_maildir(tmp_path / "signed", [signed]))
    assert statuses(engine)[address] == proven
    assert [(s, t) for s, t, *_ in events(engine)] == [(sid, KIND_EVENT[kind])]


KIND_EVENT = {"hard": "bounced", "soft": "bounced", "delayed": "deferred", "blocked": "blocked",
              "complaint": "complained"}


def unverified_rows(engine) -> list[tuple]:
    from mailer.events.unverified import unverified_reports as table

    with engine.connect() as conn:
        return conn.execute(select(table.c.kind, table.c.addresses).order_by(table.c.id)).all()


def test_without_the_key_only_our_message_id_in_the_ledger_proves_a_report(cli, store, tmp_path, monkeypatch):
    config, engine, ids, send_id = store
    monkeypatch.delenv("MAILER_SECRET_KEY")
    signed = VERP.format(ref=sign_ref(SECRET, send_id, ids["ann@example.org"]))
    box = write_maildir(tmp_path / "box", [
        dsn("ann@example.org", signed, "hard", n=1),                              # cannot be checked now
        dsn("bob@example.org", "bounces@news.example.org", "hard", n=2,
            message_id=our_message_id(send_id, ids["bob@example.org"]))])       # in the ledger
    result = cli("--config", config, "bounces", "scan", box)
    assert result.code == 0, result.err
    assert "MAILER_SECRET_KEY is not set: no ref can be verified" in result.err
    assert statuses(engine) == {"ann@example.org": None, "bob@example.org": "bounced", "cat@example.org": None}
    assert "Unverified 1:" in result.out


def test_a_message_id_without_a_mac_proves_nothing_even_when_the_ledger_has_it(cli, store, tmp_path):
    """A copy mailed before refs were signed: its Message-ID (slug, two numbers, the send's nonce)
    is in the ledger, but anyone can write it."""
    from mailer.send.ledger import deliveries

    config, engine, ids, send_id = store
    guessable = f"<2024-11.{send_id}.{ids['bob@example.org']}.s{send_id}@example.org>"
    with engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.subscriber_id == ids["bob@example.org"])
                     .values(provider_id=guessable))
    box = write_maildir(tmp_path / "box", [dsn("bob@example.org", "bounces@news.example.org", message_id=guessable)])
    assert "Unverified 1:" in scan(cli, config, box).out
    assert statuses(engine)["bob@example.org"] is None and events(engine) == []


def test_one_forged_dsn_naming_ten_thousand_readers_bounces_nobody(cli, store, tmp_path):
    """The issue's case: a 1 MB DSN naming every subscriber (and 10,000 more) suppresses nobody; it
    is recorded once, counted and listed, and a rescan adds nothing."""
    config, engine, ids, _send_id = store
    more = (*ids, *(f"reader{i}@example.com" for i in range(10_000)))
    box = write_maildir(tmp_path / "box", [dsn("ann@example.org", "bounces@news.example.org", "hard", more=more)])
    out = scan(cli, config, box).out
    assert statuses(engine) == dict.fromkeys(ids) and events(engine) == []
    assert "1 messages: hard 1." in out and "Unverified 1:" in out
    assert "hard ann@example.org, bob@example.org, cat@example.org and 10,000 more (no ref of ours in it)" in out
    from mailer.events.unverified import unverified_reports as table

    with engine.connect() as conn:
        [row] = conn.execute(select(table.c.addresses, table.c.why, table.c.label)).all()
    assert (row.addresses, row.why) == (10_003, "no ref of ours in it") and "/box/new/" in row.label
    scan(cli, config, box)
    assert len(unverified_rows(engine)) == 1
    as_json = json.loads(scan(cli, config, box, "--json", "--dry-run").out)
    assert as_json[0]["unverified"] == "no ref of ours in it" and as_json[0]["more_recipients"] == 9_983
    report = json.loads(cli("--config", config, "report", "2024-11", "--json").out)
    assert report["figures"]["hard_bounces"] == 0
    assert "1 bounce report received since this issue went out could not be tied to a message we sent " \
        "(unverified): they changed nobody. `mailer bounces scan` lists them." in report["notes"]


def test_scanning_twice_counts_nothing_twice(cli, store, tmp_path):
    config, engine, ids, send_id = store
    cat = VERP.format(ref=sign_ref(SECRET, send_id, ids["cat@example.org"]))
    box = write_maildir(tmp_path / "box", [dsn("cat@example.org", cat, "soft", n=i)
                                            for i in range(2)])            # two soft bounces: limit is 3
    scan(cli, config, box)
    again = scan(cli, config, box).out
    assert "New events 0, already seen 2" in again
    assert len(events(engine)) == 2
    assert statuses(engine)["cat@example.org"] is None
    write_maildir(tmp_path / "box", [dsn("cat@example.org", cat, "soft", n=3)])
    scan(cli, config, box)
    assert statuses(engine)["cat@example.org"] == "bounced"           # the third, within 30 days


def test_kinds_go_through_the_one_policy(cli, store, tmp_path):
    config, engine, ids, send_id = store
    ann, bob, cat = (sign_ref(SECRET, send_id, ids[a]) for a in ("ann@example.org", "bob@example.org",
                                                                 "cat@example.org"))
    box = write_maildir(tmp_path / "box", [complaint(ann), dsn("bob@example.org", VERP.format(ref=bob), "blocked", n=1),
                                            dsn("cat@example.org", VERP.format(ref=cat), "delayed", n=2)])
    scan(cli, config, box)
    assert statuses(engine) == {"ann@example.org": "complained", "bob@example.org": None, "cat@example.org": None}
    assert sorted((t, s) for _, t, s, *_ in events(engine)) == [("blocked", None), ("complained", None),
                                                               ("deferred", None)]


def test_dry_run_changes_nothing(cli, store, tmp_path):
    config, engine, ids, send_id = store
    ann = VERP.format(ref=sign_ref(SECRET, send_id, ids["ann@example.org"]))
    box = write_maildir(tmp_path / "box", [dsn("ann@example.org", ann, "hard"),
                                            dsn("bob@example.org", "bounces@n.example.org", "hard", n=1)])
    out = scan(cli, config, box, "--dry-run").out
    assert "Dry run: 1 events for known subscribers" in out and "Unverified 1:" in out
    assert statuses(engine)["ann@example.org"] is None and events(engine) == [] and unverified_rows(engine) == []


def test_a_message_that_crashes_the_parser_is_set_aside_and_the_rest_are_applied(cli, store, tmp_path):
    from tests.bounces.samples import nested_multipart, write_mbox

    config, engine, ids, send_id = store
    verp = {a: VERP.format(ref=sign_ref(SECRET, send_id, ids[a])) for a in ("ann@example.org", "cat@example.org")}
    mbox = write_mbox(tmp_path / "bounces.mbox", [dsn("ann@example.org", verp["ann@example.org"], "hard", n=1),
                                                  nested_multipart(1000),
                                                  dsn("cat@example.org", verp["cat@example.org"], "hard", n=2)])
    result = scan(cli, config, mbox)
    assert statuses(engine) == {"ann@example.org": "bounced", "bob@example.org": None, "cat@example.org": "bounced"}
    assert "3 messages: hard 2, unreadable 1." in result.out
    assert result.err.splitlines()[-2:] == [
        "warning: 1 message(s) could not be read (left where they are); the others were applied:",
        f"  {mbox}:1: too deeply nested to read (RecursionError)"]
    rows = json.loads(scan(cli, config, mbox, "--json", "--dry-run").out)
    assert rows[1] == {"file": f"{mbox}:1", "kind": "failed", "recipients": [],
                       "error": "too deeply nested to read (RecursionError)"}


# ----------------------------------------------------------------------------- end to end

def test_smtp_bounces_suppress_readers_and_the_next_issue_skips_them(cli, bounce_config, db_url, smtp_sink,
                                                                     tmp_path, repo):
    """Send over SMTP to the sink; DSNs come back for three readers to their signed VERP address
    (one of them forwarded); scan; they are suppressed and the next issue does not mail them."""
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from mailer.send import dispatch
    from tests.deliver.helpers import seed

    with_database(bounce_config, db_url)
    settings = load_settings(bounce_config)
    settings = dataclasses.replace(settings, delivery=dataclasses.replace(
        settings.delivery, backend="smtp", smtp=dataclasses.replace(
            settings.delivery.smtp, port=smtp_sink.port, starttls=False, return_path="bounces@news.example.org")))
    seed(db_url, 6)
    composed = compose_issue(repo / "issues" / "2024-11.md", load_settings(repo / "config.toml"))
    first = dispatch.run_send(settings, dispatch.plan_send(settings, composed, "crank"))
    assert first.sent == 6
    verp = {m.rcpt_tos[0]: m.mail_from for m in smtp_sink.messages}
    refs = {rcpt: email.message_from_bytes(m.data)["X-Mailer-Ref"] for m in smtp_sink.messages for rcpt in m.rcpt_tos}
    assert all(verp[r] == f"bounces+{refs[r]}@news.example.org" and read_ref(refs[r], SECRET).signed for r in verp)
    mailed = email.message_from_bytes(smtp_sink.messages[0].data)
    assert (mailed["List-Id"], mailed["Precedence"]) == ("CRANK Call <crank.example.org>", "bulk")

    returned = [dsn("r0@example.org", verp["r0@example.org"], "hard", n=0),
                dsn("r1.new@forwarded.example", verp["r1@example.org"], "hard", n=1),   # forwarded
                dsn("r2@example.org", verp["r2@example.org"], "soft", n=2),
                dsn("r3@example.org", verp["r3@example.org"], "delayed", n=3)]
    box = write_maildir(tmp_path / "bounces", returned)
    result = cli("--config", bounce_config, "bounces", "scan", box, "--json")
    assert [r["kind"] for r in json.loads(result.out)] == ["hard", "hard", "soft", "delayed"]
    report = json.loads(cli("--config", bounce_config, "report", "2024-11", "--json").out)
    assert {k: report["figures"][k] for k in ("readers", "accepted", "hard_bounces", "soft_bounces")} == {
        "readers": 6, "accepted": 6, "hard_bounces": 2, "soft_bounces": 1}
    assert report["warnings"] == ["bounce rate 50.00% is above 2%: clean the list before the next issue"]

    next_issue = dataclasses.replace(composed, slug="2024-12")
    smtp_sink.messages.clear()
    second = dispatch.run_send(settings, dispatch.plan_send(settings, next_issue, "crank"))
    mailed = sorted(r for m in smtp_sink.messages for r in m.rcpt_tos)
    assert mailed == ["r2@example.org", "r3@example.org", "r4@example.org", "r5@example.org"]
    assert second.sent == 4
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        from subscribers.policy import events as table

        assert conn.execute(select(func.count()).select_from(table).where(table.c.issue == "2024-11")).scalar() == 4
    engine.dispose()
