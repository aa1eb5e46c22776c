"""The signup in Chromium with a French locale: the page speaks French, the proof-of-work widget
(vendored, served by us) solves at the default difficulty under our strict CSP, the form goes
through, the confirmation mail is French; the embedded form works from another site's page."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import re
import threading

import pytest
from playwright.sync_api import expect

from tests.web.conftest import LIST
from tests.web.outbox_mail import wait_for_mails

pytestmark = pytest.mark.browser


@pytest.fixture
def defended(live):
    """The live app as shipped: the challenge on at its default difficulty, the fill time off (a
    script types faster than anyone)."""
    from mailer.config import WebSettings
    from mailer.web.context import WebContext

    shipped = WebSettings()
    web = dataclasses.replace(live.settings.web, signup_challenge=True, challenge_cost=shipped.challenge_cost,
                              challenge_max_counter=shipped.challenge_max_counter, min_fill_seconds=0.0)
    live.settings = dataclasses.replace(live.settings, web=web)
    live.app.state.web = WebContext(live.settings)
    return live


@pytest.fixture
def french(chromium):
    context = chromium.new_context(locale="fr-FR")
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    yield page
    context.close()


def test_a_french_reader_signs_up_through_the_challenge(defended, french):
    french.goto(f"{defended.url}/subscribe")
    assert french.locator("html").get_attribute("lang") == "fr"
    expect(french.locator("h1")).to_have_text("Abonnez-vous à CRANK Call")
    french.fill("#email", "ann@example.com")          # the widget starts solving when a field gets focus
    expect(french.locator("input[name=altcha]")).to_have_value(re.compile(".+"), timeout=20_000)
    expect(french.locator("altcha-widget")).to_contain_text("Vérification réussie, merci")
    french.click("button[type=submit]")
    expect(french.locator("h1")).to_have_text("Consultez votre boîte de réception")
    assert french.problems == []                     # no CSP violation, no script error
    [mail] = wait_for_mails(defended.settings.delivery.outbox_dir, 1)
    assert mail.message["Content-Language"] == "fr"
    assert mail.message["Subject"] == "Confirmez votre abonnement à CRANK Call"


def test_the_email_me_a_link_form_in_french(defended, french):
    french.goto(f"{defended.url}/preferences")
    french.fill("#email", "ann@example.com")
    expect(french.locator("input[name=altcha]")).to_have_value(re.compile(".+"), timeout=20_000)
    french.click("button[type=submit]")
    expect(french.locator("h1")).to_have_text("Consultez votre boîte de réception")
    assert french.problems == []


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def another_site(folder):
    """A plain static site on its own loopback port: another origin than the app's."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_embedded_form_works_from_another_site(defended, french, tmp_path):
    from mailer.web.embed import embed_form
    from subscribers import store

    with defended.web.engine.begin() as conn:
        lst = store.get_list(conn, LIST)
    snippet = embed_form(defended.settings, lst)
    assert f'<script src="{defended.url}/static/altcha/altcha.js" defer></script>' in snippet
    (tmp_path / "index.html").write_text(f"<!doctype html><html lang=en><head><link rel=icon href='data:,'></head>"
                                         f"<body><h1>Our site</h1>{snippet}</body></html>",
                                         encoding="utf-8")
    with another_site(tmp_path) as site:
        french.goto(f"{site}/index.html")
        french.fill("input[name=email]", "ann@example.com")
        expect(french.locator("input[name=altcha]")).to_have_value(re.compile(".+"), timeout=20_000)
        french.click("button[type=submit]")
        expect(french.locator("h1")).to_have_text("Consultez votre boîte de réception")   # our page, in French
    assert french.problems == []
    wait_for_mails(defended.settings.delivery.outbox_dir, 1)
