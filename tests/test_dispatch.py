"""Stage 5: the send run over every backend, on SQLite and PostgreSQL: exactly once, resumable."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from collections import Counter

import pytest
from sqlalchemy import select, text, update

from mailer.errors import SendError
from mailer.send import dispatch, ledger
from mailer.send.deliver.registry import create_backend
from tests.deliver.helpers import seed
from tests.servers.smtp_sink import SmtpSink

SECRET = "test-secret-key-0123456789abcdef"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")


@pytest.fixture(scope="module")
def composed(repo):
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings

    return compose_issue(repo / "issues" / "2024-11.md", load_settings(repo / "config.toml"))


@pytest.fixture(scope="module")
def repo():
    from tests.conftest import REPO

    return REPO


@pytest.fixture
def store_settings(settings, db_url):
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))


def with_backend(settings, name, *, server=None, sink_port=None, batch_size=50):
    delivery = settings.delivery
    if server is not None:
        delivery = dataclasses.replace(delivery, sendgrid=dataclasses.replace(
            delivery.sendgrid, host=server.url, batch_size=batch_size, timeout=5.0))
    if sink_port is not None:
        delivery = dataclasses.replace(delivery, smtp=dataclasses.replace(
            delivery.smtp, port=sink_port, starttls=False, return_path="bounces@example.org"))
    return dataclasses.replace(settings, delivery=dataclasses.replace(delivery, backend=name))


def send(settings, composed, **options):
    return dispatch.run_send(settings, dispatch.plan_send(settings, composed, "crank"), **options)


def delivered(settings, name, server=None, sink=None) -> list[bytes | dict]:
    """What reached the outside world, one item per message, in order."""
    if name == "outbox":
        return [p.read_bytes() for p in sorted(settings.delivery.outbox_dir.glob("*.eml"))]
    if name == "smtp":
        return [m.data for m in sink.messages]
    return server.personalizations()


def addressee(item) -> str:
    if isinstance(item, dict):
        return item["to"][0]["email"]
    return email.message_from_bytes(item, policy=email.policy.default)["To"].addresses[0].addr_spec


def states(settings) -> Counter:
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        return Counter(conn.execute(select(ledger.deliveries.c.state)).scalars())


@pytest.mark.parametrize("name", ["outbox", "smtp", "sendgrid"])
def test_each_backend_sends_once_to_every_active_reader(store_settings, composed, sendgrid_server, smtp_sink, name):
    from subscribers.tokens import verify_token

    list_id = seed(store_settings.database.url, 120)
    settings = with_backend(store_settings, name, server=sendgrid_server, sink_port=smtp_sink.port)
    summary = send(settings, composed)
    assert (summary.sent, summary.failed, summary.skipped, summary.status) == (120, 0, 0, "done")
    items = delivered(settings, name, sendgrid_server, smtp_sink)
    assert sorted(addressee(i) for i in items) == sorted(f"r{i}@example.org" for i in range(120))
    assert states(settings) == {"accepted": 120}
    if name == "sendgrid":
        assert sendgrid_server.stats.requests == 3  # ceil(120 / 50)
        token = items[7]["substitutions"]["%%unsubscribe_url%%"].rsplit("/", 1)[1]
    else:
        body = email.message_from_bytes(items[7], policy=email.policy.default)
        token = re.search(r"/unsubscribe/([\w.-]+)>", body["List-Unsubscribe"]).group(1)
    subscriber_id, token_list = verify_token(SECRET, "unsubscribe", token)
    assert token_list == list_id and subscriber_id > 0


def test_a_sent_issue_is_not_sent_again(store_settings, composed):
    seed(store_settings.database.url, 30)
    first = send(store_settings, composed)
    plan = dispatch.plan_send(store_settings, composed, "crank")
    again = dispatch.run_send(store_settings, plan)
    assert plan.already_sent and again.already_sent and again.sent == first.sent == 30
    assert len(list(store_settings.delivery.outbox_dir.glob("*.eml"))) == 30


def test_readers_are_fixed_at_the_start_and_suppression_is_checked_before_each_batch(store_settings, composed):
    from subscribers.store import forget, set_status

    list_id = seed(store_settings.database.url, 250)
    engine = dispatch.open_store(store_settings)
    outbox = create_backend("outbox", store_settings)

    class ChangingStore(type(outbox)):
        calls = 0

        def _send(self, batch, encoded):
            ChangingStore.calls += 1
            if ChangingStore.calls == 1:  # while batch 1 is out: r200 leaves, r201 bounces, r999 joins,
                seed(store_settings.database.url, 1, start=999)   # r202 is forgotten (GDPR erasure)
                with engine.begin() as conn:
                    set_status(conn, _sid(conn, "r200@example.org"), list_id, "unsubscribed", "test")
                    set_status(conn, _sid(conn, "r201@example.org"), None, "bounced", "test")
                    forget(conn, "r202@example.org", SECRET)
            return super()._send(batch, encoded)

    summary = send(store_settings, composed, backend=ChangingStore(store_settings.delivery.outbox_dir))
    assert (summary.total, summary.sent, summary.skipped) == (250, 247, 3)
    sent = [addressee(p.read_bytes()) for p in store_settings.delivery.outbox_dir.glob("*.eml")]
    assert sorted(sent) == sorted(f"r{i}@example.org" for i in range(250) if i not in (200, 201, 202))
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.deliveries.c.state, ledger.deliveries.c.last_error)
                            .where(ledger.deliveries.c.state == "skipped")).all()
    assert sorted(r.last_error for r in rows) == ["bounced since the send started", "forgotten since the send started",
                                                  "unsubscribed since the send started"]


def _sid(conn, address):
    from subscribers.models import subscribers

    return conn.execute(select(subscribers.c.id).where(subscribers.c.email == address)).scalar_one()


class Crash(BaseException):
    """Stands in for the process dying after the provider took a batch."""


@pytest.mark.parametrize("on_interrupted, resent", [("resend", 1), ("skip", 0)])
def test_the_batch_in_flight_at_a_crash_is_named_and_resent_or_skipped(store_settings, composed, sendgrid_server,
                                                                       on_interrupted, resent):
    seed(store_settings.database.url, 200)
    settings = with_backend(store_settings, "sendgrid", server=sendgrid_server, batch_size=40)
    backend = create_backend("sendgrid", settings)
    real = backend._send

    def crash_on_third(batch, encoded):
        results = real(batch, encoded)
        if sendgrid_server.stats.accepted == 3:
            raise Crash()
        return results

    backend._send = crash_on_third
    with pytest.raises(Crash):
        send(settings, composed, backend=backend)
    notes = []
    summary = send(settings, composed, notice=notes.append, on_interrupted=on_interrupted)
    assert summary.interrupted == [(3, 40)]
    assert "batch 3 (40 readers) was in flight" in notes[0] and on_interrupted in notes[0]
    counts = Counter(sendgrid_server.recipients())
    assert set(counts) == {f"r{i}@example.org" for i in range(200)}  # the provider had taken batch 3
    assert sorted(a for a, n in counts.items() if n > 1) == (sorted(_batch(sendgrid_server, 2)) if resent else [])
    assert (summary.sent, summary.skipped) == (200 if resent else 160, 0 if resent else 40)


def _batch(server, index) -> set[str]:
    return {p["to"][0]["email"] for p in server.accepted[index]["personalizations"]}


def test_temporary_and_permanent_refusals(store_settings, composed):
    seed(store_settings.database.url, 5)
    replies = {"r1@example.org": "550 5.1.1 No such user", "r3@example.org": "450 4.2.1 Mailbox busy"}
    with SmtpSink(replies=replies) as sink:
        settings = with_backend(store_settings, "smtp", sink_port=sink.port)
        settings = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, retry_wait_seconds=0))
        summary = send(settings, composed)
    assert (summary.sent, summary.failed, summary.deferred, summary.status) == (3, 1, 1, "stopped")
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.deliveries.c.state, ledger.deliveries.c.attempts,
                                   ledger.deliveries.c.last_error)
                            .where(ledger.deliveries.c.state != "accepted").order_by(ledger.deliveries.c.id)).all()
    assert [tuple(r) for r in rows] == [("failed", 1, replies["r1@example.org"]),
                                        ("deferred", 1, replies["r3@example.org"])]


@pytest.mark.parametrize("on_interrupted, copies", [("resend", 2), ("skip", 1)])
def test_smtp_connection_lost_after_data_leaves_the_reader_in_flight_for_the_next_run(store_settings, composed,
                                                                                       on_interrupted, copies):
    seed(store_settings.database.url, 5)
    with SmtpSink(drop_after_data={"r2@example.org"}) as sink:
        settings = with_backend(store_settings, "smtp", sink_port=sink.port)
        first = send(settings, composed)
        assert (first.sent, first.in_doubt, first.status) == (4, 1, "stopped")
        assert states(settings) == {"accepted": 4, "sending": 1}
        notes = []
        again = send(settings, composed, notice=notes.append, on_interrupted=on_interrupted)
    assert "was in flight when the last run stopped" in notes[0]
    assert Counter(m.rcpt_tos[0] for m in sink.messages) == {**{f"r{i}@example.org": 1 for i in range(5)},
                                                             "r2@example.org": copies}
    assert (again.sent, again.skipped, again.status) == (4 + copies - 1, 2 - copies, "done")


def test_a_refused_return_path_stops_the_send_and_a_rerun_finishes_it(store_settings, composed):
    seed(store_settings.database.url, 5)
    refused = "553 5.7.1 Sender address rejected: not owned by user"
    with SmtpSink(refuse_sender=refused) as sink:
        settings = with_backend(store_settings, "smtp", sink_port=sink.port)
        with pytest.raises(SendError, match=r"after 0 sent: smtp: the server refuses the return path "
                                            r"bounces@example.org \(status 553\).*ledger is intact"):
            send(settings, composed)
    assert (states(settings), sink.messages) == ({"pending": 5}, [])
    with SmtpSink() as sink:
        summary = send(with_backend(store_settings, "smtp", sink_port=sink.port), composed)
    assert summary.sent == 5 and sorted(m.rcpt_tos[0] for m in sink.messages) == [f"r{i}@example.org" for i in range(5)]


def test_readers_a_rival_claimed_first_are_left_to_it(store_settings, composed, monkeypatch):
    """Between reading a batch's readers and claiming them, another worker claimed two: this run
    sends the rest of that batch and never the rival's two (they stay in its batch, `sending`)."""
    seed(store_settings.database.url, 10)
    settings = with_backend(store_settings, "smtp", sink_port=None)
    real, calls, rival = ledger.claim, [], []

    def rival_first(conn, send_id, ids):
        calls.append(ids)
        if len(calls) == 2:                 # the second batch of four: r4 to r7
            rival.append(real(conn, send_id, ids[1:3])[0])
        return real(conn, send_id, ids)

    monkeypatch.setattr(ledger, "claim", rival_first)
    backend = create_backend("outbox", settings)
    backend.max_batch = 4
    summary = send(settings, composed, backend=backend)
    sent = sorted(addressee(p.read_bytes()) for p in settings.delivery.outbox_dir.glob("*.eml"))
    assert sent == sorted(f"r{i}@example.org" for i in range(10) if i not in (5, 6))
    engine = dispatch.open_store(settings)
    with engine.connect() as conn:
        theirs = conn.execute(select(ledger.deliveries.c.subscriber_id, ledger.deliveries.c.batch)
                              .where(ledger.deliveries.c.state == "sending")).all()
        assert sorted(sid for sid, _ in theirs) == [_sid(conn, "r5@example.org"), _sid(conn, "r6@example.org")]
    assert {batch for _, batch in theirs} == set(rival) and summary.sent == 8


