"""Stage 4, tracking: the issue's links -> tracked links and an open image, and the signed tokens.

With `[tracking]` on, `prepare` (personalize.py) rewrites every http(s) link of the HTML and text
parts, once per send, into `{base_url}/c/{LINK}.%%track%%`: LINK names the send and the link's
index in the links stored with the send (`link_part`), and the `track` marker is filled per reader
with the copy's part (`copy_part`: whose copy, or a random number for "aggregate", and when it was
made). Each half carries its own MAC under the secret key, so a reader's value is one splice like
any other field (and one SendGrid substitution, however many links the issue has). Our own pages
(unsubscribe, preferences, archive: anything under base_url) are never rewritten. `read_token`
checks both MACs and that they name the same send. The rules and their limits: docs/tracking.md.
"""

from __future__ import annotations

import hashlib
import html
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from mailer.model import marker

TRACK = "track"                     # the per-copy field (mailer.model.FIELDS)
OPEN = "o"                          # the link index of the open image
_SALT = b"crank-mailer/tracking/v1"
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)("[^>]*>)(.*?)</a>', re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")
_TAGS = re.compile(r"<[^>]+>")
_TOKEN = re.compile(r"([0-9a-f]{1,12})-([0-9a-f]{1,6}|o)-([0-9a-f]{8})\.([ra])([0-9a-f]{1,16})-([0-9a-f]{1,12})-"
                    r"([0-9a-f]{12})")
_PIXEL = ('<img src="{url}" width="1" height="1" alt="" '
          'style="display:block;width:1px;height:1px;border:0;overflow:hidden">')
MAX_TEXT = 200


class Link(NamedTuple):
    url: str                        # as the reader's browser should get it (HTML entities decoded)
    text: str                       # the words it is written under in the issue ("" in the text part only)


class Token(NamedTuple):
    send_id: int
    link: int | None                # None: the open image
    reader: bool                    # True: `copy` is the subscriber's id ("reader" mode)
    copy: int
    made_at: int                    # Unix seconds when the copy was made (just before it was handed over)


def find_links(body_html: str, text: str, base_url: str) -> list[Link]:
    """The issue's distinct http(s) links, in order of first appearance (HTML, then text), with the
    words each is written under; links to our own pages (under base_url) are left out."""
    own = base_url.rstrip("/") + "/"
    found: dict[str, list[str]] = {}
    for m in _HREF.finditer(body_html):
        url = html.unescape(m.group(2))
        if not url.startswith(own):
            words = " ".join(html.unescape(_TAGS.sub(" ", m.group(4))).split())
            texts = found.setdefault(url, [])
            if words and words not in texts:
                texts.append(words)
    for m in _TEXT_URL.finditer(text):
        url = _trim(m.group(0))
        if not url.startswith(own):
            found.setdefault(url, [])
    return [Link(url, " / ".join(texts)[:MAX_TEXT]) for url, texts in found.items()]


def _trim(url: str) -> str:
    """A URL as written in running text, without the sentence's closing punctuation."""
    return url.rstrip(".,;:!?)")


def rewrite(body_html: str, text: str, base_url: str, parts: dict[str, str], *, pixel: str = "") -> tuple[str, str]:
    """Both parts with each link in `parts` (URL -> its link part) pointing at /c/LINK.%%track%%;
    `pixel`, an open image's link part, goes at the end of the HTML body."""
    base = base_url.rstrip("/")
    html_marker, text_marker = marker(TRACK, "html"), marker(TRACK, "text")

    def href(m) -> str:
        part = parts.get(html.unescape(m.group(2)))
        if part is None:
            return m.group(0)
        return f"{m.group(1)}{base}/c/{part}.{html_marker}{m.group(3)}{m.group(4)}</a>"

    def plain(m) -> str:
        url = _trim(m.group(0))
        part = parts.get(url)
        if part is None:
            return m.group(0)
        return f"{base}/c/{part}.{text_marker}{m.group(0)[len(url):]}"

    body_html = _HREF.sub(href, body_html)
    if pixel:
        image = _PIXEL.format(url=f"{base}/o/{pixel}.{html_marker}")
        at = body_html.lower().rfind("</body>")
        body_html = body_html[:at] + image + body_html[at:] if at >= 0 else body_html + image
    return body_html, _TEXT_URL.sub(plain, text)


@dataclass(frozen=True, eq=False)
class Signer:
    """Makes and reads tracking tokens under the secret key."""

    key: bytes

    @classmethod
    def from_secret(cls, secret: str | bytes) -> Signer:
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        return cls(hashlib.sha256(_SALT + raw).digest())

    def _mac(self, message: str, size: int) -> str:
        return hashlib.blake2b(message.encode("ascii"), key=self.key, digest_size=size).hexdigest()

    def link_part(self, send_id: int, link: int | None) -> str:
        """The same for every reader: the send and the link (None: the open image)."""
        head = f"{send_id:x}-{OPEN if link is None else f'{link:x}'}"
        return f"{head}-{self._mac(head, 4)}"

    def copy_part(self, send_id: int, reader: bool, copy: int, made_at: int) -> str:
        """One reader's copy: whose (or a random number) and when it was made."""
        return self.copier(send_id)(f"{'r' if reader else 'a'}{copy:x}-{made_at:x}")

    def copier(self, send_id: int) -> Callable[[str], str]:
        """copy_part for one send, with the send's part of the MAC hashed once (a send makes one per
        reader): body -> body-MAC."""
        base = hashlib.blake2b(f"{send_id:x}.".encode("ascii"), key=self.key, digest_size=6)

        def part(body: str) -> str:
            mac = base.copy()
            mac.update(body.encode("ascii"))
            return f"{body}-{mac.hexdigest()}"

        return part

    def read(self, token: str) -> Token | None:
        """The token's contents if both halves are ours and name the same send; None otherwise."""
        m = _TOKEN.fullmatch(token)
        if m is None:
            return None
        send, link, link_mac, mode, copy, made, copy_mac = m.groups()
        head, body = f"{send}-{link}", f"{mode}{copy}-{made}"
        send_id = int(send, 16)
        if not (secrets.compare_digest(link_mac, self._mac(head, 4))
                and secrets.compare_digest(copy_mac, self._mac(f"{send_id:x}.{body}", 6))):
            return None
        index = None if link == OPEN else int(link, 16)
        return Token(send_id, index, mode == "r", int(copy, 16), int(made, 16))


@dataclass(frozen=True, eq=False)
class Plan:
    """What a send tracks: made by the send once its links are stored (mailer/send/tracking.py),
    handed to `prepare`, asked for each reader's copy part by `personalize`."""

    send_id: int
    signer: Signer
    reader: bool                    # "reader" mode: the copy part names the subscriber
    links: dict[str, int]           # URL -> its index among the links stored with the send
    opens: bool
    clock: Callable[[], float] = time.time
    _random: random.Random = field(default_factory=lambda: random.Random(secrets.randbits(64)))
    _copier: Callable[[str], str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_copier", self.signer.copier(self.send_id))

    def parts(self) -> dict[str, str]:
        return {url: self.signer.link_part(self.send_id, i) for url, i in self.links.items()}

    def pixel(self) -> str:
        return self.signer.link_part(self.send_id, None) if self.opens else ""

    def copy_part(self, subscriber_id: int) -> str:
        """This reader's copy part: their id in "reader" mode, else a random number nothing keeps
        beside the reader (it only tells one copy's requests from another's)."""
        if self.reader:
            return self._copier(f"r{subscriber_id:x}-{int(self.clock()):x}")
        return self._copier(f"a{self._random.getrandbits(48):x}-{int(self.clock()):x}")
