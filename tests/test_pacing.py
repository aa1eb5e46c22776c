"""[delivery.pacing]: readers grouped by mailbox provider (their MX, asked of the local DNS server
and cached), the send interleaving providers, each provider's rate, and a "rate limited" answer
slowing that provider only. On SQLite and PostgreSQL, through the real send run."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import itertools

import pytest
from sqlalchemy import select

from mailer.send import dispatch, ledger
from mailer.send.deliver.base import Result, ResultStatus
from mailer.send.pacing import Pacer, Provider, known_provider, mail_providers, provider_of_mx
from tests.servers.dns_server import SILENT, dns_server
from tests.servers.smtp_sink import SmtpSink

SECRET = "test-secret-key-0123456789abcdef"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose

# readers in one domain's burst each, as an import sorted by address leaves them
READERS = ([f"g{i}@gmail.com" for i in range(6)] + [f"h{i}@hosted.example" for i in range(3)]
           + [f"y{i}@yahoo.com" for i in range(3)] + [f"o{i}@other.example" for i in range(3)]
           + [f"m{i}@m365.example" for i in range(3)])
ZONE = {"hosted.example": [("MX", "1 aspmx.l.google.com.")],
        "m365.example": [("MX", "0 m365-example.mail.protection.outlook.com.")],
        "other.example": [("MX", "10 mx.other.example.")]}


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture(scope="module")
def composed():
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from tests.conftest import REPO

    return compose_issue(REPO / "issues" / "2024-11.md", load_settings(REPO / "config.toml"))


def seed(url: str, addresses: list[str]) -> None:
    from subscribers.db import connect
    from subscribers.store import add_subscriber, create_list

    engine = connect(url)
    try:
        with engine.begin() as conn:
            found = create_list(conn, "crank")
            for address in addresses:
                add_subscriber(conn, address, found.id)
    finally:
        engine.dispose()


def paced(settings, db_url, nameserver: str, **pacing):
    d = settings.delivery
    return dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, url=db_url),
        dns=dataclasses.replace(settings.dns, nameservers=(nameserver,), timeout=1.0),
        delivery=dataclasses.replace(d, retry_wait_seconds=0, pacing=dataclasses.replace(d.pacing, **pacing)))


def outbox_order(settings) -> list[str]:
    """The addressees in the order the ledger handed them out (the delivery ids)."""
    engine = dispatch.open_store(settings)
    from subscribers.models import subscribers

    with engine.connect() as conn:
        return list(conn.execute(select(subscribers.c.email).join_from(
            ledger.deliveries, subscribers, subscribers.c.id == ledger.deliveries.c.subscriber_id)
            .order_by(ledger.deliveries.c.id)).scalars())


def provider_in_test(address: str) -> str:
    domain = address.rpartition("@")[2]
    return {"hosted.example": "gmail.com", "m365.example": "microsoft"}.get(domain, domain)


@pytest.mark.parametrize(("domain", "mx", "provider"), [
    ("gmail.com", None, Provider.GMAIL),
    ("googlemail.com", None, Provider.GMAIL),
    ("hotmail.fr", None, Provider.MICROSOFT),
    ("aol.com", None, Provider.YAHOO),
    ("news.example", ["aspmx.l.google.com."], Provider.GMAIL),
    ("corp.example", ["corp-example.mail.protection.outlook.com."], Provider.MICROSOFT),
    ("att.example", ["mx-biz.mail.am0.yahoodns.net."], Provider.YAHOO),
    ("evilgoogle.example", ["mx.notgoogle.com."], Provider.OTHER),
    ("own.example", ["mx.own.example."], Provider.OTHER),
])
def test_who_is_who(domain, mx, provider):
    assert (known_provider(domain) if mx is None else provider_of_mx(mx)) is provider


def test_a_send_interleaves_providers_and_caches_the_lookups(settings, db_url, composed):
    seed(db_url, READERS)
    with dns_server(ZONE) as (address, resolver):
        s = paced(settings, db_url, address, gmail=1000)
        summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))
        asked = sorted(name for name, kind in resolver.asked)
    assert summary.sent == len(READERS)
    assert asked == ["hosted.example", "m365.example", "other.example"]   # gmail.com, yahoo.com: known
    with dispatch.open_store(s).connect() as conn:
        cached = dict(conn.execute(select(mail_providers.c.domain, mail_providers.c.provider)).all())
    assert cached["hosted.example"] == "gmail" and cached["m365.example"] == "microsoft"
    order = outbox_order(s)
    runs = [len(list(run)) for _, run in itertools.groupby(order, key=provider_in_test)]
    assert max(runs) <= 3 and len(set(map(provider_in_test, order[:5]))) == 4   # not 9 of Google's in a row
    assert order[:4] != READERS[:4] and sorted(order) == sorted(READERS)
    sent = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"].addresses[0].addr_spec
            for p in sorted(s.delivery.outbox_dir.glob("*.eml"))]
    assert sorted(sent) == sorted(READERS)


def test_a_second_send_asks_dns_only_about_new_domains(settings, db_url, composed):
    seed(db_url, READERS)
    with dns_server(ZONE) as (address, resolver):
        s = paced(settings, db_url, address, gmail=1000)
        from mailer.send.pacing import classify

        engine = dispatch.open_store(s)
        from mailer.resolver import make_resolver
        from subscribers.queries import recipients_select
        from subscribers.store import get_list

        with engine.connect() as conn:
            list_id = get_list(conn, "crank").id
        classify(engine, recipients_select(list_id), make_resolver((address,), 1.0), 500)
        first = len(resolver.asked)
        classify(engine, recipients_select(list_id), make_resolver((address,), 1.0), 500)
        assert first == 3 and len(resolver.asked) == 3


def test_a_silent_dns_server_leaves_the_domain_other_and_unasked_next_time(settings, db_url, composed):
    seed(db_url, ["a@quiet.example", "b@gmail.com"])
    with dns_server({"quiet.example": SILENT}) as (address, _):
        s = paced(settings, db_url, address, gmail=1000)
        summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))
    assert summary.sent == 2
    with dispatch.open_store(s).connect() as conn:
        assert "quiet.example" not in set(conn.execute(select(mail_providers.c.domain)).scalars())


def test_rate_limited_answers_slow_that_provider_only(settings, db_url, composed):
    seed(db_url, READERS)
    limited = {a: "450 4.7.28 Our system has detected an unusual rate of unsolicited mail" for a in READERS
               if a.endswith("gmail.com")}
    slept: list[float] = []
    with dns_server(ZONE) as (address, _), SmtpSink(replies=limited) as sink:
        s = paced(settings, db_url, address, gmail=1000, hold_seconds=600)
        s = dataclasses.replace(s, delivery=dataclasses.replace(
            s.delivery, backend="smtp", smtp=dataclasses.replace(s.delivery.smtp, port=sink.port, starttls=False,
                                                                 batch_size=2, connections=1,
                                                                 return_path="bounces@example.org")))
        summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"), sleep=slept.append)
        tried = [m for m in sink.state.rcpt_tries if m.endswith("gmail.com")]
        got = sorted(r for m in sink.messages for r in m.rcpt_tos)
    google = ("gmail.com", "hosted.example")                  # hosted.example's MX is Google's
    assert got == sorted(a for a in READERS if not a.endswith(google))   # every other provider went
    assert summary.deferred == 9 and summary.sent == len(READERS) - 9
    assert tried == ["g0@gmail.com", "g1@gmail.com"]   # the first batch's refusal held Google: no more tries
    assert all(wait < 600 for wait in slept)


def test_the_pacer_keeps_each_provider_under_its_rate():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    pacer = Pacer({Provider.GMAIL: 10.0, Provider.OTHER: 0.0}, {}, 60.0, clock=lambda: now[0], sleep=sleep)

    class Out:
        def __init__(self, i, domain):
            self.ref, self.email = f"r{i}", f"x{i}@{domain}"

    def send(outs, encoded):
        return [Result(o.ref, ResultStatus.ACCEPTED) for o in outs]

    starts = []
    for batch in range(3):
        pacer.deliver(send, lambda outs: None, [Out(batch * 30 + i, "gmail.com") for i in range(20)], None)
        starts.append(now[0])
    assert starts == [0.0, 2.0, 4.0]          # 20 messages at 10 a second: 2 s apart
    pacer.deliver(send, lambda outs: None, [Out(100 + i, "other.example") for i in range(500)], None)
    assert now[0] == 4.0                      # no limit for the others: no wait
    assert pacer.sent[Provider.GMAIL] == 60 and pacer.sent[Provider.OTHER] == 500


def test_the_report_names_the_provider_pushing_back(settings, db_url, composed, cli, tmp_path):
    from mailer.reports import report as reports

    readers = READERS + [f"y{i}@ymail.com" for i in range(3)]
    seed(db_url, readers)
    limited = {a: "451 4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume" for a in readers
               if a.startswith("y")}
    with dns_server(ZONE) as (address, _), SmtpSink(replies=limited) as sink:
        s = paced(settings, db_url, address, yahoo=1000)
        s = dataclasses.replace(s, delivery=dataclasses.replace(
            s.delivery, backend="smtp", smtp=dataclasses.replace(s.delivery.smtp, port=sink.port, starttls=False,
                                                                 batch_size=1, connections=1,
                                                                 return_path="bounces@example.org")))
        dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))
    with dispatch.open_store(s).connect() as conn:
        found = reports.build(conn, "2024-11")
    rates = {p.provider: (p.readers, p.deferred) for p in found.providers}
    assert rates == {"gmail": (9, 0), "yahoo": (6, 6), "microsoft": (3, 0), "other": (3, 0)}
    assert found.warnings == ["yahoo is pushing back: 100.0% of its readers were deferred (6 of 6); lower "
                              "[delivery.pacing] yahoo or warm up (docs/deliverability.md)"]
    assert found.as_dict()["providers"][1] == {"provider": "yahoo", "readers": 6, "deferred": 6, "deferral_rate": 1.0}
    config = tmp_path / "report.toml"
    config.write_text(f'[newsletter]\nname = "C"\nfrom_email = "c@example.org"\nfrom_name = "C"\n'
                      f'reply_to = "c@example.org"\npostal_address = "1 Road"\nbase_url = "http://127.0.0.1:1"\n'
                      f'[database]\nurl = "{db_url}"\n')
    shown = cli("--config", config, "report", "2024-11")
    assert shown.code == 0, shown.err
    assert "Deferrals by mailbox provider" in shown.out and "yahoo is pushing back" in shown.err


def test_pushing_back_needs_a_rate_and_a_count():
    from mailer.reports.providers import ProviderFigures, pushing_back

    figures = [ProviderFigures("gmail", 1000, 40), ProviderFigures("yahoo", 200, 30), ProviderFigures("other", 10, 4)]
    assert pushing_back(figures) == ["yahoo is pushing back: 15.0% of its readers were deferred (30 of 200); lower "
                                     "[delivery.pacing] yahoo or warm up (docs/deliverability.md)"]


def test_over_sendgrid_the_limits_shape_the_requests(settings, db_url, composed, sendgrid_server, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    seed(db_url, [f"g{i}@gmail.com" for i in range(30)] + [f"o{i}@other.example" for i in range(30)])
    slept: list[float] = []
    with dns_server(ZONE) as (address, _):
        s = paced(settings, db_url, address, gmail=5)
        s = dataclasses.replace(s, delivery=dataclasses.replace(s.delivery, backend="sendgrid", sendgrid=(
            dataclasses.replace(s.delivery.sendgrid, host=sendgrid_server.url, batch_size=20))))
        summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"), sleep=slept.append)
    assert summary.sent == 60
    requests = [[p["to"][0]["email"].endswith("gmail.com") for p in body["personalizations"]]
                for body in sendgrid_server.accepted]
    assert [sum(r) for r in requests] == [10, 10, 10]          # interleaved: half of each request is Gmail's
    # 10 Gmail readers a request at 5 a second: each request waits for the one before's 2 seconds (the
    # clock does not move while this test's sleep is called, so the waits add up)
    assert len(slept) == 2 and slept[0] == pytest.approx(2.0, abs=0.5) and slept[1] == pytest.approx(4.0, abs=0.5)


def test_a_421_rate_limit_at_rcpt_defers_and_slows_that_provider_only(settings, db_url, composed):
    """The relay answers `421 4.7.0` (and closes the channel) for gmail.com's readers for a while: the
    send goes on, those readers are deferred and tried again once the hold is over, each is received
    once, the other providers' readers go on their first try, and the report names Google."""
    from collections import Counter

    from mailer.reports import report as reports
    from subscribers.models import subscribers

    seed(db_url, READERS)
    with dns_server(ZONE) as (address, _), SmtpSink(rate_limit={"gmail.com": 1.5}) as sink:
        s = paced(settings, db_url, address, gmail=1000, hold_seconds=1)
        s = dataclasses.replace(s, delivery=dataclasses.replace(
            s.delivery, backend="smtp", retry_first_seconds=1, retry_wait_seconds=120,
            smtp=dataclasses.replace(s.delivery.smtp, port=sink.port, starttls=False, batch_size=2, connections=1,
                                     return_path="bounces@example.org")))
        summary = dispatch.run_send(s, dispatch.plan_send(s, composed, "crank"))
        got = Counter(r for m in sink.messages for r in m.rcpt_tos)
        tries = dict(sink.state.rcpt_tries)
        limited = dict(sink.state.rate_limited)
    assert got == Counter(READERS)                              # every reader, exactly once
    assert summary.sent == len(READERS) and summary.deferred == 0 and summary.status == "done"
    assert limited["gmail.com"] >= 1 and set(limited) == {"gmail.com"}
    google = ("gmail.com", "hosted.example")
    assert all(tries[a] == 1 for a in READERS if not a.endswith(google))    # never held, never refused
    with dispatch.open_store(s).connect() as conn:
        attempts = dict(conn.execute(select(subscribers.c.email, ledger.deliveries.c.attempts).join_from(
            ledger.deliveries, subscribers, subscribers.c.id == ledger.deliveries.c.subscriber_id)).all())
        found = reports.build(conn, "2024-11")
    assert all(attempts[a] == 1 for a in READERS if not a.endswith(google))
    assert all(attempts[a] > 1 for a in READERS if a.endswith("gmail.com"))
    rates = {p.provider: p.deferred for p in found.providers}
    assert rates["gmail"] >= 6 and rates["yahoo"] == rates["microsoft"] == rates["other"] == 0
    assert [w.split(":")[0] for w in found.warnings] == ["gmail is pushing back"]

