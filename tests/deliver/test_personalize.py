"""Stage 4: every message is a correct RFC 5322 message, and reader data can never break it."""

from __future__ import annotations

import email
import email.policy
import warnings

import pytest

from mailer.compose.personalize import (
    ISSUE_HEADER,
    REF_HEADER,
    Recipient,
    UnsafeUnsubscribeUrl,
    personalize,
    prepare,
)
from mailer.errors import PermanentDelivery
from mailer.model import marker

HEADERS = {"date", "message-id", "to", "from", "reply-to", "subject", "mime-version", "content-type",
           "content-language", "list-unsubscribe", "list-unsubscribe-post", ISSUE_HEADER.lower(), REF_HEADER.lower()}


def parse(out):
    return email.message_from_bytes(out.as_bytes(), policy=email.policy.default)


def display_name(data: bytes) -> str:
    """The To display name as an RFC 2047 decoder reads it.

    For several adjacent encoded-words, email.policy.default's parser keeps the folding space
    between them (CPython's own folder's output fails the same round trip), so those are read
    with the legacy decoder, which drops it as RFC 2047 section 6.2 says.
    """
    from email.header import decode_header, make_header

    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    if "=?utf-8?" in raw:
        return str(make_header(decode_header(raw))).rpartition(" <")[0]
    return email.message_from_bytes(data, policy=email.policy.default)["To"].addresses[0].display_name


def content(msg, subtype: str) -> str:
    """A decoded body part with its CRLF line ends (as sent) turned back into newlines."""
    return msg.get_body((subtype,)).get_content().replace("\r\n", "\n")


def expected_body(issue_part: str, out, part: str) -> str:
    values = {f: out.value(f, part) for f in ("name", "email", "unsubscribe_url", "archive_url")}
    for field, value in values.items():
        issue_part = issue_part.replace(marker(field, part), value)
    return issue_part


@pytest.mark.parametrize("raw, shown", [
    ("Jane Doe", "Jane Doe"),
    ("Jöhn Dœ", "Jöhn Dœ"),
    ('Doe, John "JD" (Esq.)', 'Doe, John "JD" (Esq.)'),
    ("Evil\r\nBcc: victim@example.net", "Evil Bcc: victim@example.net"),
    ("Evil\nX-Injected: yes", "Evil X-Injected: yes"),
    ("=?utf-8?q?Bcc=3A_victim=40example.net?=", "=?utf-8?q?Bcc=3A_victim=40example.net?="),
    ("<script>alert('x')</script>", "<script>alert('x')</script>"),
    ("\u202eevil\u202c \x00name\x7f", "evil name"),
    ("a\u2028b\tc", "a b c"),
    ("%%email%% %%unsubscribe_url:html%%", "%email% %unsubscribe_url:html%"),
    ("李小龙 " * 40, ("李小龙 " * 40).strip()),
    ("x" * 500, "x" * 200),
    ("", None),
    ("   \r\n ", None),
])
def test_names_never_break_headers_or_html(edition, sample_issue, raw, shown):
    out = personalize(edition, Recipient("7.42", "reader@example.org", raw, "tok"))
    data = out.as_bytes()
    msg = parse(out)
    assert {k.lower() for k in msg} == HEADERS
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert data.isascii()
    (address,) = msg["To"].addresses
    assert address.addr_spec == "reader@example.org"
    assert display_name(data) == (shown or "")
    html = content(msg, "html")
    assert html == expected_body(edition.html, out, "html")
    assert "<script>" not in html and "\u202e" not in html
    assert content(msg, "plain") == expected_body(edition.text, out, "text")


def test_long_unsubscribe_url_stays_on_one_header_line(edition):
    token = "T0k-" + "a1B2_" * 80  # 404 characters, far past the 78-column fold
    out = personalize(edition, Recipient("1.2", "reader@example.org", "R", token))
    url = f"{edition.base_url}/unsubscribe/{token}"
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in out.as_bytes()
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in out.as_bytes()
    assert parse(out)["List-Unsubscribe"] == f"<{url}>"
    assert f'href="{url}"' in content(parse(out), "html")  # the footer link too


