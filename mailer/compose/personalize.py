"""Stage 4: composed issue x recipient -> outgoing message (cheap: string splicing, no re-render).

`prepare(issue, newsletter)` runs once per send. It fills the fields that are the same for every
reader (the view-online URL), folds the shared headers once, and pre-encodes both body parts as
quoted-printable with the per-recipient markers cut out (see `_qp_template`). `personalize(edition,
recipient)` is then a handful of string operations; `Outgoing.as_bytes()` splices the reader's
values into the pre-encoded parts. Building an `EmailMessage` per reader was too slow for 1,000
messages/s; splicing yields the same RFC 5322 message.
The measurements: docs/decisions.md, "MIME is spliced".

Safety: names are cleaned of control characters (CR/LF, bidi overrides...) and written in the To
header as an atom phrase, a quoted-string or RFC 2047 encoded-words, never raw; every value put in
the HTML part is HTML-escaped; addresses must be plain ASCII addr-specs (IDN domains are punycoded).
`List-Unsubscribe` is written on one line ourselves: Python's header folding rewrites long URLs
into encoded-words and breaks the header (docs/mail-facts.md, python/cpython#85725).
"""

from __future__ import annotations

import base64
import email.policy
import html
import re
import secrets
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import quoprimime
from email.headerregistry import Address
from email.utils import format_datetime

from mailer.compose import tracking
from mailer.config import NewsletterSettings
from mailer.errors import ConfigError, PermanentDelivery
from mailer.model import FIELDS, MARKER, ComposedIssue, Part, field_value, first_name, marker
from subscribers import normalize
from subscribers.errors import InvalidAddress
from subscribers.normalize import (
    CONTROL,  # controls, separators, zero-width, bidi, BOM: never in a name
)

PER_RECIPIENT = ("name", "first_name", "email", "unsubscribe_url", "preferences_url", "track")  # archive_url: once
ONE_CLICK = "List-Unsubscribe=One-Click"              # RFC 8058 section 3.1: this exact value
ISSUE_HEADER = "X-Mailer-Issue"                        # the issue slug
_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
REF_HEADER = "X-Mailer-Ref"                            # opaque delivery reference (no PII)
PROOF_PREFIX = "[PROOF] "

_POLICY = email.policy.SMTP                            # 78-column folding for the shared headers
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")         # RFC 5322 atext + space
_REF = re.compile(r"[A-Za-z0-9._=-]{1,64}")                           # safe in a VERP local part
_URL_CHARS = re.compile(r"[!#-;=?-~]+")                               # printable, no space < > "
_NEWLINES = re.compile(r"\r\n|\r|\n")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")                # a BCP 47 tag, as a header holds it
_MAX_NAME = 200
_MAX_URL = 900                                                        # the line must stay < 998


class UnsafeUnsubscribeUrl(UserWarning):
    """base_url is not https: RFC 8058 one-click needs an HTTPS List-Unsubscribe URI."""


@dataclass(frozen=True)
class Recipient:
    """One reader of one send. `ref` is opaque (dispatch uses "SEND.SUBSCRIBER"), never an address."""

    ref: str
    email: str
    name: str = ""
    unsubscribe_token: str = ""
    subscriber_id: int = 0
    tracked: bool = True           # False: the reader turned tracking off (their links stay direct)


