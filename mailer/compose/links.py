"""Links and picture addresses an editor wrote: what is broken, what was meant, what hurts.

- `meant(text)`: Markdown link syntax that did not take and reached the email as typed, with
  what the editor meant: `[Atlantic Council(https://…)` (no `]`), `[Brookings]www.brookings.edu`
  (no `(…)`), `[five charts][ref]` with no `[ref]: https://…` line, `[four](https://exa mple.com)`
  (a space in the address), `[two](javascript:alert(1))` (a script, not a page);
- `address_problem(href)` / `picture_problem(src)`: an address that opens nothing from an email
  (relative, `#anchor`, `javascript:`, `data:`, a host that cannot exist) is an error; `http://`
  and a link shortener are warnings;
- SHORTENERS: the one list of link-shortening hosts (spam filters score mail that hides its
  destinations behind them; docs/mail-facts.md, "HTML email"). Add new ones here.

mailer/compose/lint.py applies them with each finding's line; `mailer issue build --check-links`
(mailer/compose/linkcheck.py) then asks each web address itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailer.compose.findings import Severity

# Hosts whose only job is to redirect somewhere else. Kept in this one place; matched on the host
# and its subdomains.
SHORTENERS = frozenset({
    "bit.ly", "bitly.com", "bit.do", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "v.gd",
    "buff.ly", "rebrand.ly", "cutt.ly", "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "s.id", "bl.ink",
    "lnkd.in", "dlvr.it", "soo.gd", "qr.ae", "adf.ly", "shorte.st", "trib.al", "fb.me", "tiny.one",
    "shorturl.com", "clck.ru", "short.io", "snip.ly", "po.st", "su.pr", "x.co", "mcaf.ee", "urlz.fr",
})
SCRIPT_SCHEMES = frozenset({"javascript", "vbscript", "data", "file", "blob"})
OPEN_SCHEMES = frozenset({"https", "http", "mailto", "tel", "sms"})


@dataclass(frozen=True)
class Verdict:
    severity: Severity
    message: str


# --- link syntax that did not take ------------------------------------------------------------

_ADDRESS = r"(?:https?://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]"
_NO_CLOSE = re.compile(r"\[([^\[\]()]*?)\s*\((" + _ADDRESS + r")\)?")
_NO_PARENS = re.compile(r"\[([^\[\]]+)\]\s*(" + _ADDRESS + r")")
_SPACE_BEFORE = re.compile(r"\[([^\[\]]+)\]\s+\((" + _ADDRESS + r")\)")
_REFERENCE = re.compile(r"\[([^\[\]]+)\]\[([^\[\]]*)\]")
_INLINE = re.compile(r"\[([^\[\]]*)\]\(")
_REVERSED = re.compile(r"\(([^()]+)\)\[(" + _ADDRESS + r")\]")
_ANGLE_WWW = re.compile(r"<\s*(www\.[^\s<>]+)\s*>")


def meant(text: str) -> list[str]:
    """What each piece of link syntax left as typed in `text` was meant to be (empty: none)."""
    found: list[tuple[int, int, str]] = []

    def note(start: int, end: int, message: str) -> None:
        if not any(start < other_end and other_start < end for other_start, other_end, _ in found):
            found.append((start, end, message))

    for match in _INLINE.finditer(text):
        end, message = _inline(match, text)
        note(match.start(), end, message)
    for match in _SPACE_BEFORE.finditer(text):
        words, url = match.groups()
        note(*match.span(), f"{match.group(0)!r} is not a link (a space between ] and (): write "
                            f"[{words}]({url})")
    for match in _REFERENCE.finditer(text):
        words, label = match.group(1), match.group(2) or match.group(1)
        note(*match.span(), f"link {match.group(0)!r} has no definition: add a line \"[{label}]: "
                            f"https://…\" below the paragraph, or write [{words}](https://…)")
    for match in _NO_PARENS.finditer(text):
        words, url = match.groups()
        note(*match.span(), f"{match.group(0)!r} is not a link (the address needs brackets): write "
                            f"[{words}]({_full(url)})")
    for match in _NO_CLOSE.finditer(text):
        words, url = match.groups()
        note(*match.span(), f"{match.group(0)!r} is not a link (its ']' is missing): write "
                            f"[{words.strip()}]({_full(url)})")
    for match in _REVERSED.finditer(text):
        words, url = match.groups()
        note(*match.span(), f"{match.group(0)!r} is not a link (brackets the wrong way round): write "
                            f"[{words}]({_full(url)})")
    for match in _ANGLE_WWW.finditer(text):
        note(*match.span(), f"{match.group(0)!r} is not a link (an address in <> starts with "
                            f"https://): write <https://{match.group(1)}>")
    return [message for _start, _end, message in sorted(found)]


def _inline(match: re.Match, text: str) -> tuple[int, str]:
    """`[words](...)` left as text: (where it ends, what went wrong with the address inside)."""
    end, depth = match.end(), 1
    while end < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    words = match.group(1)
    address = text[match.end():end - (0 if depth else 1)].strip()
    scheme = address.partition(":")[0].lower() if ":" in address else ""
    if depth:
        return end, f"link [{words}]({_short(address)} has no closing ')': write [{words}]({_short(address)})"
    if scheme in SCRIPT_SCHEMES:
        return end, (f"link [{words}]({_short(address)}) is a {scheme}: address, which mail apps refuse "
                     f"(it is not a page): link to a web page, [{words}](https://…)")
    if re.search(r"\s", address) and not re.search(r"\s[\"'(“‘<]|^<", address):   # not a title, nor <...>
        joined = "".join(address.split())
        return end, (f"the address in [{words}]({address}) has a space in it: write "
                     f"[{words}]({joined})")
    return end, (f"[{words}]({_short(address)}) is not a link Markdown understands: write "
                 f"[{words}](https://…) with the address in full")


def _full(url: str) -> str:
    return url if url.lower().startswith(("http://", "https://")) else f"https://{url}"


def _short(text: str, chars: int = 60) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


# --- addresses ----------------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def host_problem(host: str) -> str | None:
    """Why `host` cannot be a web server's name (None: it can)."""
    if not host:
        return "it has no host name"
    if host.startswith("[") or re.fullmatch(r"[\d.]+", host):
        return None                                    # an IP address
    try:     # the standard library's IDNA codec: enough to tell a host name (no import cost)
        ascii_host = host.lower().encode("idna").decode("ascii")
        ascii_host.encode("ascii").decode("idna")      # and back: an xn-- label must be real punycode
    except UnicodeError:
        return f"{host!r} is not a host name"
    labels = ascii_host.rstrip(".").split(".")
    if any(not _HOST_LABEL.match(label) for label in labels):
        return f"{host!r} is not a host name"
    if len(labels) < 2 and ascii_host != "localhost":
        return f"{host!r} has no domain (.org, .com…)"
    return None


