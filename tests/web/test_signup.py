"""The public signup resists robots (docs/signup.md): the proof-of-work, the honeypot, the fill time,
spent solutions, throwaway and mail-less domains; a scripted POST without the page stores nobody and
mails nobody. The guard's rules are tables with the clock passed in; the rest is the real app over
HTTP, a real DNS server on loopback and Chromium."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import altcha
import pytest
from sqlalchemy import func, select

from mailer.web.addresses import AddressRules, MailDomains, Problem, address_problem
from mailer.web.challenge import Form, Guard, Verdict, spend, spent_challenges
from subscribers.models import subscribers
from tests.servers.dns_server import SILENT, dns_server
from tests.web.conftest import LIST, SECRET

ANN = "ann@example.com"
T0 = 1_800_000_000.0
VENDOR = Path(__file__).resolve().parents[2] / "mailer" / "web" / "vendor" / "altcha"


def solve(challenge: dict) -> str:
    """What the widget puts in the form: the challenge and its solution, base64 JSON."""
    made = altcha.Challenge.from_dict(challenge)
    return altcha.Payload(made, altcha.solve_challenge(made)).to_base64()


def easy(settings, **web):
    """The challenge on, at a difficulty Python solves at once."""
    values = {"signup_challenge": True, "challenge_cost": 1, "challenge_max_counter": 4, "min_fill_seconds": 2.0,
              **web}
    return dataclasses.replace(settings, web=dataclasses.replace(settings.web, **values))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guard(settings):
    clock, used = Clock(), set()

    def spend_once(signature: str, expires_at: datetime) -> bool:
        fresh = signature not in used
        used.add(signature)
        return fresh

    made = Guard(easy(settings), SECRET, spend_once, clock=clock)
    made.clock_ = clock
    return made


# --- the guard's verdicts ------------------------------------------------------------------------

def test_a_solution_passes_once_then_it_is_spent(guard):
    started = guard.started()
    payload = solve(guard.challenge())
    guard.clock_.now += 5
    assert guard.judge(Form(started=started, altcha=payload)) is Verdict.PASS
    assert guard.judge(Form(started=started, altcha=payload)) is Verdict.NO_SOLUTION    # replayed


@pytest.mark.parametrize("fields, verdict", [
    ({"website": "http://spam.example"}, Verdict.HONEYPOT),          # a robot filled the hidden field
    ({}, Verdict.NO_SOLUTION),                                         # a script that never saw the page
    ({"altcha": "not base64 at all"}, Verdict.NO_SOLUTION),
    ({"altcha": "eyJjaGFsbGVuZ2UiOiB7fX0="}, Verdict.NO_SOLUTION),     # {"challenge": {}}
    ({"altcha": "x" * 5000}, Verdict.NO_SOLUTION),
])
def test_posts_without_a_valid_solution(guard, fields, verdict):
    guard.clock_.now += 5
    assert guard.judge(Form(started=guard.started(), **fields)) is verdict


def test_a_forged_or_foreign_or_expired_solution_is_refused(guard, settings):
    other = Guard(easy(settings), "another-secret-key-0123456789abcdef", lambda *_: True, clock=guard.clock_)
    assert guard.judge(Form(altcha=solve(other.challenge()))) is Verdict.NO_SOLUTION   # not signed by us
    challenge = guard.challenge()
    tampered = json.loads(base64.b64decode(solve(challenge)))
    tampered["challenge"]["parameters"]["expiresAt"] += 86_400                          # a longer life: forged
    assert guard.judge(Form(altcha=base64.b64encode(json.dumps(tampered).encode()).decode())) is Verdict.NO_SOLUTION
    late = solve(challenge)
    guard.clock_.now += 30 * 60 + 1                                                     # challenge_minutes = 30
    assert guard.judge(Form(altcha=late)) is Verdict.NO_SOLUTION


@pytest.mark.parametrize("seconds, verdict", [(0.5, Verdict.TOO_FAST), (1.99, Verdict.TOO_FAST), (2.0, Verdict.PASS)])
def test_a_form_sent_too_soon_is_sent_again(guard, seconds, verdict):
    started, payload = guard.started(), solve(guard.challenge())
    guard.clock_.now += seconds
    assert guard.judge(Form(started=started, altcha=payload)) is verdict


def test_without_a_signed_start_the_challenge_time_counts(guard):
    """The embedded form is static HTML: its fill time runs from the challenge, fetched on focus."""
    payload = solve(guard.challenge())
    assert guard.judge(Form(altcha=payload, started="1800000000.forged")) is Verdict.TOO_FAST
    payload = solve(guard.challenge())
    guard.clock_.now += 3
    assert guard.judge(Form(altcha=payload)) is Verdict.PASS


def test_with_the_challenge_off_honeypot_and_fill_time_remain(settings):
    clock = Clock()
    off = Guard(easy(settings, signup_challenge=False), SECRET, lambda *_: True, clock=clock)
    started = off.started()
    assert off.judge(Form(started=started)) is Verdict.TOO_FAST
    assert off.judge(Form(website="x")) is Verdict.HONEYPOT
    clock.now += 2
    assert off.judge(Form(started=started)) is Verdict.PASS
    assert off.judge(Form()) is Verdict.PASS        # (the embed snippet: no start time, no script)


def test_spent_solutions_are_kept_in_the_database_until_they_expire(db_url):
    from mailer import migrate

    engine = migrate.connect(db_url)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        assert spend(conn, "a" * 64, later) is True
        assert spend(conn, "a" * 64, later) is False                     # the same solution again
        assert spend(conn, "b" * 64, later - timedelta(days=2), now=later - timedelta(days=3)) is True
        assert spend(conn, "c" * 64, later, now=later - timedelta(days=1)) is True   # b expired: swept
        left = set(conn.execute(select(spent_challenges.c.signature)).scalars())
    assert left == {"a" * 64, "c" * 64}


# --- addresses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, problem", [
    ("ann@example.com", None),
    ("ann@mailinator.com", Problem.DISPOSABLE),                  # on the disposable-email-domains list
    ("Ann@Mailinator.COM", Problem.DISPOSABLE),
    ("ann@eu.mailinator.com", Problem.DISPOSABLE),               # a subdomain of a listed domain
    ("ann@guerrillamail.com", Problem.DISPOSABLE),
    ("ann@spam.example", Problem.BLOCKED),                       # [web] blocked_domains
    ("ann@news.spam.example", Problem.BLOCKED),
    ("ann@bücher.example", Problem.BLOCKED),                     # configured in Unicode, typed in Unicode
    ("ann@xn--bcher-kva.example", Problem.BLOCKED),              # ... or in punycode
    ("ann@notspam.example", None),
    ("ann@", Problem.NOT_AN_ADDRESS),
    ("jöhn@example.com", Problem.NON_ASCII),
])
def test_address_checks(typed, problem):
    rules = AddressRules(blocked=frozenset({"spam.example", "xn--bcher-kva.example"}))
    assert address_problem(typed, rules) is problem


def test_blocked_domains_from_the_settings_are_stored_addresses_domains(settings):
    s = dataclasses.replace(settings, web=dataclasses.replace(settings.web, blocked_domains=("Bücher.Example",)))
    assert AddressRules.from_settings(s).blocked == {"xn--bcher-kva.example"}


ZONE = {
    "mx.example": [("MX", "10 mail.mx.example.")],
    "a-only.example": [("A", "192.0.2.1")],
    "v6-only.example": [("AAAA", "2001:db8::1")],
    "txt-only.example": [("TXT", '"v=spf1 -all"')],
    "null-mx.example": [("MX", "0 .")],                           # RFC 7505: this domain takes no mail
    "down.example": SILENT,
}


@pytest.mark.parametrize("domain, receives", [
    ("mx.example", True), ("a-only.example", True), ("v6-only.example", True),
    ("txt-only.example", False), ("null-mx.example", False), ("no-such.example", False),
    ("down.example", None),                                       # no answer: we cannot tell, nobody refused
])
def test_check_mx_against_a_local_dns_server(domain, receives):
    with dns_server(ZONE) as (address, _):
        assert MailDomains((address,), timeout=0.3).receives_mail(domain) is receives


def test_check_mx_asks_once_per_domain_for_a_while():
    clock = Clock()
    with dns_server(ZONE) as (address, server):
        domains = MailDomains((address,), timeout=0.3, clock=clock)
        assert domains.receives_mail("mx.example") and domains.receives_mail("mx.example")
        clock.now += 601
        assert domains.receives_mail("mx.example")
    assert server.asked.count(("mx.example", "MX")) == 2


# --- over HTTP ------------------------------------------------------------------------------------

@pytest.fixture
def guarded(live):
    """The live app with the signup's defences on: the proof-of-work (at an easy difficulty), no
    minimum fill time (its own tests above), [web] blocked_domains."""
    from mailer.web.context import WebContext

    live.app.state.web = WebContext(easy(live.settings, min_fill_seconds=0.0, blocked_domains=("spam.example",)))
    return live


def counts(live) -> tuple[int, int]:
    """(subscribers stored, mails written)."""
    with live.web.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(subscribers)).scalar()
    outbox = live.settings.delivery.outbox_dir
    return stored, len(list(outbox.glob("*.eml"))) if outbox.is_dir() else 0


def fresh_payload(live) -> str:
    r = live.http.get("/altcha/challenge")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["access-control-allow-origin"] == "*"        # the embedded form, on another site
    return solve(r.json())


def test_a_scripted_post_without_the_page_stores_nobody_and_mails_nobody(guarded):
    r = guarded.http.post("/subscribe", data={"list": LIST, "email": ANN, "name": "Ann"})
    assert r.status_code == 400
    assert "Please send this form from this page" in r.text and f'value="{ANN}"' in r.text   # the form, refilled
    ask = guarded.http.post("/preferences", data={"email": ANN})          # the "email me a link" form too
    assert ask.status_code == 400 and "Please send this form from this page" in ask.text
    assert counts(guarded) == (0, 0)


def test_a_solved_post_signs_up_once_and_its_replay_is_refused(guarded):
    from tests.web.outbox_mail import wait_for_mails

    payload = fresh_payload(guarded)
    r = guarded.http.post("/subscribe", data={"list": LIST, "email": ANN, "altcha": payload})
    assert r.status_code == 200 and "Check your inbox" in r.text
    wait_for_mails(guarded.settings.delivery.outbox_dir, 1)
    again = guarded.http.post("/subscribe", data={"list": LIST, "email": "bob@example.com", "altcha": payload})
    assert again.status_code == 400 and counts(guarded) == (1, 1)


def test_the_honeypot_answers_as_usual_and_stores_nothing(guarded):
    r = guarded.http.post("/subscribe", data={"list": LIST, "email": ANN, "website": "x",
                                              "altcha": fresh_payload(guarded)})
    assert r.status_code == 200 and "Check your inbox" in r.text and counts(guarded) == (0, 0)


def test_a_form_sent_too_soon_comes_back_with_what_was_typed(guarded):
    from mailer.web.context import WebContext

    guarded.app.state.web = WebContext(easy(guarded.settings, min_fill_seconds=600.0))
    page = guarded.http.get("/subscribe").text
    started = page.split('name="started" value="')[1].split('"')[0]
    r = guarded.http.post("/subscribe", data={"list": LIST, "email": ANN, "name": "Ann Lee", "started": started,
                                              "altcha": fresh_payload(guarded)})
    assert r.status_code == 400 and "That was quick!" in r.text and 'value="Ann Lee"' in r.text
    assert counts(guarded) == (0, 0)


@pytest.mark.parametrize("address, said", [
    ("ann@mailinator.com", "throwaway mail services cannot subscribe"),
    ("ann@spam.example", "Addresses at this domain cannot subscribe here"),
])
def test_a_disposable_or_blocked_address_is_refused_with_a_clear_message(guarded, address, said):
    r = guarded.http.post("/subscribe", data={"list": LIST, "email": address, "altcha": fresh_payload(guarded)})
    assert r.status_code == 400 and said in r.text and 'role="alert"' in r.text
    assert counts(guarded) == (0, 0)


def test_check_mx_refuses_a_domain_without_mail(guarded):
    from mailer.web.context import WebContext

    with dns_server(ZONE) as (address, _):
        s = easy(guarded.settings, min_fill_seconds=0.0, check_mx=True)
        s = dataclasses.replace(s, dns=dataclasses.replace(s.dns, nameservers=(address,)))
        guarded.app.state.web = WebContext(s)
        refused = guarded.http.post("/subscribe", data={"list": LIST, "email": "ann@txt-only.example",
                                                        "altcha": fresh_payload(guarded)})
        taken = guarded.http.post("/subscribe", data={"list": LIST, "email": "ann@mx.example",
                                                      "altcha": fresh_payload(guarded)})
    assert refused.status_code == 400 and "That domain cannot receive email" in refused.text
    assert taken.status_code == 200 and counts(guarded)[0] == 1


def test_the_signup_page_loads_our_own_scripts_only(guarded):
    r = guarded.http.get("/subscribe")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert '<altcha-widget class="challenge" challenge="/altcha/challenge"' in r.text
    assert '"humanInteractionSignature": false' in r.text     # no pointer tracking
    assert "script-src" not in guarded.http.get("/archive").headers["content-security-policy"]


@pytest.mark.parametrize("path, kind", [
    ("/static/altcha/altcha.js", "text/javascript"), ("/static/altcha/pbkdf2.js", "text/javascript"),
    ("/static/altcha/altcha.css", "text/css"), ("/static/signup.js", "text/javascript"),
])
def test_the_widget_is_served_by_us(guarded, path, kind):
    r = guarded.http.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert guarded.http.get("/static/altcha/LICENSE.txt").status_code == 404


def test_the_vendored_widget_is_the_pinned_release():
    """The files are altcha 3.2.2's from the npm registry, as mailer/web/vendor/altcha/README.md says."""
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert "version **3.2.2**" in readme and "MIT License" in (VENDOR / "LICENSE.txt").read_text(encoding="utf-8")
    for name in ("altcha.js", "altcha.css", "pbkdf2.js", "LICENSE.txt"):
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert f"| {name} |" in readme and digest in readme, name


@pytest.mark.parametrize("challenge, language, words", [(True, "de", "Ich bin kein Roboter"),
                                                       (False, None, "Subscribe")])
def test_the_embed_snippet_carries_the_widget_in_the_lists_language(settings, challenge, language, words):
    from mailer.web.embed import embed_form
    from subscribers.models import List

    s = easy(settings, signup_challenge=challenge)
    snippet = embed_form(s, List(id=1, name="crank", title="CRANK Call", description="", private=False,
                                 language=language))
    base = s.newsletter.base_url
    assert words in snippet and ("<script" in snippet) is challenge
    assert (f'challenge="{base}/altcha/challenge"' in snippet) is challenge
    assert f'<script src="{base}/static/signup.js" defer></script>' in snippet if challenge else "altcha" not in snippet
