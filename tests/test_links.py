"""mailer/compose/links.py: what an editor meant by link syntax that did not take, and what is
wrong with an address (the lint report applies them with lines: tests/test_lint.py)."""

from __future__ import annotations

import pytest

from mailer.compose.findings import Severity
from mailer.compose.links import SHORTENERS, address_problem, host_problem, is_shortener, meant, picture_problem

E, W = Severity.ERROR, Severity.WARNING

# (text Markdown left as typed, what the editor is told)
MEANT = [
    ("[Atlantic Council(https://www.atlanticcouncil.org) says", [
        "'[Atlantic Council(https://www.atlanticcouncil.org)' is not a link (its ']' is missing): write "
        "[Atlantic Council](https://www.atlanticcouncil.org)"]),
    ("[Brookings]www.brookings.edu.", [
        "'[Brookings]www.brookings.edu' is not a link (the address needs brackets): write "
        "[Brookings](https://www.brookings.edu)"]),
    ("[five charts][ref]", ['link \'[five charts][ref]\' has no definition: add a line "[ref]: https://…" below '
                            "the paragraph, or write [five charts](https://…)"]),
    ("[five charts][]", ['link \'[five charts][]\' has no definition: add a line "[five charts]: https://…" '
                         "below the paragraph, or write [five charts](https://…)"]),
    ("[four](https://exa mple.com)", ["the address in [four](https://exa mple.com) has a space in it: write "
                                      "[four](https://example.com)"]),
    ("[two](javascript:alert(1))", ["link [two](javascript:alert(1)) is a javascript: address, which mail apps "
                                    "refuse (it is not a page): link to a web page, [two](https://…)"]),
    ("[x](data:text/html,hi)", ["link [x](data:text/html,hi) is a data: address, which mail apps refuse (it "
                                "is not a page): link to a web page, [x](https://…)"]),
    ("[x](https://a.org", ["link [x](https://a.org has no closing ')': write [x](https://a.org)"]),
    ("[x] (https://a.org)", ["'[x] (https://a.org)' is not a link (a space between ] and (): write "
                             "[x](https://a.org)"]),
    ("(Brookings)[https://www.brookings.edu]", [
        "'(Brookings)[https://www.brookings.edu]' is not a link (brackets the wrong way round): write "
        "[Brookings](https://www.brookings.edu)"]),
    ("see <www.brookings.edu>", ["'<www.brookings.edu>' is not a link (an address in <> starts with "
                                 "https://): write <https://www.brookings.edu>"]),
    ("[x](<a b> “t”)", ["[x](<a b> “t”) is not a link Markdown understands: write [x](https://…) with the "
                        "address in full"]),
    ("[a][r] and [b](javascript:x)", [
        'link \'[a][r]\' has no definition: add a line "[r]: https://…" below the paragraph, or write [a](https://…)',
        "link [b](javascript:x) is a javascript: address, which mail apps refuse (it is not a page): link to a "
        "web page, [b](https://…)"]),
    ("[sic], [1], a [note] and an array[0]", []),
]


@pytest.mark.parametrize("text, messages", MEANT)
def test_what_was_meant(text, messages):
    assert meant(text) == messages


# (address, severity, words in the message) — None: nothing wrong
ADDRESSES = [
    ("https://www.example.org/a?b=1#c", None, None),
    ("mailto:editor@example.org", None, None),
    ("tel:+12025550100", None, None),
    ("https://127.0.0.1:8000/x", None, None),
    ("https://localhost/x", None, None),
    ("https://bücher.example/", None, None),
    ("mailto:editor", E, "is not an email address"),
    ("https://exa mple.com", E, "is not a host name"),
    ("https:///path", E, "it has no host name"),
    ("https://-bad-.org", E, "is not a host name"),
    ("https://xn--a.org", E, "is not a host name"),
    ("vbscript:msgbox", E, "is a vbscript: address"),
    ("/archive/2024-11", E, "is not a full address: it opens nothing from an email; write https://… in full"),
    ("example.org/report", E, "write https://example.org/report in full"),
    ("http://example.org", W, "is http://, not https://"),
    ("https://news.bit.ly/x", W, "goes through a link shortener (news.bit.ly)"),
    ("https://tinyurl.com/abc", W, "goes through a link shortener (tinyurl.com)"),
    ("https://notbit.ly/x", None, None),
]


@pytest.mark.parametrize("href, severity, words", ADDRESSES)
def test_what_is_wrong_with_an_address(href, severity, words):
    verdict = address_problem(href)
    assert (verdict.severity if verdict else None) == severity
    assert verdict is None or words in verdict.message


@pytest.mark.parametrize("src, severity, words", [
    ("https://example.org/a.png", None, None),
    ("http://example.org/a.png", W, "is http://"),
    ("data:image/png;base64,AAAA", E, "is written into the email (data:)"),
    ("/img/a.png", E, "is not a full web address"),
    ("https://exa_mple.org/a.png", E, "cannot load: 'exa_mple.org' is not a host name"),
])
def test_what_is_wrong_with_a_pictures_address(src, severity, words):
    verdict = picture_problem(src)
    assert (verdict.severity if verdict else None) == severity
    assert verdict is None or words in verdict.message


def test_the_shortener_list_is_hosts():
    assert all(host == host.lower() and "." in host and "/" not in host for host in SHORTENERS)
    assert is_shortener("BIT.LY.") and not is_shortener("example.org")
    assert host_problem("example") == "'example' has no domain (.org, .com…)"
