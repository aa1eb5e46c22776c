"""Values that cross stage boundaries: what compose hands to personalize and deliver.

The issue is composed once. Its HTML and text carry markers for the per-recipient fields, which
`personalize` fills in cheaply (string replacement, never MJML or premailer again) and which the
SendGrid backend passes as `substitutions`. HTML and text use different markers so that a value
can be HTML-escaped in one part and left as it is in the other, even when the provider fills them.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

# Per-recipient fields, filled after composing.
# `track` is the copy's half of its tracked links' tokens (mailer/compose/tracking.py).
FIELDS = ("name", "first_name", "email", "unsubscribe_url", "archive_url", "preferences_url", "track")
# The merge fields an editor may write in an issue's body and subject, as `{{ first_name }}` or
# `{{ first_name | default("reader") }}` (mailer.compose.source turns them into markers; docs/editor.md).
MERGE_FIELDS = ("name", "first_name", "email")

Part = Literal["html", "text"]

# The unsubscribe and preferences "token" of copies that go to staff, not readers: a proof
# (mailer issue proof, the admin's, the scheduler's) and a scheduler's notice. No signed token is
# ever one of these words; their links open a page that says what the link does for a reader
# (mailer/web/staff_copies.py).
STAFF_TOKENS = ("proof", "copy")

# SendGrid custom_args naming the issue and the delivery; SendGrid merges them into every webhook
# event, which is how events find their way back (deliver/sendgrid.py writes, events/ reads).
ISSUE_ARG = "mailer_issue"
REF_ARG = "mailer_ref"


def marker(field: str, part: Part) -> str:
    """The placeholder for `field` in the HTML or text part: `%%name%%` / `%%name:html%%`.

    `field` may carry a fallback, `first_name~cmVhZGVy` (see `with_default`)."""
    if field.partition("~")[0] not in FIELDS:
        raise KeyError(field)
    return f"%%{field}:html%%" if part == "html" else f"%%{field}%%"


def with_default(field: str, default: str) -> str:
    """`first_name` with fallback "reader" as one marker name: the fallback travels inside the
    marker (base64url, so any text is safe in HTML, QP and JSON), and every stage that fills
    markers (preview, archive, personalize, SendGrid substitutions) needs nothing else."""
    encoded = base64.urlsafe_b64encode(default.encode("utf-8")).decode("ascii").rstrip("=")
    return f"{field}~{encoded}"


def field_value(spec: str, values) -> str:
    """The value of marker name `spec` ("email", "first_name~cmVhZGVy") for one reader:
    `values(field)` gives a field's value; an empty one falls back to the spec's default."""
    field, _, encoded = spec.partition("~")
    value = values(field)
    if value or not encoded:
        return value
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


# Every marker of a part, fallbacks included: `%%first_name~cmVhZGVy:html%%`.
MARKER = {"html": re.compile(r"%%((?:" + "|".join(FIELDS) + r")(?:~[A-Za-z0-9_-]*)?):html%%"),
          "text": re.compile(r"%%((?:" + "|".join(FIELDS) + r")(?:~[A-Za-z0-9_-]*)?)%%")}


def fill(text: str, values: dict[str, str], part: Part) -> str:
    """Replace every marker of one part from `values` (field -> raw value); HTML-escaped in HTML."""
    def value(found) -> str:
        raw = field_value(found.group(1), lambda f: values.get(f, ""))
        return html.escape(raw, quote=True) if part == "html" else raw

    return MARKER[part].sub(value, text) if "%%" in text else text


def as_written(text: str) -> str:
    """A subject (or any text with merge-field markers) as the editor wrote it: `%%first_name~cmVhZGVy%%`
    -> `{{ first_name | default("reader") }}`, `%%email%%` -> `{{ email }}`. Everywhere an
    operator reads a subject (the CLI, the scheduler's log and notices, the admin) shows this,
    never the markers nor a reader's values."""
    def written(found) -> str:
        field, _, encoded = found.group(1).partition("~")
        if not encoded:
            return "{{ %s }}" % field
        default = field_value(found.group(1), lambda f: "")
        quote = "'" if '"' in default else '"'
        return "{{ %s | default(%s%s%s) }}" % (field, quote, default, quote)

    if "%%" not in text:
        return text
    return MARKER["text"].sub(written, MARKER["html"].sub(written, text))


def first_name(name: str) -> str:
    """`{{ first_name }}`: the first word of the reader's name ("Ann" for "Ann Lee")."""
    return name.split(maxsplit=1)[0] if name and name.strip() else ""


@dataclass(frozen=True)
class ComposedIssue:
    """One issue, composed once: MJML source, final inlined HTML and text, both with markers."""

    slug: str          # "2024-11", from the file name; names the archive page and the ledger
    subject: str
    preheader: str
    mjml: str
    html: str
    text: str
    date: dt.date | None = None   # the issue's date (front matter); None for mails that are not issues
    language: str = "en"          # what its own words (the footer, a system mail) are written in: Content-Language
    archive: bool = True          # the issue file's `archive` setting: False keeps it off /archive


class ArchiveCopy(NamedTuple):
    """What a send stores for /archive/ISSUE when it starts (mailer.compose.archived makes it,
    mailer.send.ledger keeps it on the send's row)."""
    html: str
    text: str
    date: dt.date | None
    preheader: str
    listed: bool = True     # False: the issue file said `archive = false` (sends.archive)
