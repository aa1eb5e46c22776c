"""Addresses: one person is one subscriber; the fast path agrees with email-validator."""

from __future__ import annotations

import random
import string

import pytest

from subscribers.errors import InvalidAddress
from subscribers.normalize import (
    _full,
    ascii_address,
    clean_text,
    display_email,
    is_sendable,
    needs_smtputf8,
    normalize_email,
)


@pytest.mark.parametrize("raw, expected", [
    ("ann@example.com", "ann@example.com"),
    ("Ann.Lee@Example.COM", "ann.lee@example.com"),             # case-insensitive in full
    ("  ann@example.com\t", "ann@example.com"),                  # surrounding whitespace
    ("\u00a0ann@example.com\u00a0", "ann@example.com"),          # no-break spaces from spreadsheets
    ("dora@Bücher.Example", "dora@xn--bcher-kva.example"),       # IDN -> punycode
    ("dora@xn--bcher-kva.example", "dora@xn--bcher-kva.example"),  # same person either way
    ("dora@BÜCHER.example", "dora@xn--bcher-kva.example"),
    ("Jöhn@example.org", "jöhn@example.org"),                    # SMTPUTF8 local part, lower-cased
    ("jo\u0308hn@example.org", "jöhn@example.org"),              # NFC
    ("first+tag@sub.example.net", "first+tag@sub.example.net"),
    ("o'brien@example.com", "o'brien@example.com"),
    ("a@123.example.com", "a@123.example.com"),
    ("a" * 65 + "@example.com", "a" * 65 + "@example.com"),  # email-validator checks 64 only in strict mode
])
def test_normalizes(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    ("", "no address"),
    ("   ", "no address"),
    ("not-an-address", "must have an @-sign"),
    ("a@b@example.com", "@"),
    ("a..b@example.com", "two periods"),
    (".a@example.com", "period"),
    ("a b@example.com", "SPACE"),
    ("x@foo.test", "special-use or reserved"),
    ("x@printer.local", "special-use or reserved"),
    ("x@localhost", "period"),
    ("a@example", "period"),
    ("a@[192.0.2.1]", "bracketed IP"),
    ('"a b"@example.com', "Quoting"),
    ("a@-example.com", "hyphen"),
    ("a@" + "b" * 64 + ".com", "so many characters"),             # a DNS label over 63
    ("a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com", "too long"),  # over 254 in all
    ("<ann@example.com>", "angle brackets"),
])
def test_rejects_with_email_validators_reason(raw, reason):
    with pytest.raises(InvalidAddress) as err:
        normalize_email(raw)
    assert reason.lower() in err.value.reason.lower()
    assert err.value.address == raw


# The wire rule (every address mailer sends from or to; the config's and the proof forms' check):
# ASCII local part as given, IDN domain to punycode, a dot in the domain, 254 characters at most.
WIRE = [
    ("ann@example.com", "ann@example.com"),
    ("Ann.Lee@Example.COM", "Ann.Lee@Example.COM"),             # as given: the sender's own spelling
    ("  ann@example.com\t", "ann@example.com"),
    ("dora@Bücher.example", "dora@xn--bcher-kva.example"),
    ("first+tag@sub.example.net", "first+tag@sub.example.net"),
    ("o'brien@example.com", "o'brien@example.com"),
    ("a" * 64 + "@" + "b" * 185 + ".com", "a" * 64 + "@" + "b" * 185 + ".com"),   # 254 in all
    ("jöhn@example.org", None),                                 # SMTPUTF8: no backend speaks it
    ("ann@localhost", None),
    ("not-an-address", None),
    ("a b@example.com", None),
    ("<ann@example.com>", None),
    ("Ann <ann@example.com>", None),
    ("ann@example.com,bob@example.com", None),
    ("a" * 64 + "@" + "b" * 186 + ".com", None),                # 255
    ("", None),
]


@pytest.mark.parametrize("raw, wire", WIRE)
def test_the_wire_form_of_an_address(raw, wire):
    assert is_sendable(raw) is (wire is not None)
    if wire is None:
        with pytest.raises(InvalidAddress, match="not a plain ASCII address"):
            ascii_address(raw)
    else:
        assert ascii_address(raw) == wire


def _random_address(rnd: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + ".-_+'!#~\"@ (),[]üé\u00a0"
    local = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
    domain = rnd.choice(["example.com", "EXAMPLE.org", "sub.example.net", "bücher.example", "foo.test",
                         "example", "-bad.example.com", "ex_ample.com", "xn--bcher-kva.example", ""])
    return f"{rnd.choice(['', ' '])}{local}@{domain}"


def test_fast_path_agrees_with_email_validator():
    """Every decision of the fast path equals email-validator's (the slow path) on 3,000 addresses."""
    rnd = random.Random(20241105)
    for raw in [_random_address(rnd) for _ in range(3000)]:
        try:
            fast = normalize_email(raw)
        except InvalidAddress as exc:
            fast = ("invalid", exc.reason)
        try:
            slow = _full(raw, raw.strip(), False) if raw.strip() else ("invalid", "no address")
        except InvalidAddress as exc:
            slow = ("invalid", exc.reason)
        assert fast == slow, raw


@pytest.mark.parametrize("raw, expected", [
    ("Ann Lee", "Ann Lee"),
    ("  Ann   Lee ", "Ann Lee"),
    ("Ann\r\nLee", "Ann Lee"),                       # line breaks never stored raw
    ("Ann\x00\x07\x1b[31mLee", "Ann [31mLee"),       # control characters out
    ("Ann\u2028Lee\u2029", "Ann Lee"),               # Unicode line/paragraph separators
    ("\u202eeeL nnA", "eeL nnA"),                    # bidi override (display spoofing)
    ("Ann\u00a0Lee", "Ann Lee"),
    ("Zoe\u0308", "Zoë"),
    ("", ""),
    (None, ""),
    ("x" * 500, "x" * 200),
])
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_display_email_shows_unicode_domain():
    assert display_email("dora@xn--bcher-kva.example") == "dora@bücher.example"
    assert display_email("ann@example.com") == "ann@example.com"


@pytest.mark.parametrize("raw, smtputf8", [
    ("ann@example.com", False),
    ("Jöhn@Bücher.Example", True),          # non-ASCII local part: only SMTPUTF8 can carry it
    ("ann@Bücher.Example", False),          # an IDN domain is punycode once normalized
    ("δοκιμή@example.com", True),
])
def test_needs_smtputf8(raw, smtputf8):
    assert needs_smtputf8(normalize_email(raw)) is smtputf8