@dataclass(frozen=True, eq=False)
class Edition:
    """An issue prepared once for personalization: shared headers and pre-encoded body parts."""

    slug: str
    subject: str
    from_email: str
    from_name: str
    reply_to: str
    base_url: str
    domain: str
    html: str                      # archive_url filled in; per-recipient markers still in place
    text: str
    fields: tuple[str, ...]        # the per-recipient markers the parts and subject use
    nonce: str                     # makes Message-IDs unique per run of prepare()
    proof: bool
    head: bytes                    # From, Reply-To, Subject, MIME headers: folded once
    subject_parts: tuple           # a subject with merge fields: alternating text and markers
    text_parts: tuple              # alternating QP bytes and field names (see _qp_template)
    html_parts: tuple
    boundary: str
    tracker: tracking.Plan | None = None   # with [tracking] on: links rewritten, the `track` field per copy
    untracked: Edition | None = None       # the same edition with direct links, for readers who opted out
    ours_only: bool = False                # our tracking is on: a provider's own must be off (sendgrid.py)
    language: str = "en"           # Content-Language: the footer's (the list's) language
    browser_link: str = ""         # the view-in-browser link when not the issue's public page (dispatch.edition_for)
    list_id: str = ""              # RFC 2919 List-Id value (list_id_header); "" for proofs and notices

    def bulk_headers(self) -> dict[str, str]:
        """List-Id and `Precedence: bulk` for mail sent to a list (docs/mail-facts.md)."""
        return {"List-Id": self.list_id, "Precedence": "bulk"} if self.list_id else {}

    @property
    def archive_url(self) -> str:
        # A proof's issue is not in the web archive yet, and its readers hold no unsubscribe
        # token: its links go to pages that exist (the archive, mailer/web/staff_copies.py's).
        if self.browser_link:
            return self.browser_link
        return f"{self.base_url}/archive" if self.proof else f"{self.base_url}/archive/{self.slug}"

    def unsubscribe_url(self, token: str) -> str:
        # A proof's or notice's token is mailer.model.STAFF_TOKENS': the page says what the link
        # does in a reader's copy (mailer/web/staff_copies.py).
        return f"{self.base_url}/unsubscribe/{token}"


@dataclass(frozen=True, slots=True, eq=False)
class Outgoing:
    """One message for one reader: what every backend needs, computed cheaply."""

    edition: Edition
    ref: str
    email: str                     # ASCII addr-spec
    name: str                      # cleaned display name ("" when unknown)
    unsubscribe_url: str
    message_id: str
    # The reader's preferences page takes the same token as the unsubscribe link (docs/readers.md),
    # so no second token is made per reader.
    preferences_url: str = ""
    track: str = ""                # the copy's half of its tracking tokens (compose/tracking.py)

    @property
    def first_name(self) -> str:
        return first_name(self.name)

    def value(self, field: str, part: str) -> str:
        if field == "archive_url":
            raw = self.edition.archive_url
        elif "~" in field:            # a merge field with its fallback (mailer.model.with_default)
            raw = field_value(field, self._raw)
        else:
            raw = getattr(self, field)
        return html.escape(raw, quote=True) if part == "html" else raw

    def _raw(self, field: str) -> str:
        return getattr(self, field)

    def subject(self) -> str:
        """This reader's subject: the issue's, with any merge fields filled in."""
        parts = self.edition.subject_parts
        return "".join(p if i % 2 == 0 else self.value(p, "text") for i, p in enumerate(parts)) \
            if parts else self.edition.subject

    def headers(self) -> dict[str, str]:
        """Per-reader headers beyond From/To/Subject: one-click unsubscribe and correlation."""
        return {"List-Unsubscribe": f"<{self.unsubscribe_url}>",
                "List-Unsubscribe-Post": ONE_CLICK,
                ISSUE_HEADER: self.edition.slug,
                REF_HEADER: self.ref}

    def as_bytes(self, date: datetime | None = None) -> bytes:
        """The whole RFC 5322 message, CRLF line ends, 7-bit clean."""
        return b"".join(_render(self, date or datetime.now(UTC)))


