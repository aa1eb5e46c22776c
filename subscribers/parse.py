"""CSV records (line, cells) -> validated rows, merged to one per address within a chunk.

The importer's per-row work, kept free of the database: address normalization (normalize.py's
fast path), names and attributes cleaned to one printable line, exported formula guards undone,
and a per-row `status` / `subscribed_at` when the file has those columns (our own exports do).
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from json.encoder import (  # type: ignore[attr-defined]  # CPython's _json accelerators: not in the stubs
    c_encode_basestring,
    c_make_encoder,
)

from subscribers.csvfile import CONSENT, Columns, restore
from subscribers.errors import InvalidAddress
from subscribers.models import Status
from subscribers.normalize import clean_text, deliverable, normalize_email
from subscribers.tags import parse_cell as parse_tags

# Row.status holds the plain string value (hot path: no enum lookups per row).
_ACTIVE, _UNCONFIRMED = Status.ACTIVE.value, Status.UNCONFIRMED.value
FILE_STATUS = {
    **{s.value: s.value for s in Status},
    "subscribed": _ACTIVE, "pending": _UNCONFIRMED,
    "cleaned": Status.BOUNCED.value,  # Mailchimp's word for a bounced address
}
MAX_ATTRIBUTE = 1000
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _make_encode():
    """The encoder's C iterator, built once: JSONEncoder.encode builds a new one on every call,
    most of its cost for a small dict (docs/decisions.md). Same output; no circular-reference markers,
    which a flat {str: str} dict of attributes does not need."""
    if c_make_encoder is None or c_encode_basestring is None:  # no _json accelerator
        return _encoder.encode
    iterate = c_make_encoder(None, _encoder.default, c_encode_basestring, None, ":", ",", False, False, True)
    return lambda attrs: "".join(iterate(attrs, 0))


_encode = _make_encode()


class Row:
    """One address's data from the file (after merging its duplicates).

    `attrs` is a dict while parsing; rows sent from the reader process carry only their JSON
    text (`attrs_json`, made there, on the other core) and decode it when needed.
    """

    __slots__ = ("line", "email", "name", "attrs", "status", "consent_at", "_json", "tags", "consent")

    def __init__(self, line: int, email: str, name: str, attrs: dict | None, status: str, consent_at,
                 attrs_json: str | None = None, tags: tuple[str, ...] = (), consent: tuple | None = None):
        self.line, self.email, self.name, self.attrs = line, email, name, attrs
        self.status, self.consent_at, self._json = status, consent_at, attrs_json
        self.tags = tags          # normalized (subscribers.tags), sorted
        self.consent = consent    # (optin_at, optin_ip, confirm_at, confirm_ip) from the file, or None

    @property
    def attrs_json(self) -> str:
        if self._json is None:
            self._json = "{}" if not self.attrs else _encode(self.attrs)
        return self._json

    def attributes(self) -> dict:
        if self.attrs is None:
            self.attrs = json.loads(self._json) if self._json else {}
        return self.attrs

    def as_tuple(self) -> tuple:
        """What goes through the pipe: Row(*row.as_tuple()) rebuilds it."""
        return (self.line, self.email, self.name, None, self.status, self.consent_at, self.attrs_json,
                self.tags, self.consent)

    def fill_from(self, other: Row) -> None:
        """A later duplicate only fills what the first occurrence left blank (tags: adds its own)."""
        self.name = self.name or other.name
        self.consent = self.consent or other.consent
        if other.tags:
            self.tags = tuple(sorted(set(self.tags) | set(other.tags)))
        attrs = self.attributes()
        for key, value in other.attributes().items():
            attrs.setdefault(key, value)


def _cell(value: str) -> str:
    return restore(value) if value[:1] == "'" else value


class RowParser:
    """Parses records for one file; invalid rows go to `summary.add_invalid(line, email, reason)`."""

    def __init__(self, cols: Columns, summary, default_status: Status | str = Status.ACTIVE, check_dns: bool = False):
        self.cols, self.summary = cols, summary
        self.default_status, self.check_dns = Status(default_status).value, check_dns
        self.width = len(cols.header)
        self.has_consent = any(i is not None for i in cols.consent)

    def parse(self, line: int, cells: list[str]) -> Row | None:
        cols, n = self.cols, len(cells)
        raw = _cell(cells[cols.email]) if cols.email < n else ""
        if n > self.width and "".join(cells[self.width:]).strip():
            self._invalid(line, raw, f"{n} fields but the header has {self.width} (a stray delimiter or quote?)")
            return None
        try:
            email = deliverable(normalize_email(raw, check_dns=self.check_dns))
        except InvalidAddress as exc:
            self._invalid(line, raw, exc.reason)
            return None
        status = self._status(cells, n)
        if status is None:
            assert cols.status is not None   # only a status cell's word can be unknown
            word = cells[cols.status].strip()
            self._invalid(line, raw, f"unknown status {word!r} (one of {', '.join(FILE_STATUS)})")
            return None
        attrs = {}
        for i, key in cols.attributes:
            if i < n and (value := cells[i]) and not value.isspace():  # _cell(), inlined: per cell
                attrs[key] = clean_text(restore(value) if value[0] == "'" else value, MAX_ATTRIBUTE)
        at = cols.subscribed_at
        consent_at = self._subscribed_at(cells, at, n, attrs) if at is not None else None
        tags = parse_tags(cells[cols.tags]) if cols.tags is not None and cols.tags < n else ()
        consent = self._consent(cells, n, attrs) if self.has_consent else None
        if consent and consent_at is None:
            consent_at = consent[2] or consent[0]   # confirmed when, else asked when
        return Row(line, email, clean_text(self._name(cells, n)), attrs, status, consent_at, None, tags, consent)

    def merge(self, chunk: list[tuple[int, list[str]]]) -> dict[str, Row]:
        """Parse a chunk of records into {address: Row}; duplicates fold into their first row."""
        rows: dict[str, Row] = {}
        summary = self.summary
        for line, cells in chunk:
            summary.rows += 1
            row = self.parse(line, cells)
            if row is None:
                continue
            first = rows.get(row.email)
            if first is None:
                rows[row.email] = row
            else:
                first.fill_from(row)
                summary.duplicates += 1
        return rows

    def _invalid(self, line: int, raw: str, reason: str) -> None:
        self.summary.add_invalid(line, clean_text(raw, 320), reason)

    def _name(self, cells: list[str], n: int) -> str:
        cols = self.cols
        if cols.name is not None:
            return _cell(cells[cols.name]) if cols.name < n else ""
        first = _cell(cells[cols.first]) if cols.first is not None and cols.first < n else ""
        last = _cell(cells[cols.last]) if cols.last is not None and cols.last < n else ""
        return f"{first} {last}" if first and last else first or last

    def _status(self, cells: list[str], n: int) -> str | None:
        i = self.cols.status
        word = cells[i].strip().lower() if i is not None and i < n else ""
        if not word:
            return self.default_status
        status = FILE_STATUS.get(word)
        if status == _ACTIVE and self.default_status == _UNCONFIRMED:
            return _UNCONFIRMED  # --unconfirmed caps what the file claims
        return status

    def _subscribed_at(self, cells: list[str], i: int, n: int, attrs: dict) -> datetime | None:
        value = cells[i].strip() if i < n else ""
        if not value:
            return None
        when = parse_time(value)
        if when is None:
            attrs["subscribed_at (as given)"] = clean_text(value, MAX_ATTRIBUTE)  # keep what we cannot read
        return when

    def _consent(self, cells: list[str], n: int, attrs: dict) -> tuple | None:
        """(optin_at, optin_ip, confirm_at, confirm_ip) from Mailchimp's columns; None when all are
        blank. A time we cannot read is kept as an attribute, an address that is not an IP dropped."""
        values: list[datetime | str | None] = []
        for (i, column) in zip(self.cols.consent, CONSENT, strict=True):
            value = _cell(cells[i]).strip() if i is not None and i < n else ""
            if column.endswith("_time"):
                when = parse_time(value) if value else None
                if i is not None and value and when is None:
                    attrs[f"{self.cols.header[i]} (as given)"] = clean_text(value, MAX_ATTRIBUTE)
                values.append(when)
            else:
                values.append(_ip(value))
        return tuple(values) if any(v is not None for v in values) else None


def membership_consent(consent: tuple | None) -> tuple:
    """(consent_ip, optin_at, optin_ip) for a new membership from the file's consent record
    (Mailchimp's OPTIN_TIME, OPTIN_IP, CONFIRM_TIME, CONFIRM_IP); consent_at is the row's."""
    if not consent:
        return (None, None, None)
    optin_at, optin_ip, _confirm_at, confirm_ip = consent
    return (confirm_ip or optin_ip, optin_at, optin_ip)


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def parse_time(value: str) -> datetime | None:
    """ISO 8601 (our exports write it); a time without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