def test_a_first_start_that_loses_the_race_finds_the_winners_send(store_settings, composed, monkeypatch):
    """Two `mailer send` started at once both find no send and both insert one: the UNIQUE
    constraint refuses the second, which looks again, finds the winner running and says so."""
    import os

    list_id = seed(store_settings.database.url, 3)
    engine = dispatch.open_store(store_settings)
    real, raced = ledger.find_send, []

    def winner_first(conn, *args):
        found = real(conn, *args)
        if found is None and not raced:
            raced.append(True)
            with engine.begin() as other:   # the other process, committed before our insert
                from subscribers.store import recipients_select

                ledger.create_send(other, issue="2024-11", list_id=list_id, list_name="crank", subject="S",
                                   backend="outbox", recipients=recipients_select(list_id))
                other.execute(update(ledger.sends).values(runner=f"{ledger.socket.gethostname()}:{os.getppid()}"))
        return found

    monkeypatch.setattr(ledger, "find_send", winner_first)
    with pytest.raises(SendError, match="running in another process"):
        send(store_settings, composed)
    assert raced and states(store_settings) == {"pending": 3}       # one send, its readers once
    assert not store_settings.delivery.outbox_dir.exists()


def test_a_rejected_api_key_stops_the_send_and_a_rerun_finishes_it(store_settings, composed, sendgrid_server,
                                                                  monkeypatch):
    seed(store_settings.database.url, 60)
    settings = with_backend(store_settings, "sendgrid", server=sendgrid_server)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    with pytest.raises(SendError, match=r"after 0 sent: .*401.*ledger is intact"):
        send(settings, composed)
    assert states(settings) == {"pending": 60}
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    assert send(settings, composed).sent == 60
    assert sorted(sendgrid_server.recipients()) == sorted(f"r{i}@example.org" for i in range(60))


