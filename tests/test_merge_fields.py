"""Merge fields ("Dear Ann") from the issue file to each reader, on every backend.

An issue with `{{ first_name | default("reader") }}`, `{{ name }}` and `{{ email }}` in its subject
and body goes out through the outbox, SMTP (aiosmtpd on loopback) and SendGrid (the local
server, as substitutions); each reader's copy must read the same: escaped in the HTML part, as
written in the text part, the fallback for a reader without a name.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html

import pytest

from mailer.compose.source import merge_fields, parse_issue
from mailer.model import marker, with_default
from mailer.send import dispatch
from tests.deliver.helpers import seed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose

ISSUE = """+++
subject = 'Hello {{ first_name | default("reader") }}'
preheader = "News for {{ email }}"
date = 2024-12-01
+++

# CRANK Call | December 2024

Dear {{ first_name | default("reader") }}, this copy is for {{ email }} ({{ name }}).

## Links

- Talks went on. (Reuters)
"""

# (the reader's name, what they read after "Dear ", the subject they get)
READERS = [
    ("Ann Lee", "Ann", "Hello Ann"),
    ("Bob <b>& Co", "Bob", "Hello Bob"),
    ("", "reader", "Hello reader"),
    ("Zoë Çelik", "Zoë", "Hello Zoë"),               # non-ASCII: RFC 2047 in the Subject header
]


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", "merge-test-secret-0123456789abcdef")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")


@pytest.mark.parametrize("written, expected", [
    ("{{ name }}", marker("name", "html")),
    ("{{first_name}}", marker("first_name", "html")),
    ('{{ first_name | default("reader") }}', marker(with_default("first_name", "reader"), "html")),
    ("{{ first_name|default('dear reader') }}", marker(with_default("first_name", "dear reader"), "html")),
    ("{{ first_name | default(“friend”) }}", marker(with_default("first_name", "friend"), "html")),
    ("{{ email }}", marker("email", "html")),
    ("{{ nmae }}", "{{ nmae }}"),                            # left for the lint report
    ("{{ first_name | upper }}", "{{ first_name | upper }}"),
])
def test_what_the_editor_writes_becomes_a_marker(written, expected):
    assert merge_fields(written, "html") == expected


def test_the_subject_keeps_text_markers_and_the_html_title_html_ones():
    issue = parse_issue(ISSUE, "issues/2024-12.md")
    spec = with_default("first_name", "reader")
    assert issue.subject == f"Hello {marker(spec, 'text')}"
    assert issue.html_subject == f"Hello {marker(spec, 'html')}"


@pytest.fixture
def composed(tmp_path, settings):
    from mailer.compose.render import compose_issue

    path = tmp_path / "2024-12.md"
    path.write_text(ISSUE, encoding="utf-8")
    return compose_issue(path, settings)


def add_readers(url: str, readers) -> None:
    from subscribers.db import connect
    from subscribers.store import add_subscriber, get_list

    list_id = seed(url, 0)
    with connect(url).begin() as conn:
        assert get_list(conn, "crank").id == list_id
        for i, (name, _, _) in enumerate(readers):
            add_subscriber(conn, f"m{i}@example.org", list_id, name=name or None)


def with_backend(settings, name, server, sink):
    delivery = settings.delivery
    delivery = dataclasses.replace(
        delivery, backend=name,
        sendgrid=dataclasses.replace(delivery.sendgrid, host=server.url, timeout=5.0),
        smtp=dataclasses.replace(delivery.smtp, port=sink.port, starttls=False, return_path="b@example.org"))
    return dataclasses.replace(settings, delivery=delivery)


def copies(settings, name, server, sink) -> dict[str, tuple[str, str, str]]:
    """address -> (subject, HTML part, text part) as each reader gets them."""
    if name == "sendgrid":
        found = {}
        for body in server.accepted:
            parts = {c["type"]: c["value"] for c in body["content"]}
            for p in body["personalizations"]:
                fill = p["substitutions"]
                subject, page, text = body["subject"], parts["text/html"], parts["text/plain"]
                for key, value in fill.items():   # what SendGrid does with substitutions
                    subject, page, text = (s.replace(key, value) for s in (subject, page, text))
                found[p["to"][0]["email"]] = (subject, page, text)
        return found
    raws = ([p.read_bytes() for p in settings.delivery.outbox_dir.rglob("*.eml")] if name == "outbox"
            else [m.data for m in sink.messages])
    found = {}
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        found[msg["To"].addresses[0].addr_spec] = (
            str(msg["Subject"]), msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content())
    return found


@pytest.mark.parametrize("name", ["outbox", "smtp", "sendgrid"])
def test_each_reader_gets_their_own_fields_on_every_backend(settings, composed, sendgrid_server, smtp_sink, name):
    add_readers(settings.database.url, READERS)
    settings = with_backend(settings, name, sendgrid_server, smtp_sink)
    summary = dispatch.run_send(settings, dispatch.plan_send(settings, composed, "crank"))
    assert summary.sent == len(READERS)
    got = copies(settings, name, sendgrid_server, smtp_sink)
    for i, (full, first, subject) in enumerate(READERS):
        address = f"m{i}@example.org"
        their_subject, page, text = got[address]
        assert their_subject == subject
        assert f"Dear {first}, this copy is for {address} ({html.escape(full)})." in page
        assert f"Dear {first}, this copy is for {address} ({full})." in " ".join(text.split())
        assert f"News for {address}" in page                              # the preheader
        assert "%%" not in page + text + their_subject


def test_sendgrid_sends_the_content_once_per_thousand_readers(settings, composed, sendgrid_server, smtp_sink):
    seed(settings.database.url, 1001)
    settings = with_backend(settings, "sendgrid", sendgrid_server, smtp_sink)
    dispatch.run_send(settings, dispatch.plan_send(settings, composed, "crank"))
    bodies = sendgrid_server.accepted
    assert [len(b["personalizations"]) for b in bodies] == [1000, 1]
    for body in bodies:
        assert len(body["content"]) == 2                     # the content once per request
        assert all(set(p["substitutions"]) >= {marker(with_default("first_name", "reader"), "text"),
                                              marker(with_default("first_name", "reader"), "html")}
                   for p in body["personalizations"])
    first = bodies[0]["personalizations"][0]["substitutions"]
    assert first[marker(with_default("first_name", "reader"), "html")] == "Reader"   # "Reader 0"


@pytest.mark.parametrize("subject", [
    "CRANK Call | December 2024, for Ann",
    "A long subject line for Ann " + "that goes on and on " * 6,
    "Ann =?utf-8?q?not-an-encoded-word?=",
    "Zoë, your CRANK Call",
])
def test_a_per_reader_subject_header_reads_back_as_written(subject):
    from mailer.compose.personalize import _subject_header

    header = _subject_header(subject)
    assert all(len(line) <= 78 for line in header.split("\r\n"))
    parsed = email.message_from_bytes(header.encode("ascii") + b"\r\n", policy=email.policy.default)
    assert str(parsed["Subject"]) == subject
