"""Readers are served in their language (docs/languages.md): the catalogs are complete and current,
the page's language is the list's, else the browser's among those shipped, else the newsletter's;
`<html lang>` is right on every page, dates follow the language, system mails and an issue's footer
speak the list's language with Content-Language; nothing in the templates assumes left-to-right."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from jinja2 import Environment

from mailer import i18n
from mailer.locale import DIRECTORY, LANGUAGES
from subscribers import store
from tests.web.conftest import LIST
from tests.web.outbox_mail import wait_for_mails

REPO = Path(__file__).resolve().parents[2]
ANN = "ann@example.com"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalog(language: str):
    with open(DIRECTORY / language / "LC_MESSAGES" / "messages.po", "rb") as po:
        return read_po(po, locale=language)


# --- the catalogs ----------------------------------------------------------------------------------

def test_the_template_is_current(tmp_path):
    """Every marked string of the code and templates is in messages.pot, and nothing else (.ci/catalogs)."""
    fresh = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-c", "from babel.messages.frontend import main; main()", "extract",
                    "-F", "mailer/locale/babel.cfg", "-k", "N_", "--no-location", "--sort-output", "--omit-header",
                    "-o", str(fresh), "."], cwd=REPO, check=True, capture_output=True)
    with open(fresh, "rb") as new, open(DIRECTORY / "messages.pot", "rb") as kept:
        assert {m.id for m in read_po(new)} == {m.id for m in read_po(kept)}, "run .ci/catalogs"


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_every_string_is_translated_with_its_placeholders(language):
    with open(DIRECTORY / "messages.pot", "rb") as pot:
        wanted = {m.id for m in read_po(pot) if m.id}
    found = catalog(language)
    by_id = {m.id: m for m in found if m.id}
    assert set(by_id) == wanted, "run .ci/catalogs and translate what it leaves empty"
    for msgid, message in by_id.items():
        assert not message.fuzzy, msgid
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"{language}: {msgid!r} is not translated"
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(ids[-1])), (language, msgid)
            assert text.count("<a ") == ids[0].count("<a "), (language, msgid)     # the links survive


@pytest.mark.parametrize("language", LANGUAGES[1:])
def test_the_compiled_catalog_is_the_source(language):
    with open(DIRECTORY / language / "LC_MESSAGES" / "messages.mo", "rb") as mo:
        compiled = {_plain(m.id): _plain(m.string) for m in read_mo(mo) if m.id}
    assert compiled == {_plain(m.id): _plain(m.string) for m in catalog(language) if m.id}, "run .ci/catalogs"


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_french_typography():
    for message in catalog("fr"):
        if message.id and isinstance(message.string, str):
            assert not re.search(r"\S[:;?!](\s|$)", message.string.replace("mailto:", "")), message.string
            assert "'" not in message.string, message.string          # the apostrophe is ’


# --- choosing the language ----------------------------------------------------------------------

@pytest.mark.parametrize("header, default, chosen", [
    ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "en", "fr"),     # Chromium in French
    ("de-CH", "en", "de"),                                     # a region matches its language
    ("ja, es;q=0.5", "en", "es"),                              # the first one we ship
    ("en;q=0.4, de;q=0.8", "fr", "de"),                        # by weight, not order
    ("fr;q=0, de;q=0.1", "en", "de"),                          # q=0: "not this one"
    ("ja, zh", "es", "es"),                                    # none shipped: the newsletter's
    ("*", "de", "de"),
    ("", "en", "en"), (None, "fr", "fr"),
    ("fr;q=2", "en", "en"), ("fr;q=abc", "en", "en"), ("<script>", "en", "en"),
])
def test_negotiate(header, default, chosen):
    assert i18n.negotiate(header, default) == chosen


@pytest.mark.parametrize("language, day", [
    ("en", "November 1, 2024"), ("fr", "1 novembre 2024"), ("de", "1. November 2024"),
    ("es", "1 de noviembre de 2024"),
])
def test_dates_are_written_as_the_language_writes_them(language, day):
    assert i18n.format_date(dt.date(2024, 11, 1), language) == day


def test_nothing_assumes_left_to_right():
    """Logical CSS properties only; `dir` comes from the language (a right-to-left one mirrors)."""
    physical = re.compile(r"\b(?:margin|padding|border)-(?:left|right)\b|(?<![-\w])(?:left|right)\s*:|"
                          r"text-align:\s*(?:left|right)|float:\s*(?:left|right)")
    for path in [*(REPO / "templates" / "web").glob("*"), *(REPO / "mailer" / "web" / "static").glob("*")]:
        assert not physical.search(path.read_text(encoding="utf-8")), path
    env = i18n.install(Environment(extensions=["jinja2.ext.i18n"]), "he")
    assert (env.globals["dir"], env.globals["start"]) == ("rtl", "right")
    assert env.from_string('<html lang="{{ lang }}" dir="{{ dir }}">').render() == '<html lang="he" dir="rtl">'


# --- pages ----------------------------------------------------------------------------------------

FRENCH = {"accept-language": "fr-FR,fr;q=0.9,en;q=0.5"}


def test_pages_follow_the_browser_and_say_so(live):
    r = live.http.get("/subscribe", headers={"accept-language": "de-DE,de;q=0.9"})
    assert '<html lang="de" dir="ltr">' in r.text and "Abonnieren" in r.text
    assert r.headers["content-language"] == "de"
    r = live.http.get("/archive", headers=FRENCH)
    assert '<html lang="fr" dir="ltr">' in r.text and "Numéros précédents" in r.text
    assert r.headers["vary"] == "Accept-Language"                 # a shared cache keeps one copy per language
    r = live.http.get("/archive", headers={"accept-language": "ja"})
    assert '<html lang="en" dir="ltr">' in r.text and "Past issues" in r.text


def test_a_lists_own_language_wins_over_the_browser(live):
    with live.web.engine.begin() as conn:
        store.edit_list(conn, LIST, language="es")
    live.web._lists.clear()
    r = live.http.get("/subscribe", headers=FRENCH)          # the only list, so the page is about it
    assert '<html lang="es" dir="ltr">' in r.text and "Suscríbase a CRANK Call" in r.text
    assert r.headers["content-language"] == "es" and "vary" not in r.headers


def test_the_newsletters_language_is_the_last_resort(web_settings):
    import httpx

    from mailer.web import create_app
    from tests.web.live import serve_in_thread

    settings = dataclasses.replace(web_settings, newsletter=dataclasses.replace(web_settings.newsletter,
                                                                                 language="de"))
    with serve_in_thread(create_app(settings)) as url:
        r = httpx.get(f"{url}/no/such/page", headers={"accept-language": "ja"})
    assert r.status_code == 404 and '<html lang="de"' in r.text and "Seite nicht gefunden" in r.text


def test_every_reader_page_has_the_right_lang(live, tmp_path):
    """Subscribe, check inbox, confirm, confirmed, unsubscribe (both), preferences and its fresh
    link, leaving all, the archive, the errors: all in French for a French browser."""
    http = live.http
    seen = {"subscribe": http.get("/subscribe", headers=FRENCH),
            "check inbox": http.post("/subscribe", data={"list": LIST, "email": ANN}, headers=FRENCH)}
    [mail] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    assert mail.message["Content-Language"] == "fr"              # the page's language: the list has none
    confirm = mail.confirm_url.removeprefix(live.url)
    unsubscribe = mail.unsubscribe_url.removeprefix(live.url)
    seen["confirm"] = http.get(confirm, headers=FRENCH)
    seen["confirmed"] = http.post(confirm, headers=FRENCH)
    seen["unsubscribe"] = http.get(unsubscribe, headers=FRENCH)
    seen["unsubscribed"] = http.post(unsubscribe, headers=FRENCH)
    preferences = unsubscribe.replace("/unsubscribe/", "/preferences/")
    seen["preferences"] = http.get(preferences, headers=FRENCH)
    seen["left all"] = http.post(preferences + "/leave", headers=FRENCH)
    seen["fresh link"] = http.get("/preferences", headers=FRENCH)
    seen["link sent"] = http.post("/preferences", data={"email": ANN}, headers=FRENCH)
    seen["archive"] = http.get("/archive", headers=FRENCH)
    seen["not found"] = http.get("/nowhere", headers=FRENCH)
    seen["bad link"] = http.get("/confirm/forged", headers=FRENCH)
    seen["too large"] = http.post("/subscribe", content=b"email=" + b"a" * 70_000, headers={
        **FRENCH, "content-type": "application/x-www-form-urlencoded"})
    for page, r in seen.items():
        if page == "too large":           # refused before any page is made: JSON, as for every API client
            assert r.status_code == 413
            continue
        assert '<html lang="fr" dir="ltr">' in r.text, page
        assert r.headers["content-language"] == "fr", page
    assert "Confirmez votre abonnement" in seen["confirm"].text
    assert "Votre abonnement est confirmé" in seen["confirmed"].text
    assert "Votre désabonnement est pris en compte" in seen["unsubscribed"].text
    assert "Page introuvable" in seen["not found"].text and "Ce lien ne fonctionne pas" in seen["bad link"].text


@pytest.mark.parametrize("language, day", [("fr", "1 novembre 2024"), ("de", "1. November 2024")])
def test_archive_dates_in_the_readers_language(live, language, day):
    from mailer.web.archive import ArchivedIssue

    issue = ArchivedIssue(slug="2024-11", date=dt.date(2024, 11, 1), subject="November", preheader="", html="")
    page = live.web.pages.envs[language].get_template("archive.html.j2").render(issues=[issue], title="")
    assert f'<time datetime="2024-11-01">{day}</time>' in page


# --- mails ----------------------------------------------------------------------------------------

def test_the_confirmation_mail_speaks_the_lists_language(live):
    with live.web.engine.begin() as conn:
        store.edit_list(conn, LIST, language="de")
    live.web._lists.clear()
    r = live.http.post("/subscribe", data={"list": LIST, "email": ANN}, headers=FRENCH)
    assert '<html lang="de"' in r.text
    [mail] = wait_for_mails(live.settings.delivery.outbox_dir, 1)
    assert mail.message["Content-Language"] == "de"
    assert mail.message["Subject"] == "Bestätigen Sie Ihre Anmeldung für CRANK Call"
    assert '<html lang="de" dir="ltr"' in mail.html and "Anmeldung bestätigen" in mail.html
    assert "Der Link ist 7 Tage gültig." in mail.text


def test_an_issues_footer_speaks_the_lists_language(cli, config_file, tmp_path, monkeypatch, repo):
    monkeypatch.setenv("MAILER_SECRET_KEY", "a-test-secret-0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "2024-11.md").write_text((repo / "issues" / "2024-11.md").read_text(encoding="utf-8"),
                                                    encoding="utf-8")
    shutil.copytree(repo / "templates", tmp_path / "templates")
    assert cli("--config", config_file, "lists", "create", "leser", "--title", "Leser", "--language", "de").code == 0
    assert cli("--config", config_file, "subscribers", "add", ANN, "--list", "leser").code == 0
    sent = cli("--config", config_file, "send", "2024-11", "--list", "leser", "--yes")
    assert sent.code == 0, sent.err
    [path] = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Content-Language"] == "de"
    html = message.get_body(("html",)).get_content()
    assert '<html lang="de" dir="ltr"' in html and "Abmelden" in html and "Ihre Einstellungen" in html
    assert "Sie erhalten CRANK Call, weil ann@example.com dafür angemeldet ist." in \
        message.get_body(("plain",)).get_content()


# --- the list's language from the command line ------------------------------------------------

def test_lists_create_and_set_language(cli, config_file):
    c = ("--config", config_file)
    made = cli(*c, "lists", "create", "lecteurs", "--title", "Lecteurs", "--language", "fr")
    assert made.code == 0 and "in fr" in made.out
    assert cli(*c, "lists", "set", "lecteurs", "--language", "es").code == 0
    import json

    listed = {row["name"]: row["language"] for row in json.loads(cli(*c, "lists", "--json").out)}
    assert listed["lecteurs"] == "es"
    assert cli(*c, "lists", "edit", "lecteurs", "--language", "").code == 0       # none of its own again
    assert json.loads(cli(*c, "lists", "--json").out)[0]["language"] is None
    wrong = cli(*c, "lists", "create", "x", "--language", "pt")
    assert wrong.code != 0 and "'pt' is not one of the languages shipped: en, fr, de, es" in wrong.err


def test_the_store_refuses_a_language_that_is_not_a_tag(db_url):
    from subscribers import db
    from subscribers.errors import InvalidLanguage

    engine = db.connect(db_url)
    with engine.begin() as conn:
        assert store.create_list(conn, "a", language="pt-BR").language == "pt-BR"
        with pytest.raises(InvalidLanguage):
            store.create_list(conn, "b", language="français")
        assert store.edit_list(conn, "a", language="pt-BR")[1] == []