def test_an_address_that_cannot_be_written_fails_alone(store_settings, composed):
    from subscribers.models import subscribers

    seed(store_settings.database.url, 4)
    engine = dispatch.open_store(store_settings)
    with engine.begin() as conn:  # bypass the store's normalization, as old data might
        conn.execute(update(subscribers).where(subscribers.c.email == "r2@example.org")
                     .values(email="r2@@example.org"))
    summary = send(store_settings, composed)
    assert (summary.sent, summary.failed) == (3, 1)


def test_a_second_runner_is_refused_while_the_first_is_alive(store_settings, composed):
    import os

    seed(store_settings.database.url, 3)
    plan = dispatch.plan_send(store_settings, composed, "crank")
    dispatch.run_send(store_settings, plan)
    with plan.engine.begin() as conn:  # pretend our parent process is mid-send
        parent = f"{ledger.socket.gethostname()}:{os.getppid()}"
        conn.execute(update(ledger.sends).values(status="sending", runner=parent, heartbeat_at=ledger.now()))
        conn.execute(update(ledger.deliveries).where(ledger.deliveries.c.id == 1).values(state="pending"))
    with pytest.raises(SendError, match="running in another process"):
        dispatch.run_send(store_settings, dispatch.plan_send(store_settings, composed, "crank"))


