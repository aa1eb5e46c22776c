"""Stage 3: HTML -> inlined HTML (premailer) + the plain-text part.

premailer's defaults break MJML's output (docs/mail-facts.md, Libraries): they strip `!important` from the
media-query column rules, drop the client-specific <style> blocks and the media queries, and
download MJML's web-font stylesheet. Hence the exact options in `inline_css`.

The text part is read off the final HTML, so it carries exactly the sentences the reader sees,
each link's target written out as "words <url>", and the per-recipient markers in their text form
(`%%unsubscribe_url%%` where the HTML has `%%unsubscribe_url:html%%`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import sys
import textwrap
import types

from lxml import etree

from mailer.errors import ComposeError
from mailer.model import MARKER

WIDTH = 72                      # plain-text line length (RFC 5322 suggests 78 at most)
_DOCTYPE = re.compile(r"^\s*<!doctype html>", re.I)
_IMPORT = re.compile(r"<style[^>]*>[^<]*@import", re.I)


def _refuse_fetch(url, *_args, **_kwargs):
    raise ComposeError(f"the email would fetch {url} while composing; composing never touches "
                       "the network (remove the <link> or @import)")


class _Offline:
    """premailer's `session`: it would only be used to fetch stylesheets, which we never allow."""

    get = staticmethod(_refuse_fetch)


