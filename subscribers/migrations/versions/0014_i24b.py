"""Finding people by any part of a name or an address, in any script (subscribers/search.py).

Revision ID: 0014_i24b
Revises: 0008_tag_order
Create Date: 2026-12-08

SQLite: the `search` column (name and address casefolded, the address also with its domain in
Unicode), filled here for every existing row. PostgreSQL: pg_trgm's GIN index on
`lower(coalesce(name, '') || ' ' || email)`, which answers `LIKE '%text%'`; where the extension
cannot be created (not installed, or the role may not), a warning says so and the search scans
the table. Frozen snapshot: the folding is written out here, not imported.
"""

import unicodedata
import warnings

import idna
import sqlalchemy as sa
from alembic import op

revision = "0014_i24b"
down_revision = "0015_i28"
branch_labels = None
depends_on = None

INDEX = "ix_subscribers_search_trgm"
BATCH = 5000


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").casefold()


def _shown(email: str) -> str:
    local, _, domain = email.rpartition("@")
    if "xn--" not in domain:
        return email
    try:
        return f"{local}@{idna.decode(domain)}"
    except idna.IDNAError:
        return email


def _search(email: str, name: str | None) -> str:
    return "\n".join(dict.fromkeys((_fold(name or ""), _fold(_shown(email)), email.lower())))


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("search", sa.Text(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _trigram_index(bind)
        return
    table = sa.table("subscribers", sa.column("id", sa.Integer), sa.column("email", sa.String),
                     sa.column("name", sa.String), sa.column("search", sa.Text))
    last = 0
    while True:
        rows = bind.execute(sa.select(table.c.id, table.c.email, table.c.name).where(table.c.id > last)
                            .order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            break
        bind.execute(sa.update(table).where(table.c.id == sa.bindparam("sid")).values(search=sa.bindparam("value")),
                     [{"sid": r.id, "value": _search(r.email, r.name)} for r in rows if r.email])
        last = rows[-1].id


def _trigram_index(bind) -> None:
    """The extension in `public` (a database-wide object: not in a schema that may be dropped with
    this one's tables), or wherever it is already; its operator class named with its schema."""
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    except sa.exc.DBAPIError as exc:
        warnings.warn(f"pg_trgm is not available ({str(exc.orig).splitlines()[0]}): searching subscribers by any "
                      "part of a name or address scans the table (docs/postgresql.md)", stacklevel=1)
        return
    schema = bind.execute(sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                                  "e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar_one()
    bind.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {INDEX} ON subscribers USING gin "
                         f'((lower(coalesce(name, \'\') || \' \' || email)) "{schema}".gin_trgm_ops)'))


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_column("subscribers", "search")