def test_dry_run_personalizes_everyone_and_writes_nothing(store_settings, composed):
    seed(store_settings.database.url, 25)
    summary = dispatch.dry_run(store_settings, dispatch.plan_send(store_settings, composed, "crank"))
    assert (summary.dry_run, summary.sent, summary.failed) == (True, 25, 0)
    assert states(store_settings) == {}
    assert not store_settings.delivery.outbox_dir.exists()


def test_an_empty_list_is_an_error(store_settings, composed):
    seed(store_settings.database.url, 0)
    with pytest.raises(SendError, match="no active subscribers"):
        send(store_settings, composed)


def test_proofs_are_marked_and_stay_out_of_the_ledger(store_settings, composed):
    results = dispatch.send_proof(store_settings, composed, ["ed@example.org", "ed2@example.org"])
    assert all(r.ok for r in results)
    files = sorted(store_settings.delivery.outbox_dir.glob("*.eml"))
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "[PROOF] CRANK Call | November 2024"
    assert states(store_settings) == {}


def test_ledger_tables_have_their_own_version_table(store_settings):
    from mailer.migrate import VERSION_TABLE, head_revision

    engine = dispatch.open_store(store_settings)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == head_revision()
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_a_claim_takes_only_readers_still_pending(store_settings):
    from subscribers.store import recipients_select

    list_id = seed(store_settings.database.url, 6)
    engine = dispatch.open_store(store_settings)
    with engine.begin() as conn:
        send_id = ledger.create_send(conn, issue="x", list_id=list_id, list_name="crank", subject="S",
                                     backend="outbox", recipients=recipients_select(list_id))
        ids = [r.delivery_id for r in ledger.peek(conn, send_id, list_id, 0, 6)]
        first = ledger.claim(conn, send_id, ids[:4])        # a rival worker took four
        second = ledger.claim(conn, send_id, ids)           # we asked for all six
    assert first == (1, None)
    assert second == (2, set(ids[4:]))


