"""Click and open tracking below the web: tokens, link rewriting, people or machines, the counts on
both databases, the config's refusals, and sends over SMTP and SendGrid with readers who opted out."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from mailer.compose import tracking as links
from mailer.compose.personalize import Recipient, personalize, prepare
from mailer.config import ClickTracking, load_settings
from mailer.errors import ConfigError
from mailer.events import scanners
from mailer.events.clicks import Hit, Machine, Recorder, Rules, classify
from mailer.send import dispatch, tracking
from mailer.send.tracking import Decided, Kind, send_links, send_tracking, tracking_hits
from subscribers.models import subscribers
from tests.deliver.helpers import seed
from tests.test_dispatch import SECRET, with_backend

SIGNER = links.Signer.from_secret(SECRET)
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")


@pytest.fixture
def store_settings(settings, db_url):
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))


@pytest.fixture
def composed(repo, settings):
    from mailer.compose.render import compose_issue

    return compose_issue(repo / "issues" / "2024-11.md", settings)


# --- tokens -------------------------------------------------------------------------------------

def token(send_id=7, link=2, reader=True, copy=42, made=1_700_000_000, signer=SIGNER) -> str:
    return f"{signer.link_part(send_id, link)}.{signer.copy_part(send_id, reader, copy, made)}"


def test_a_token_reads_back_what_it_names():
    assert SIGNER.read(token()) == links.Token(7, 2, True, 42, 1_700_000_000)
    assert SIGNER.read(token(link=None, reader=False, copy=2**47)) == links.Token(7, None, False, 2**47, 1_700_000_000)


@pytest.mark.parametrize("forged", [
    token()[:-1] + ("0" if token()[-1] != "0" else "1"),                    # the copy's MAC
    token().replace("-2-", "-3-", 1),                                        # another link, same MAC
    token().replace(".r2a-", ".r2b-"),                                       # another reader
    token(signer=links.Signer.from_secret("another key")),                   # another installation's
    f"{SIGNER.link_part(8, 2)}.{SIGNER.copy_part(7, True, 42, 1)}",          # halves of two sends
    f"{SIGNER.link_part(7, 2)}",                                             # half a token
    "7-2-00000000.r2a-1-000000000000",
    "https://example.org/",
    "",
])
def test_a_forged_token_reads_as_nothing(forged):
    assert SIGNER.read(forged) is None


# --- links --------------------------------------------------------------------------------------

HTML = ('<p><a href="https://example.org/a?x=1&amp;y=2" style="c">the <b>first</b> story</a> '
        '<a href="http://example.org/b">b</a> <a href="https://news.example.org/archive/2024-10">archive</a> '
        '<a href="mailto:ed@example.org">ed</a> <a href="%%unsubscribe_url:html%%">Unsubscribe</a> '
        '<a href="https://example.org/a?x=1&amp;y=2">again</a></p></body></html>')
TEXT = ("the first story <https://example.org/a?x=1&y=2> and https://example.org/c.\n"
        "archive <https://news.example.org/archive/2024-10>\n")


def test_the_issue_links_are_found_once_each_with_their_words_and_our_own_pages_left_out():
    assert links.find_links(HTML, TEXT, "https://news.example.org") == [
        links.Link("https://example.org/a?x=1&y=2", "the first story / again"),
        links.Link("http://example.org/b", "b"),
        links.Link("https://example.org/c", "")]


def test_rewriting_points_every_link_of_both_parts_at_c_and_adds_the_image():
    plan = links.Plan(5, SIGNER, True, {"https://example.org/a?x=1&y=2": 0, "https://example.org/c": 1}, opens=True)
    body, text = links.rewrite(HTML, TEXT, "https://news.example.org", plan.parts(), pixel=plan.pixel())
    a = f"https://news.example.org/c/{SIGNER.link_part(5, 0)}."
    assert body.count(f'href="{a}%%track:html%%"') == 2
    assert 'href="http://example.org/b"' in body                # not in the plan: left as it is
    assert 'href="https://news.example.org/archive/2024-10"' in body and 'href="mailto:ed@example.org"' in body
    assert body.endswith(f'/o/{SIGNER.link_part(5, None)}.%%track:html%%" width="1" height="1" alt="" '
                         'style="display:block;width:1px;height:1px;border:0;overflow:hidden"></body></html>')
    assert f"<{a}%%track%%>" in text and f"https://news.example.org/c/{SIGNER.link_part(5, 1)}.%%track%%." in text
    assert "<https://news.example.org/archive/2024-10>" in text


# --- people or machines -------------------------------------------------------------------------

MADE = 1_700_000_000


def hit(at, link=0, *, kind=Kind.CLICK, head=False, agent=CHROME, ip="192.0.2.1", copy="r1") -> Hit:
    return Hit(kind, 1, link, copy, 1, MADE, MADE + at, head, agent, ip)


@pytest.mark.parametrize(("case", "one", "others", "expected"), [
    ("a person", hit(600), [], None),
    ("a HEAD", hit(600, head=True), [], Machine.HEAD),
    ("a gateway's agent", hit(600, agent="Mozilla/5.0 (compatible; Mimecast URL scanner)"), [], Machine.AGENT),
    ("no agent", hit(600, agent=None), [], Machine.AGENT),
    ("a library", hit(600, agent="python-requests/2.31"), [], Machine.AGENT),
    ("a headless browser", hit(600, agent=CHROME.replace("Chrome/", "HeadlessChrome/")), [], Machine.AGENT),
    ("seconds after it went", hit(3), [], Machine.EARLY),
    ("another link 1.5 s later", hit(600), [hit(601.5, 1)], Machine.SWEEP),
    ("another link 2 s before", hit(600), [hit(598, 1)], Machine.SWEEP),
    ("the same link again", hit(600), [hit(600.5, 0)], None),
    ("a link checker's HEAD beside it", hit(600), [hit(600.5, 1, head=True)], None),
    ("a known scanner beside it", hit(600), [hit(600.5, 1, agent="Proofpoint")], None),
    ("another link 3 s later", hit(600), [hit(603, 1)], None),
    ("a person a minute after a sweep", hit(660, 2), [hit(600, 0), hit(600.4, 1), hit(600.8, 2)], None),
    ("an open", hit(600, None, kind=Kind.OPEN), [], None),
    ("Apple's proxy", hit(600, None, kind=Kind.OPEN, agent="Mozilla/5.0"), [], Machine.PROXY),
    ("Apple's network", hit(600, None, kind=Kind.OPEN, ip="17.58.1.2"), [], Machine.PROXY),
    ("Google's proxy", hit(600, None, kind=Kind.OPEN, agent="Mozilla/5.0 (via ggpht.com GoogleImageProxy)"),
     [], Machine.PROXY),
    ("an open with a click beside it", hit(600, None, kind=Kind.OPEN), [hit(600.5, 1)], None),
])
def test_people_and_machines(case, one, others, expected):
    assert classify(one, others, Rules(2.0, 10.0)) is expected, case


def test_the_scanner_list_knows_no_ordinary_browser():
    for agent in (CHROME, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
                  "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"):
        assert not scanners.scanner(agent) and scanners.image_proxy(agent, "192.0.2.1") is None
    assert scanners.image_proxy(None, "not an address") is None


def test_every_name_on_the_scanner_list_is_found_in_any_case_anywhere_in_the_agent():
    for name in scanners.SCANNER_NAMES:
        for written in (name, name.upper(), name.title()):
            assert scanners.scanner(f"Mozilla/5.0 (compatible; {written} 1.0)"), written


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_the_recorder_waits_out_the_sweep_window_so_the_sweeps_first_link_is_a_machine_too():
    written: list[Decided] = []
    clock = Clock(MADE + 600)
    recorder = Recorder(Rules(2.0, 10.0), written.extend, clock=clock, every=60)
    recorder.add(hit(600, 0))
    clock.at += 1
    assert recorder.flush() == 0                      # still inside its window: not decided
    recorder.add(hit(601, 1))                         # the second link: it was a sweep
    clock.at += 1.5
    assert recorder.flush() == 1                      # the first, now beyond its window
    clock.at += 60
    recorder.add(hit(663.5, 2))                       # the reader, a minute later
    recorder.stop()
    assert [(d.link, d.machine) for d in written] == [(0, "sweep"), (1, "sweep"), (2, None)]
    assert written[0].at == datetime.fromtimestamp(MADE + 600, UTC)


def test_the_recorder_forgets_old_copies_and_logs_a_batch_it_cannot_write(caplog):
    clock = Clock(MADE + 600)

    def broken(batch):
        raise RuntimeError("database gone")

    recorder = Recorder(Rules(2.0, 10.0), broken, clock=clock, every=0.01)
    recorder.add(hit(600, 0, copy="r1"))
    recorder.add(hit(600, 0, copy="r2"))
    recorder.add(hit(600.1, 1, copy="r2"))
    clock.at += 3600
    recorder.add(hit(4200, 1, copy="r2"))
    deadline = datetime.now(UTC).timestamp() + 10
    while len(recorder.pending) > 1 and datetime.now(UTC).timestamp() < deadline:   # the thread takes the 3 due
        recorder.wake.set()
    assert recorder.pending[0].at == MADE + 4200
    recorder.stop()
    assert "could not record a batch of clicks" in caplog.text
    assert set(recorder.recent) == {(1, "r2")} and len(recorder.recent[1, "r2"]) == 1


# --- the counts, on SQLite and PostgreSQL -------------------------------------------------------

def test_counts_hits_forget_and_purge(store_settings):
    from mailer import engines
    from subscribers import store

    list_id = seed(store_settings.database.url, 3)
    engine = engines.get(store_settings.database.url)
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    with engine.begin() as conn:
        from mailer.send import ledger

        send_id = ledger.create_send(conn, issue="x", list_id=list_id, list_name="crank", subject="S", backend="outbox",
                                     recipients=select(subscribers.c.id.label("subscriber_id")))
        stored = tracking.store_links(conn, send_id, [links.Link("https://a", "A"), links.Link("https://b", "B")])
        assert stored == {"https://a": 0, "https://b": 1}
        # a resumed send whose issue gained a link keeps the first indexes
        assert tracking.store_links(conn, send_id, [links.Link("https://c", "C"), links.Link("https://a", "A")]) == {
            "https://a": 0, "https://b": 1, "https://c": 2}
        ids = list(conn.execute(select(subscribers.c.id).order_by(subscribers.c.id)).scalars())
        conn.execute(update(subscribers).where(subscribers.c.id == ids[2]).values(no_tracking=True))

    def click(link, who, machine=None, kind=Kind.CLICK, send=send_id):
        return Decided(kind, send, link, f"r{who:x}", who, at, machine)

    with engine.begin() as conn:
        assert tracking.record(conn, [
            click(0, ids[0]), click(0, ids[0]), click(1, ids[0]),             # Ann: two links, one twice
            click(0, ids[1]), click(0, ids[1], "sweep"), click(1, ids[1], "sweep"),
            click(0, ids[2]),                                                   # Carla turned tracking off
            click(None, ids[0], kind=Kind.OPEN), click(None, ids[1], "proxy", kind=Kind.OPEN),
            click(0, ids[0], send=send_id + 99),                                # a send that is gone
            Decided(Kind.CLICK, send_id, 1, "a1f", None, at, None),             # aggregate: nobody named
        ]) == 9
    with engine.begin() as conn:
        tracking.record(conn, [click(0, ids[0])])                               # later: still one person
    with engine.connect() as conn:
        assert conn.execute(select(send_tracking.c.clicks, send_tracking.c.machine_clicks, send_tracking.c.opens,
                                   send_tracking.c.machine_opens)).one() == (3, 2, 1, 1)
        assert dict(conn.execute(select(send_links.c.idx, send_links.c.people)).all()) == {0: 2, 1: 2, 2: 0}
        assert len(tracking.hits_of(conn, [send_id])) == 5
    with engine.begin() as conn:
        email_of_ann = conn.execute(select(subscribers.c.email).where(subscribers.c.id == ids[0])).scalar_one()
        store.forget(conn, email_of_ann, "secret")
    with engine.begin() as conn:
        assert {h.subscriber_id for h in tracking.hits_of(conn, [send_id])} == {ids[1], None}
        assert tracking.purge(conn, 90, at=datetime(2027, 3, 1, tzinfo=UTC)) == 0
        assert tracking.purge(conn, 90, at=datetime(2027, 3, 2, tzinfo=UTC)) == 2
        assert conn.execute(select(tracking_hits)).all() == []
        assert conn.execute(select(send_tracking.c.clicks)).scalar_one() == 3      # the counts stay


# --- settings -----------------------------------------------------------------------------------

def test_tracking_is_off_unless_asked_and_reader_mode_needs_a_privacy_notice(repo, tmp_path):
    settings = load_settings(repo / "config.toml")
    assert (settings.tracking.clicks, settings.tracking.opens, settings.tracking.keep_days) == (ClickTracking.OFF,
                                                                                            False, 90)
    text = (repo / "config.toml").read_text(encoding="utf-8")
    cases = [('clicks = "off"', 'clicks = "reader"', '[tracking] clicks = "reader" records who clicked'),
             ('clicks = "off"', 'clicks = "everything"', "[tracking] clicks must be 'off' or 'aggregate' or 'reader'"),
             ("keep_days = 90", "keep_days = 0", "[tracking] keep_days must be between 1 and 3,650"),
             ('privacy_url = ""', 'privacy_url = "example.org/privacy"', "[newsletter] privacy_url must start with")]
    for old, new, message in cases:
        path = tmp_path / "config.toml"
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(path)
    path.write_text(text.replace('clicks = "off"', 'clicks = "reader"').replace(
        'privacy_url = ""', 'privacy_url = "https://example.org/privacy"'), encoding="utf-8")
    assert load_settings(path).tracking.clicks is ClickTracking.READER


def test_a_send_refuses_reader_mode_without_a_privacy_notice_before_touching_the_ledger(settings, composed):
    seed(settings.database.url, 1)
    settings = dataclasses.replace(settings, tracking=dataclasses.replace(settings.tracking,
                                                                          clicks=ClickTracking.READER))
    with pytest.raises(ConfigError, match="privacy_url"):
        dispatch.run_send(settings, dispatch.plan_send(settings, composed, "crank"))
    with dispatch.open_store(settings).connect() as conn:
        from mailer.send.ledger import sends

        assert conn.execute(select(sends)).all() == []


# --- sends --------------------------------------------------------------------------------------

def tracked(settings, mode=ClickTracking.AGGREGATE, opens=True):
    return dataclasses.replace(settings, tracking=dataclasses.replace(settings.tracking, clicks=mode, opens=opens))


def tracked_issue(repo, settings):
    from mailer.compose.render import compose_issue

    return compose_issue(repo / "tests" / "fixtures" / "issues" / "tracked.md", settings)


def test_smtp_copies_carry_each_readers_token_and_the_opted_out_reader_direct_links(store_settings, repo, smtp_sink):
    seed(store_settings.database.url, 3)
    engine = dispatch.open_store(store_settings)
    with engine.begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.email == "r1@example.org").values(no_tracking=True))
    settings = tracked(with_backend(store_settings, "smtp", sink_port=smtp_sink.port))
    summary = dispatch.run_send(settings, dispatch.plan_send(settings, tracked_issue(repo, settings), "crank"))
    assert summary.sent == 3
    by_reader = {}
    for m in smtp_sink.messages:
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        by_reader[m.rcpt_tos[0]] = msg.get_body(("html",)).get_content()
    tokens = {who: set(re.findall(r"/c/([0-9a-z.\-]+)", page)) for who, page in by_reader.items()}
    assert tokens["r1@example.org"] == set() and "/o/" not in by_reader["r1@example.org"]
    assert 'href="https://example.org/data.csv"' in by_reader["r1@example.org"]
    read = {who: [SIGNER.read(t) for t in found] for who, found in tokens.items() if found}
    assert all(t is not None and t.send_id == summary.send_id and not t.reader for ts in read.values() for t in ts)
    assert {len({t.link for t in ts}) for ts in read.values()} == {3}
    assert len({t.copy for ts in read.values() for t in ts}) == 2              # one random copy number each


def test_sendgrid_gets_one_request_per_edition_and_its_own_tracking_off(settings, repo, sendgrid_server):
    seed(settings.database.url, 4)
    with dispatch.open_store(settings).begin() as conn:
        conn.execute(update(subscribers).where(subscribers.c.email == "r2@example.org").values(no_tracking=True))
    settings = tracked(with_backend(settings, "sendgrid", server=sendgrid_server), ClickTracking.AGGREGATE)
    summary = dispatch.run_send(settings, dispatch.plan_send(settings, tracked_issue(repo, settings), "crank"))
    assert summary.sent == 4 and len(sendgrid_server.accepted) == 2       # the tracked readers, then the other
    tracked_body, direct_body = sendgrid_server.accepted
    for body in (tracked_body, direct_body):
        assert body["tracking_settings"] == {"subscription_tracking": {"enable": False},
                                             "click_tracking": {"enable": False, "enable_text": False},
                                             "open_tracking": {"enable": False}}
    assert [p["to"][0]["email"] for p in direct_body["personalizations"]] == ["r2@example.org"]
    html = tracked_body["content"][1]["value"]
    assert "/c/" in html and "%%track:html%%" in html and "/c/" not in direct_body["content"][1]["value"]
    subs = [p["substitutions"]["%%track:html%%"] for p in tracked_body["personalizations"]]
    assert len(set(subs)) == 3


def test_sendgrid_with_our_tracking_off_leaves_its_own_settings_alone(settings, repo, sendgrid_server):
    seed(settings.database.url, 1)
    settings = with_backend(settings, "sendgrid", server=sendgrid_server)
    dispatch.run_send(settings, dispatch.plan_send(settings, tracked_issue(repo, settings), "crank"))
    [body] = sendgrid_server.accepted
    assert body["tracking_settings"] == {"subscription_tracking": {"enable": False}}
    assert "/c/" not in body["content"][1]["value"]


@pytest.mark.parametrize(("fault", "expected"), [("drop", "in_doubt"), (503, "retry_later")])
def test_a_second_request_of_a_batch_that_fails_leaves_the_first_accepted(edition, sample_issue, settings,
                                                                           sendgrid_server, fault, expected):
    from mailer.send.deliver.sendgrid import SendGridBackend

    plan = links.Plan(1, SIGNER, False, {}, opens=True)
    issue = prepare(sample_issue, settings.newsletter, nonce="n", track=plan)
    batch = [personalize(issue, Recipient(f"1.{i}", f"r{i}@example.org", "", "t", i, tracked=i != 1)) for i in range(3)]
    backend = SendGridBackend(dataclasses.replace(settings.delivery.sendgrid, host=sendgrid_server.url, max_retries=0,
                                                  timeout=2.0), api_key="SG.test", sleep=lambda s: None)
    sendgrid_server.ok()
    if fault == "drop":
        sendgrid_server.drop(accept=False)
    else:
        sendgrid_server.fail(fault)
    with backend:
        results = backend.send_batch(batch)
    assert [r.status.value for r in results] == ["accepted", expected, "accepted"]