def prepare(issue: ComposedIssue, newsletter: NewsletterSettings, *, proof: bool = False,
            nonce: str | None = None, track: tracking.Plan | None = None, list_name: str = "",
            browser_link: str = "") -> Edition:
    """Do once per send everything that is the same for every reader; with `track`, links are
    rewritten (and the direct edition kept beside it for readers who turned tracking off).
    `list_name`: the list it goes to (List-Id, Precedence: bulk); none for proofs and notices.
    `browser_link`: the view-in-browser address when it is not /archive/ISSUE (a private send's)."""
    direct = _prepare(issue, newsletter, proof=proof, nonce=nonce, list_name=list_name, browser_link=browser_link)
    if track is None or proof:
        return direct
    body_html, text = tracking.rewrite(issue.html, issue.text, direct.base_url, track.parts(), pixel=track.pixel())
    tracked = replace(issue, html=body_html, text=text)
    edition = _prepare(tracked, newsletter, nonce=direct.nonce, boundary=direct.boundary, checked=True,
                       list_name=list_name, browser_link=browser_link)
    return replace(edition, tracker=track, untracked=replace(direct, ours_only=True), ours_only=True)


def list_id_header(list_name: str, from_name: str, from_email: str) -> str:
    """RFC 2919 `List-Id: phrase <list-label.domain>`: the list's name as the label (lower case,
    anything outside a-z 0-9 - as "-"), the From address's domain as the namespace, the From name
    as the phrase. The same list gives the same id in every issue, which is what filters key on."""
    label = _LABEL_CHARS.sub("-", list_name.lower()).strip("-") or "list"
    domain = ascii_address(from_email).rpartition("@")[2].lower()
    name = _one_line(from_name)
    return f"{_phrase(name)} <{label}.{domain}>" if name else f"<{label}.{domain}>"


def _prepare(issue: ComposedIssue, newsletter: NewsletterSettings, *, proof: bool = False,
             nonce: str | None = None, boundary: str | None = None, checked: bool = False,
             list_name: str = "", browser_link: str = "") -> Edition:
    """`checked`: the direct edition was made from these settings already (and warned once)."""
    base_url = newsletter.base_url.rstrip("/") if checked else _check_base_url(newsletter.base_url)
    slug = _check_ref(issue.slug, "issue slug")
    subject = _one_line(issue.subject) or issue.slug
    if proof:
        subject = PROOF_PREFIX + subject
    archive = browser_link or (f"{base_url}/archive" if proof else f"{base_url}/archive/{slug}")
    text = _NEWLINES.sub("\n", issue.text).replace(marker("archive_url", "text"), archive)
    body_html = _NEWLINES.sub("\n", issue.html).replace(marker("archive_url", "html"), html.escape(archive))
    if marker("unsubscribe_url", "html") not in body_html and not checked:
        warnings.warn(f"issue {slug}: the HTML part has no unsubscribe link", stacklevel=3)
    subject_parts = tuple(MARKER["text"].split(subject)) if "%%" in subject else ()
    fields = tuple(dict.fromkeys(spec for found in (MARKER["text"].findall(text + subject),
                                                    MARKER["html"].findall(body_html))
                                 for spec in found if spec.partition("~")[0] in PER_RECIPIENT))
    boundary = boundary or "==mailer-" + secrets.token_hex(12)
    list_id = list_id_header(list_name, newsletter.from_name, newsletter.from_email) if list_name and not proof else ""
    head = _shared_head(newsletter, None if subject_parts else subject, slug, boundary, proof, issue.language,
                        list_id)
    return Edition(slug=slug, subject=subject, from_email=newsletter.from_email,
                   from_name=_one_line(newsletter.from_name), reply_to=newsletter.reply_to,
                   base_url=base_url, domain=newsletter.from_email.rpartition("@")[2],
                   html=body_html, text=text, fields=fields, nonce=nonce or secrets.token_hex(6),
                   proof=proof, head=head, subject_parts=subject_parts,
                   text_parts=_qp_template(text, "text", fields),
                   html_parts=_qp_template(body_html, "html", fields), boundary=boundary,
                   language=issue.language, list_id=list_id, browser_link=browser_link)