def address_problem(href: str) -> Verdict | None:
    """What is wrong with a link's address (None: nothing)."""
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if not scheme:
        guess = f"https://{href}" if re.match(r"(?i)^www\.|^[\w-]+\.[a-z]{2,}(/|$)", href) else "https://…"
        what = "a link within a web page" if href.startswith("#") else "not a full address"
        return Verdict(Severity.ERROR, f"link {href!r} is {what}: it opens nothing from an email; write "
                                       f"{guess} in full")
    if scheme in SCRIPT_SCHEMES:
        return Verdict(Severity.ERROR, f"link {_short(href)!r} is a {scheme}: address, which mail apps "
                                       "refuse: link to a web page (https://…)")
    if scheme not in OPEN_SCHEMES:
        return Verdict(Severity.ERROR, f"link {href!r} is a {scheme}: address, which readers' mail apps "
                                       "cannot open: use https://… (or mailto:)")
    if scheme == "mailto":
        address = parts.path
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
            return Verdict(Severity.ERROR, f"link {href!r} is not an email address (mailto:name@example.org)")
        return None
    if scheme in ("tel", "sms"):
        return None
    problem = host_problem(parts.hostname or "")
    if problem:
        return Verdict(Severity.ERROR, f"link {href!r} cannot open: {problem}")
    if scheme == "http":
        return Verdict(Severity.WARNING, f"link {href} is http://, not https://: some mail apps warn "
                                         "before opening it, and it can be read or changed on the way")
    return shortener_problem(href)


def shortener_problem(href: str) -> Verdict | None:
    host = (urlsplit(href).hostname or "").lower()
    if is_shortener(host):
        return Verdict(Severity.WARNING, f"link {href} goes through a link shortener ({host}): spam "
                                         "filters distrust them and readers cannot see where it leads; "
                                         "link to the page itself")
    return None


def is_shortener(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == short or host.endswith("." + short) for short in SHORTENERS)


def picture_problem(src: str) -> Verdict | None:
    """What is wrong with a picture's address (None: nothing)."""
    parts = urlsplit(src)
    scheme = parts.scheme.lower()
    if scheme == "data":
        return Verdict(Severity.ERROR, f"picture {_short(src, 40)} is written into the email (data:): "
                                       "Gmail and Outlook do not show such pictures, and it counts "
                                       "toward Gmail's clipping size; put it on a web server (https://…)")
    if scheme not in ("http", "https"):
        return Verdict(Severity.ERROR, f"picture {src!r} is not a full web address: readers' mail apps "
                                       "cannot fetch it; write https://… in full")
    problem = host_problem(parts.hostname or "")
    if problem:
        return Verdict(Severity.ERROR, f"picture {src!r} cannot load: {problem}")
    if scheme == "http":
        return Verdict(Severity.WARNING, f"image {src} is http://: most email clients block or flag it "
                                         "(mixed content); use https://")
    return None
