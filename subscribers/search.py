"""Finding people by any part of a name or an address, in any script, on both databases.

    contains("Lee", dialect)      # a WHERE clause: "Ann Lee", "lee@example.org", "Ødegaard", "bücher"

- SQLite: `subscribers.search` holds the name and the address casefolded (Unicode NFKC, then
  `str.casefold`, so "Ødegaard", "МАРИЯ" and "Łukasz" fold as Python folds them; SQLite's own
  lower() folds ASCII only), the address once with its domain in Unicode and once as stored
  (punycode). It is written wherever a subscriber's name or address is (subscribers/store.py,
  subscribers/importer.py) and filled for existing rows by migration 0014_i24b. A row without it
  (written by an older version) is still found by its address and ASCII name.
- PostgreSQL: `lower(coalesce(name, '') || ' ' || email)` (lower() folds every script in a UTF-8
  database) under a pg_trgm GIN index (migration 0014_i24b), which answers `LIKE '%text%'`
  for three characters or more; shorter text, or a database without pg_trgm, scans the table.

The typed text is matched as written and, when it holds non-ASCII domain labels, with those
labels in punycode, so "bücher" finds `…@xn--bcher-kva.example` on both.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import String, and_, func, literal_column, or_

from subscribers.models import subscribers
from subscribers.normalize import display_email


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").casefold()


def search_text(email: str | None, name: str | None) -> str | None:
    """The value of `subscribers.search` for this address and name."""
    if not email:
        return None
    shown = display_email(email)
    return "\n".join(dict.fromkeys((fold(name or ""), fold(shown), email.lower())))


def forms(text: str) -> set[str]:
    """The typed text as stored forms: as written (folded) and with IDN labels in punycode."""
    typed = text.strip()
    found = {fold(typed), typed.lower()}
    if typed.isascii():
        return found
    local, at, domain = typed.lower().rpartition("@")
    labels = []
    for label in domain.split("."):
        try:
            labels.append(label if label.isascii() else label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append(label)
    found.add(f"{local}{at}{'.'.join(labels)}")
    if not at:   # a fragment without @ may be a domain's label alone ("bücher")
        try:
            found.add(typed.lower().encode("idna").decode("ascii"))
        except UnicodeError:
            pass
    return found


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def pg_expression():
    """The expression the trigram index of migration 0014_i24b is built on (keep them equal). Its
    constants are written out, not bound: a prepared statement's generic plan would not see
    `coalesce(name, $1)` as the indexed expression."""
    return literal_column("lower(coalesce(subscribers.name, '') || ' ' || subscribers.email)", String)


def contains(text: str, dialect: str):
    """Subscribers whose name or address contains `text`, in any case and script."""
    found = [f for f in forms(text) if f]
    if dialect == "postgresql":
        expression = pg_expression()
        return or_(*(expression.like(_like(f), escape="\\") for f in found))
    column = subscribers.c.search
    older = and_(column.is_(None), or_(*(c.like(_like(f), escape="\\") for f in found
                                         for c in (subscribers.c.email, func.lower(subscribers.c.name)))))
    return or_(*(column.like(_like(f), escape="\\") for f in found), older)