def personalize(edition: Edition, recipient: Recipient) -> Outgoing:
    """One reader's message; raises PermanentDelivery if the address cannot be written safely."""
    ref = _check_ref(recipient.ref, "recipient ref")
    track = ""
    if edition.tracker is not None:
        if recipient.tracked:
            track = edition.tracker.copy_part(recipient.subscriber_id)
        else:
            edition = edition.untracked or edition
    url = edition.unsubscribe_url(recipient.unsubscribe_token or "none")  # checked: so is the preferences URL
    if len(url) > _MAX_URL or not _URL_CHARS.fullmatch(url):
        raise PermanentDelivery(f"unsubscribe URL for {ref} is not a safe header value", backend="personalize")
    token = recipient.unsubscribe_token or "none"
    return Outgoing(edition=edition, ref=ref, email=ascii_address(recipient.email),
                    name=clean_name(recipient.name), unsubscribe_url=url,
                    message_id=f"<{edition.slug}.{ref}.{edition.nonce}@{edition.domain}>",
                    preferences_url=f"{edition.base_url}/preferences/{token}", track=track)


def clean_name(raw: str | None) -> str:
    """A display name with no control characters, single spaces, no '%%', at most 200 characters."""
    cleaned = " ".join(CONTROL.sub(" ", raw or "").split()).replace("%%", "%")
    return cleaned[:_MAX_NAME].strip()


def ascii_address(raw: str) -> str:
    """A plain ASCII addr-spec (subscribers.normalize.ascii_address), or PermanentDelivery naming
    the culprit."""
    try:
        return normalize.ascii_address(raw)
    except InvalidAddress:
        raise PermanentDelivery(f"cannot address {raw!r}: not a plain ASCII address "
                                "(SMTPUTF8 is not supported)", backend="personalize") from None


def display_to(name: str, address: str) -> str:
    """The To value: `name <address>` with the name as atoms, a quoted-string or encoded-words."""
    if not name:
        return address
    return f"{_phrase(name)} <{address}>"


# --- internals ---------------------------------------------------------------------------------

def _render(out: Outgoing, date: datetime):
    ed = out.edition
    yield (f"Date: {format_datetime(date)}\r\nMessage-ID: {out.message_id}\r\n"
           f"To: {display_to(out.name, out.email)}\r\n").encode("ascii")
    yield ed.head
    if ed.subject_parts:
        yield _subject_header(out.subject()).encode("ascii")
    yield (f"List-Unsubscribe: <{out.unsubscribe_url}>\r\n{REF_HEADER}: {out.ref}\r\n\r\n"
           f"--{ed.boundary}\r\n").encode("ascii")
    yield _PART_HEAD.format(subtype="plain").encode("ascii")
    yield from _splice(ed.text_parts, out, "text")
    yield f"\r\n--{ed.boundary}\r\n{_PART_HEAD.format(subtype='html')}".encode("ascii")
    yield from _splice(ed.html_parts, out, "html")
    yield f"\r\n--{ed.boundary}--\r\n".encode("ascii")


_PART_HEAD = ('Content-Type: text/{subtype}; charset="utf-8"\r\n'
              "Content-Transfer-Encoding: quoted-printable\r\n\r\n")


def _splice(parts: tuple, out: Outgoing, part: str):
    done: dict[str, bytes] = {}    # a field used many times (a tracked issue's links) is encoded once
    for i, piece in enumerate(parts):
        if i % 2 == 0:
            yield piece
        elif piece in done:
            yield done[piece]
        else:
            value = out.value(piece, part)
            # a soft line break after the value keeps QP lines <= 76 (RFC 2045 6.7)
            done[piece] = encoded = _qp(value) + b"=\r\n" if value else b""
            yield encoded


