"""Finding people by any part of a name or an address, in any script, on both databases.

    matches("Lee", dialect)       # a WHERE clause: "Ann Lee", "lee@example.org", "Ødegaard", "bücher"

- SQLite: `subscribers.search` holds the name and the address casefolded (Unicode NFKC, then
  `str.casefold`, so "Ødegaard", "МАРИЯ" and "Łukasz" fold as Python folds them; SQLite's own
  lower() folds ASCII only), the address once with its domain in Unicode and once as stored
  (punycode), one per line. It is written wherever a subscriber's name or address is
  (subscribers/store.py, subscribers/importer.py) and filled for existing rows by migration
  0014_i24b. `subscribers_search` (migration 0016_i24c, FTS5 with the trigram tokenizer) indexes
  "\n" + that column, kept in step by triggers; a quoted phrase of three characters or more is a
  substring match through it. A row whose `search` an older version left empty is still found
  by the start of its address and ASCII name.
- PostgreSQL: `lower(coalesce(name, '') || ' ' || email)` (lower() folds every script in a UTF-8
  database) under a pg_trgm GIN index (migration 0014_i24b), which answers `LIKE '%text%'`
  for three characters or more; `@text` is a range of the btree on the address from its "@"
  (0016_i24c). Without pg_trgm the search scans the table.

What matches (the same on both; docs/admin.md says why):
- three characters or more: anywhere in the name or the address;
- `@text` (three characters or more): where the domain starts (an address holds one "@"; on
  SQLite a name holding it too);
- two characters: where the name, a word of it (after a space), the address or its domain starts
  (SQLite: the phrases "\nxy", " xy" and "@xy"; "le" finds "Ann Lee", not every "example");
- one character: where the address or the name starts.
The typed text is matched as written and, when it holds non-ASCII domain labels, with those
labels in punycode, so "bücher" finds `…@xn--bcher-kva.example` on both.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import Integer, String, and_, column, false, func, literal_column, or_, select, table

from subscribers.models import subscribers
from subscribers.normalize import display_email

SHORT = 3                  # characters: what one trigram needs
WORD_STARTS = ("\n", " ", "@")   # before a line (name, address), a word, a domain in `search`
FTS = "subscribers_search"       # SQLite's trigram index of `search` (migration 0016_i24c)


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


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str) -> str:
    return "%" + _escape_like(text) + "%"


def prefix(column, text: str, dialect: str):
    """`column` starts with `text`, in a form the column's index answers on either database."""
    if dialect == "postgresql":
        return column.like(_escape_like(text) + "%", escape="\\")
    upper = _next_prefix(text)
    return column >= text if upper is None else and_(column >= text, column < upper)


def _next_prefix(text: str) -> str | None:
    """The first string after every string that starts with `text` (None: there is none, `text`
    being U+10FFFF only); never a surrogate, which SQLite could not be given."""
    stripped = text.rstrip("\U0010ffff")
    if not stripped:
        return None
    after = ord(stripped[-1]) + 1
    return stripped[:-1] + chr(0xE000 if 0xD800 <= after <= 0xDFFF else after)


def pg_expression():
    """The expression the trigram index of migration 0014_i24b is built on (keep them equal). Its
    constants are written out, not bound: a prepared statement's generic plan would not see
    `coalesce(name, $1)` as the indexed expression."""
    return literal_column("lower(coalesce(subscribers.name, '') || ' ' || subscribers.email)", String)


def pg_domain():
    """The address from its "@" on: the expression of migration 0016_i24c's index (keep them equal),
    so "@example.org" (or "@exa") is a range of that index, not an intersection of trigrams that
    nearly every address holds."""
    return literal_column("substr(subscribers.email, strpos(subscribers.email, '@'))", String)


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _starts(found: list[str]):
    """One character: the address or the name starts with it (their indexes, m0006_admin_users)."""
    return [arm for f in found for arm in (prefix(subscribers.c.email, f, "sqlite"),
                                           prefix(func.lower(subscribers.c.name), f, "sqlite"))]


def _sqlite(found: list[str], limit: int | None):
    phrases = [p for f in found for p in ([f] if len(f) >= SHORT else [sep + f for sep in WORD_STARTS]
                                          if len(f) == SHORT - 1 else [])]
    arms = _starts([f for f in found if len(f) < SHORT - 1])
    if phrases:
        index = table(FTS, column("rowid", Integer))
        match = literal_column(FTS).op("MATCH")(" OR ".join(map(_phrase, phrases)))
        hits = select(index.c.rowid).where(match)
        arms.append(subscribers.c.id.in_(hits if limit is None else hits.limit(limit)))
    return or_(*arms)


def _postgresql(found: list[str]):
    expression = pg_expression()
    arms = []
    for f in found:
        if len(f) >= SHORT:         # "@...": where the domain starts (an address holds one @)
            arms.append(prefix(pg_domain(), f, "postgresql") if f.startswith("@") else
                        expression.like(_like(f), escape="\\"))
        else:   # the name or the address starts with it; with two, also a word after a space, a domain
            arms += [prefix(subscribers.c.email, f, "postgresql"), prefix(func.lower(subscribers.c.name), f,
                                                                          "postgresql")]
            if len(f) == SHORT - 1:
                arms += [expression.like("%" + _escape_like(" " + f) + "%", escape="\\"),
                         prefix(pg_domain(), "@" + f, "postgresql")]
    return or_(*arms)


def contains(text: str, dialect: str, limit: int | None = None):
    """Subscribers whose name or address contains `text`, in any case and script; a text of one or
    two characters matches only where a name, a word of it, an address or a domain starts (the
    module's docstring). With `limit` (when nothing else filters the rows), SQLite's index stops
    after that many hits, as a capped count or a capped page needs: any more is not read."""
    found = sorted(f for f in forms(text) if f)
    if not found:
        return false()
    return _postgresql(found) if dialect == "postgresql" else _sqlite(found, limit)


def matches(text: str, dialect: str, limit: int | None = None):
    """`contains`, with the address and name prefix arms that let their indexes answer "starts
    with" at once (and that find a row whose `search` an older version left empty)."""
    typed = text.strip()
    folded = typed.lower()
    if folded.startswith("@"):
        return contains(typed, dialect, limit)
    return or_(prefix(subscribers.c.email, folded, dialect), prefix(func.lower(subscribers.c.name), folded, dialect),
               contains(typed, dialect, limit))