@functools.cache
def _premailer():
    """Import premailer once, without the parts of it that only ever fetch over the network.

    `mailer issue build` should start fast (an editor waits for it), and three of premailer's
    imports only serve downloading stylesheets, which composing must never do (their start-up
    costs: docs/decisions.md):
    - `requests` (with urllib3, chardet, idna) is premailer's `session` for <link>
      stylesheets; allow_network=False and our `_Offline` session never use it;
    - `cssutils._fetch` (importlib.metadata, encutils) fetches @import URLs, which
      cssutils may do even with allow_network=False (docs/mail-facts.md); ours refuses instead;
    - `urllib.request` (with http.client, ssl, email) serves cssutils' parseUrl and
      parseFile only; cssutils gets a stand-in that loads the real module on first use.
    The stand-ins hold those names in sys.modules only while premailer loads, so a later
    `import requests` or `import urllib.request` anywhere else gets the real library.

    This is the adapter for what premailer and cssutils do while they import (premailer binds
    `requests` and never uses it with our session; cssutils.util takes `_defaultFetcher` from its
    private `cssutils._fetch`): tests/test_library_contracts.py fails, naming their versions, if
    that changes.
    """
    makers = {
        "requests": lambda: _stand_in("requests", "premailer's session; see mailer.compose.inline"),
        "cssutils._fetch": lambda: _stand_in("cssutils._fetch", "composing never fetches "
                                             "stylesheets", _defaultFetcher=_refuse_fetch),
        "urllib.request": lambda: _on_first_use("urllib.request"),
    }
    # only for modules not loaded yet: a loaded one is left exactly as it is
    stand_ins = {name: make() for name, make in makers.items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import premailer
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    # cssutils logs dozens of "Unknown Property" warnings for email CSS (mso-*, -webkit-*); its
    # import resets the level, so set it after importing.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
    # premailer validates existing inline styles even with disable_validation=True (merge_styles
    # calls csstext_to_pairs with validate left at True). Validation only logs, and we silence
    # those logs, but checking against cssutils' CSS profiles first compiles ~240 large regexes
    # (docs/decisions.md). Without profiles every property is "unknown" and the output is
    # byte-identical (tests/test_compose.py checks the sample issue both ways).
    import cssutils

    cssutils.profile.removeProfile(all=True)
    return premailer


def _stand_in(name: str, doc: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name, f"stand-in while premailer imports: {doc}")
    module.__dict__.update(attributes)
    return module


def _on_first_use(name: str) -> types.ModuleType:
    """A stand-in for module `name` that imports the real one when any attribute is read.

    `import a.b` finds the stand-in in sys.modules and binds `a`, so the stand-in is also set as
    the attribute `b` of package `a` (until the real module's import replaces it).
    """
    def __getattr__(attribute: str):
        if sys.modules.get(name) is module:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    module = _stand_in(name, f"the real {name} loads on first use", __getattr__=__getattr__)
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent)
    if not hasattr(package, child):
        setattr(package, child, module)
    return module


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes, keeping media queries and !important."""
    if _IMPORT.search(html):
        raise ComposeError("a <style> block has an @import: cssutils would fetch it while "
                           "composing; put the rules in templates/partials/style.css.j2")
    # MRML writes a lowercase doctype, which premailer drops.
    html = _DOCTYPE.sub("<!DOCTYPE html>", html, count=1)
    premailer = _premailer()
    try:
        inliner = premailer.Premailer(html, allow_network=False, strip_important=False,
                                      keep_style_tags=True, disable_validation=True,
                                      # MRML writes the width attributes Outlook needs (an
                                      # image's 520, not its CSS 100%): premailer must not
                                      # overwrite them from the styles
                                      disable_basic_attributes=["width", "height"],
                                      session=_Offline())
        return inliner.transform(pretty_print=False)
    except ComposeError:
        raise
    except Exception as exc:   # cssutils / lxml parse failures
        raise ComposeError(f"CSS inlining (premailer) failed: {type(exc).__name__}: {exc}") from exc


# --- plain text -------------------------------------------------------------------------------

_SKIP = frozenset({"head", "style", "script", "title", "template"})
_BLOCK = frozenset({"p", "div", "tr", "table", "tbody", "li", "ul", "ol", "section",
                    "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "body"})
_UNDERLINE = {"h1": "=", "h2": "-", "h3": "~"}
_HIDDEN = re.compile(r"display\s*:\s*none", re.I)


def html_to_text(html: str) -> str:
    """The plain-text part: every visible sentence, links as "words <url>", wrapped at 72."""
    root = etree.fromstring(html, etree.HTMLParser())
    if root is None:
        return ""
    writer = _TextWriter()
    writer.walk(root)
    writer.flush()
    return "\n\n".join(writer.blocks) + "\n"


class _TextWriter:
    def __init__(self):
        self.blocks: list[str] = []
        self.words: list[str] = []
        self.quoted = 0             # inside a <blockquote>: lines start with "> ", as in replies

    def add(self, text: str | None) -> None:
        if text:
            self.words.append(text)

    def flush(self, tag: str = "p") -> None:
        lines = [" ".join(line.replace("\xa0", " ").split()) for line in "".join(self.words).split("\n")]
        self.words = []
        lines = [_text_markers(line) for line in lines if line]
        if not lines:
            return
        prefix = "> " * self.quoted
        text = "\n".join(textwrap.fill(line, WIDTH - len(prefix), break_long_words=False,
                                       break_on_hyphens=False, initial_indent=prefix,
                                       subsequent_indent=prefix)
                         for line in lines)
        if tag in _UNDERLINE:   # setext-style headings, as Markdown readers know them
            text += "\n" + _UNDERLINE[tag] * max(map(len, text.splitlines()))
        self.blocks.append(text)

    def walk(self, el) -> None:
        tag = el.tag if isinstance(el.tag, str) else None    # comments: MSO conditionals
        if tag is None or tag in _SKIP or _HIDDEN.search(el.get("style", "")):
            return
        block = tag in _BLOCK
        if block:
            self.flush()
        if tag == "br":
            self.add("\n")
        if tag in ("td", "th") and el.getprevious() is not None:
            self.add(" | ")            # a data table's cells on one line (an email table: one per tr)
        if tag == "img" and el.get("alt"):
            self.add(f"[{el.get('alt')}]")
        self.quoted += tag == "blockquote"
        self.add(el.text)
        for child in el:
            self.walk(child)
            self.add(child.tail)
        self.quoted -= tag == "blockquote"
        if tag == "a":
            self.add(_link_target(el))
        if block:
            self.flush(tag)


def _link_target(a) -> str:
    href = (a.get("href") or "").strip()
    words = " ".join("".join(a.itertext()).split())
    shown = href[len("mailto:"):] if href.lower().startswith("mailto:") else href
    return "" if not href or shown == words else f" <{href}>"


def _text_markers(line: str) -> str:
    return MARKER["html"].sub(r"%%\1%%", line) if "%%" in line else line
