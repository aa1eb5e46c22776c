"""CSV file -> header mapping + stream of raw rows with line numbers; cell <-> spreadsheet-safe cell.

Accepts what admins really have: UTF-8 with or without BOM, comma, semicolon or tab, quoted fields
with delimiters and line breaks, blank lines, and a Mailchimp audience export as it is ("Email
Address", "First Name", "Last Name"; its bookkeeping columns, MAILCHIMP_BOOKKEEPING, are left out;
every other column becomes an attribute).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from subscribers.errors import CsvImportError

if TYPE_CHECKING:
    from _csv import Reader  # what csv.reader returns

EMAIL = ("email", "e-mail", "email address", "e-mail address", "email_address", "emailaddress")
NAME = ("name", "full name", "full_name", "fullname")
FIRST = ("first name", "first_name", "firstname", "fname", "given name")
LAST = ("last name", "last_name", "lastname", "lname", "surname", "family name")
STATUS = ("status",)
SUBSCRIBED_AT = ("subscribed_at", "subscribed at")
TAGS = ("tags",)                     # ours, and Mailchimp's TAGS ("a","b")
# Mailchimp's consent record: the signup (OPTIN) and the double opt-in click (CONFIRM).
CONSENT = ("optin_time", "optin_ip", "confirm_time", "confirm_ip")
# Mailchimp's own bookkeeping in an audience export: its ids, its rating, the location and time zone
# it guessed, its change time and notes, and where an unsubscribe or clean-up came from. Not the
# reader's data: left out when the header is a Mailchimp export's (it has one of MAILCHIMP_MARKS),
# so a file of our own with a `region` or `notes` column keeps it.
MAILCHIMP_MARKS = ("leid", "euid", "member_rating")
MAILCHIMP_BOOKKEEPING = ("member_rating", "leid", "euid", "latitude", "longitude", "gmtoff", "dstoff",
                         "timezone", "cc", "region", "last_changed", "notes", "unsub_time",
                         "unsub_campaign_title", "unsub_campaign_id", "clean_time", "clean_campaign_title",
                         "clean_campaign_id")

# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): = + - @ tab CR.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: str) -> str:
    """Prefix a quote to a formula-looking cell (and to one that already starts with quotes
    before such a character, so `restore` gives back exactly what was stored)."""
    if value and value.lstrip("'").startswith(FORMULA_START):
        return "'" + value
    return value


def restore(value: str) -> str:
    """Undo `neutralize`, so an export imports back unchanged."""
    if value.startswith("'") and value.lstrip("'").startswith(FORMULA_START):
        return value[1:]
    return value


@dataclass
class Columns:
    """Where each known field is in the header (0-based), and the attribute columns."""

    header: list[str]
    email: int
    name: int | None = None
    first: int | None = None
    last: int | None = None
    status: int | None = None
    subscribed_at: int | None = None
    tags: int | None = None
    consent: tuple[int | None, ...] = (None, None, None, None)   # CONSENT's columns, where present
    attributes: list[tuple[int, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)   # Mailchimp's bookkeeping columns, as named in the header


def check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 before anything is written, naming the line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, done = 1, b""
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise CsvImportError(f"not UTF-8 (byte {block[exc.start]:#04x}); save the file as UTF-8 and "
                                     f"import again", path=str(path),
                                     line=line + block[:exc.start].count(b"\n")) from None
            line += block.count(b"\n")
        try:
            decoder.decode(done, final=True)
        except UnicodeDecodeError:
            raise CsvImportError("not UTF-8 (the file ends inside a character)", path=str(path), line=line) from None


def _delimiter(path: Path) -> str:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for first in fh:
            if first.strip():
                break
        else:
            raise CsvImportError("the file is empty (a header line is needed)", path=str(path))
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def map_columns(header: list[str], path: Path) -> Columns:
    names = [h.strip().lstrip("\ufeff") for h in header]
    lower = [h.lower() for h in names]

    def find(options):
        for option in options:
            if option in lower:
                return lower.index(option)
        return None

    email = find(EMAIL)
    if email is None:
        raise CsvImportError(f"no address column: the header needs one of {', '.join(repr(o) for o in EMAIL[:3])} "
                             f"(found {', '.join(repr(n) for n in names) or 'nothing'})", path=str(path), line=1)
    cols = Columns(names, email, find(NAME), find(FIRST), find(LAST), find(STATUS), find(SUBSCRIBED_AT),
                   find(TAGS), tuple(find((c,)) for c in CONSENT))
    taken = {cols.email, cols.name, cols.first, cols.last, cols.status, cols.subscribed_at, cols.tags, *cols.consent}
    if any(mark in lower for mark in MAILCHIMP_MARKS):
        cols.ignored = [names[i] for i, name in enumerate(lower) if name in MAILCHIMP_BOOKKEEPING and i not in taken]
        taken |= {i for i, name in enumerate(lower) if name in MAILCHIMP_BOOKKEEPING}
    used: set[str] = set()
    tried: dict[str, int] = {}          # per name, the next "(n)" to try: 20,000 columns `x` stay linear
    for i, name in enumerate(names):
        if i in taken:
            continue
        base = name or f"column {i + 1}"
        key = base
        while key in used:  # two columns with one name: keep both
            n = tried.get(base, 2)
            tried[base] = n + 1
            key = f"{base} ({n})"
        used.add(key)
        cols.attributes.append((i, key))
    return cols


@dataclass
class CsvSource:
    """An open CSV file: `columns`, `rows()` as (first line, cells), and `position()` in bytes."""

    path: Path
    check_encoding: bool = True
    columns: Columns = field(init=False)          # these three are set by __enter__
    _raw: io.BufferedReader = field(init=False)
    _reader: Reader = field(init=False)
    _last_line: int = 0  # the physical line the previous record ended on

    def __enter__(self) -> CsvSource:
        if self.check_encoding:
            check_utf8(self.path)
        delimiter = _delimiter(self.path)
        self._raw = open(self.path, "rb")
        try:
            text = io.TextIOWrapper(self._raw, encoding="utf-8-sig", newline="")
            self._reader = csv.reader(text, delimiter=delimiter)
            for _line, header in self._records():
                self.columns = map_columns(header, self.path)
                break
            else:   # only blank lines, or lines of empty cells (",,,")
                raise CsvImportError("the file is empty (a header line is needed)", path=str(self.path))
        except BaseException:   # a bad header: __exit__ will not run, so close here
            self._raw.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def position(self) -> int:
        return self._raw.tell()

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        reader = self._reader
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvImportError(f"not readable as CSV: {exc}", path=str(self.path),
                                     line=self._last_line + 1) from None
            first, self._last_line = self._last_line + 1, reader.line_num
            if cells and "".join(cells).strip():  # blank lines (and lines of empty cells) skip
                yield first, cells

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line where the record starts, cells) for every non-blank record after the header."""
        return self._records()