@pytest.mark.parametrize(("list_name", "proof", "from_name", "expected"), [
    ("crank", False, "CRANK Call", "CRANK Call <crank.example.org>"),
    ("Weekly News!", False, "CRANK Call", "CRANK Call <weekly-news.example.org>"),
    ("crank", False, "", "<crank.example.org>"),
    ("crank", True, "CRANK Call", None),        # a proof goes to no list
    ("", False, "CRANK Call", None),            # notices and confirmation mail
])
def test_list_id_and_precedence_bulk_for_mail_to_a_list(sample_issue, settings, list_name, proof, from_name,
                                                         expected):
    import dataclasses
    import warnings

    from mailer.compose.personalize import prepare

    newsletter = dataclasses.replace(settings.newsletter, from_name=from_name, from_email="news@Example.org")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edition = prepare(sample_issue, newsletter, list_name=list_name, proof=proof)
    msg = parse(personalize(edition, Recipient("1.2", "reader@example.org", "R", "t")))
    assert msg["List-Id"] == expected
    assert msg["Precedence"] == ("bulk" if expected else None)
    assert edition.bulk_headers() == ({"List-Id": expected, "Precedence": "bulk"} if expected else {})


def test_message_is_complete_and_ids_are_unique(edition):
    outs = [personalize(edition, Recipient(f"3.{i}", f"r{i}@example.org", f"R {i}", f"t{i}")) for i in range(50)]
    msgs = [parse(o) for o in outs]
    assert len({m["Message-ID"] for m in msgs}) == 50
    m = msgs[0]
    assert m.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in m.iter_parts())
    assert m["From"].addresses[0].addr_spec == "crankcall@example.org"
    assert m["Reply-To"] == "gpriddy@cftni.org"
    assert m["Subject"] == "CRANK Call | November 2024"
    assert m["Date"].datetime.tzinfo is not None
    assert m[ISSUE_HEADER] == "2024-11" and m[REF_HEADER] == "3.0"
    assert "example.org" not in m[REF_HEADER] and "r0" not in m["Message-ID"]
    assert "View online" in content(m, "plain")
    assert f"{edition.base_url}/archive/2024-11" in content(m, "html")


@pytest.mark.parametrize("subject", ["Café «crème» — №11 ✓", "A" * 300, "Line\r\nBcc: x@example.net"])
def test_any_subject_round_trips(sample_issue, settings, subject):
    import dataclasses

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ed = prepare(dataclasses.replace(sample_issue, subject=subject), settings.newsletter)
    msg = parse(personalize(ed, Recipient("1.1", "r@example.org", "R", "t")))
    assert msg["Subject"] == " ".join(subject.split())
    assert "Bcc" not in msg


@pytest.mark.parametrize("address, expected", [
    ("reader@example.org", "reader@example.org"),
    ("  Reader.Name+tag@Example.org ", "Reader.Name+tag@Example.org"),
    ("user@bücher.example", "user@xn--bcher-kva.example"),
    ("no-at-sign.example.org", PermanentDelivery),
    ("a@b.org\r\nBcc: victim@example.net", PermanentDelivery),
    ("ünïcode@example.org", PermanentDelivery),
    ('"quoted local"@example.org', PermanentDelivery),
    ("a@b@example.org", PermanentDelivery),
])
def test_addresses(edition, address, expected):
    recipient = Recipient("1.1", address, "R", "t")
    if expected is PermanentDelivery:
        with pytest.raises(PermanentDelivery, match="cannot address"):
            personalize(edition, recipient)
    else:
        assert parse(personalize(edition, recipient))["To"].addresses[0].addr_spec == expected


@pytest.mark.parametrize("base_url, warns", [("http://127.0.0.1:8000", True), ("https://news.example.org", False)])
def test_warns_when_one_click_url_is_not_https(sample_issue, settings, base_url, warns):
    import dataclasses

    newsletter = dataclasses.replace(settings.newsletter, base_url=base_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare(sample_issue, newsletter)
    assert any(issubclass(w.category, UnsafeUnsubscribeUrl) for w in caught) == warns


def test_proof_is_marked(sample_issue, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ed = prepare(sample_issue, settings.newsletter, proof=True)
    msg = parse(personalize(ed, Recipient("proof.1", "editor@example.org", "", "proof")))
    assert msg["Subject"] == "[PROOF] CRANK Call | November 2024"
    assert msg["X-Mailer-Proof"] == "yes"


@pytest.mark.parametrize("ref", ["", "a@b", "x" * 65, "1 2", "1\r\n"])
def test_refs_must_be_opaque_tokens(edition, ref):
    with pytest.raises(ValueError):
        personalize(edition, Recipient(ref, "r@example.org"))