def _qp_template(body: str, part: Part, fields: tuple[str, ...]) -> tuple:
    """Split `body` at its per-recipient markers; QP-encode each literal piece once.

    Each piece that does not end a line ends with a soft line break, so a value spliced in later
    starts on a fresh line and can never push a line past 76 characters or split an escape.
    """
    names = {marker(f, part): f for f in fields}
    if not names:
        return (_qp(body),)
    pattern = re.compile("(" + "|".join(re.escape(m) for m in names) + ")")
    pieces = pattern.split(body)
    out: list = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(names[piece])
            continue
        encoded = _qp(piece)
        if i < len(pieces) - 1 and encoded and not encoded.endswith(b"\r\n"):
            encoded += b"=\r\n"
        out.append(encoded)
    return tuple(out)


def _qp(text: str) -> bytes:
    latin = text.encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(latin, 76, "\r\n").encode("ascii")


def _phrase(name: str) -> str:
    if name.isascii() and "=?" not in name:
        if _ATOM_PHRASE.fullmatch(name):
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(name)


def _encoded_words(text: str) -> str:
    """RFC 2047 B encoding, each word <= 75 characters and whole characters only (section 5)."""
    words, chunk = [], b""
    for ch in text:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > 45:  # 45 bytes -> 60 base64 chars -> 72-character word
            words.append(chunk)
            chunk = b""
        chunk += b
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _shared_head(newsletter: NewsletterSettings, subject: str | None, slug: str, boundary: str,
                 proof: bool, language: str, list_id: str = "") -> bytes:
    sender = Address(_one_line(newsletter.from_name), addr_spec=ascii_address(newsletter.from_email))
    lines = [_fold("From", sender), _fold("Reply-To", Address(addr_spec=ascii_address(newsletter.reply_to))),
             _fold("Subject", subject) if subject is not None else "", "MIME-Version: 1.0\r\n",
             f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
             f"Content-Language: {_check_language(language)}\r\n",   # RFC 3282: the footer's and system mails' language
             f"List-Unsubscribe-Post: {ONE_CLICK}\r\n", f"{ISSUE_HEADER}: {slug}\r\n"]
    if list_id:            # RFC 2919; Precedence: bulk keeps many vacation replies away (RFC 3834 section 2)
        lines += [_fold("List-Id", list_id), "Precedence: bulk\r\n"]
    if proof:
        lines.append("X-Mailer-Proof: yes\r\n")
    return "".join(lines).encode("ascii")


def _subject_header(subject: str) -> str:
    """A per-reader Subject header, folded by hand: email.policy's folder costs more than the
    rest of a message (docs/decisions.md). ASCII is folded at spaces (lines <= 78); anything else, or
    text that looks like an encoded-word, is written as RFC 2047 encoded-words."""
    if not subject.isascii() or "=?" in subject:
        return f"Subject: {_encoded_words(subject)}\r\n"
    lines, line = [], "Subject:"
    for word in subject.split(" "):
        if len(line) + 1 + len(word) > 78 and line.strip() and line != "Subject:":
            lines.append(line)
            line = ""
        line += " " + word
    return "\r\n".join([*lines, line]) + "\r\n"


def _fold(name: str, value) -> str:
    return _POLICY.fold(*_POLICY.header_store_parse(name, value))


def _one_line(text: str) -> str:
    return " ".join(CONTROL.sub(" ", text or "").split())


def _check_ref(value: str, what: str) -> str:
    if not _REF.fullmatch(value or ""):
        raise ValueError(f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 . _ = -")
    return value


def _check_language(language: str) -> str:
    if not _LANGUAGE.fullmatch(language):
        raise ValueError(f"language {language!r} is not a language tag such as fr or pt-BR")
    return language


def _check_base_url(url: str) -> str:
    url = url.rstrip("/")
    if not _URL_CHARS.fullmatch(url):
        raise ConfigError(f"[newsletter] base_url {url!r} must be plain ASCII with no spaces")
    if not url.startswith("https://"):
        warnings.warn(f"[newsletter] base_url {url} is not https: mailbox providers will not offer "
                      "one-click unsubscribe (RFC 8058); fine for local use only",
                      UnsafeUnsubscribeUrl, stacklevel=4)
    return url


assert set(PER_RECIPIENT) < set(FIELDS)