# Who is fixed when a send starts: (reader, membership status, global status) -> in the send?
FIXED = [("r0", "active", None, True), ("r1", "active", None, True), ("r2", "unsubscribed", None, False),
         ("r3", "active", "bounced", False), ("r4", "active", None, True)]


@pytest.mark.parametrize("triggers", ["on", "off"])
def test_fixing_the_readers_on_postgresql_locks_them_as_the_foreign_key_checks_would(pg_url, triggers, monkeypatch):
    """ledger.create_send skips the foreign-key trigger call per reader where the role may
    (docs/postgresql.md): the same readers are fixed either way, every one of them is locked against
    deletion until the send's rows commit, and the triggers are back on for the rest of the transaction."""
    import psycopg
    from sqlalchemy import update as sql_update

    from mailer.send import segments
    from subscribers import pg_copy
    from subscribers.models import memberships, subscribers

    if triggers == "on":
        monkeypatch.setattr(pg_copy, "may_skip_fk_checks", lambda conn: False)
    from mailer.migrate import connect

    list_id = seed(pg_url, len(FIXED))
    engine = connect(pg_url)
    with engine.begin() as conn:
        for name, status, suppressed, _ in FIXED:
            sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == f"{name}@example.org")).scalar()
            conn.execute(sql_update(memberships).where(memberships.c.subscriber_id == sid).values(status=status))
            conn.execute(sql_update(subscribers).where(subscribers.c.id == sid).values(global_status=suppressed))
    plain = pg_url.replace("postgresql+psycopg", "postgresql")
    with engine.begin() as conn:
        send_id = ledger.create_send(conn, issue="x", list_id=list_id, list_name="crank", subject="S",
                                     backend="outbox", recipients=segments.readers(conn, "x", list_id, ""))
        assert conn.exec_driver_sql("SHOW session_replication_role").scalar() == "origin"
        fixed = conn.execute(select(subscribers.c.email).join(ledger.deliveries, ledger.deliveries.c.subscriber_id
                                                              == subscribers.c.id)
                             .where(ledger.deliveries.c.send_id == send_id).order_by(subscribers.c.email)).scalars()
        assert list(fixed) == [f"{name}@example.org" for name, *_, wanted in FIXED if wanted]
        with psycopg.connect(plain, autocommit=True) as other:   # a forget while the send starts waits
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("DELETE FROM subscribers WHERE email = 'r1@example.org'")
            other.execute("DELETE FROM subscribers WHERE email = 'r2@example.org'")   # not a reader: not locked
    with engine.connect() as conn:
        assert conn.execute(select(ledger.sends.c.total).where(ledger.sends.c.id == send_id)).scalar() == 3
    engine.dispose()


def test_a_bad_setting_fails_before_the_ledger_is_touched(store_settings, composed, monkeypatch):
    seed(store_settings.database.url, 3)
    monkeypatch.delenv("MAILER_SECRET_KEY")
    from mailer.errors import ConfigError

    with pytest.raises(ConfigError, match="MAILER_SECRET_KEY"):
        send(store_settings, composed)
    assert states(store_settings) == {}
