"""Searching a million subscribers without reading them all (subscribers/search.py).

Revision ID: 0016_i24c
Revises: 0014_i24b
Create Date: 2026-12-08

SQLite: `subscribers_search`, an FTS5 index of trigrams (the `trigram` tokenizer, SQLite 3.34 or
later) over each subscriber's `search` column with a newline in front ("\\n" + name + "\\n" +
address ...), so a phrase of three characters or more finds any part of a name or address, and
"\\nxy", " xy" and "@xy" find where a line, a word or a domain starts. Contentless (the text is in
`subscribers.search` already); the triggers below keep it in step with every writer, the bulk
importer included, and the index is filled here for the rows already there. PostgreSQL: pg_trgm's
index of 0014_i24b answers the same questions, except "@domain": nearly every address holds that
text's trigrams ("exa", "amp", ...), so a btree on the address from its "@" on answers it as a
range (`LIKE '@example.org%'`, text_pattern_ops whatever the collation).
Frozen snapshot: the statements are written out here.
"""

from alembic import op

revision = "0016_i24c"
down_revision = "0014_i24b"
branch_labels = None
depends_on = None

TABLE = "subscribers_search"
DOMAIN = "ix_subscribers_domain"
VALUE = "char(10) || {row}.search"
TRIGGERS = {
    "subscribers_search_insert": f"""
        CREATE TRIGGER subscribers_search_insert AFTER INSERT ON subscribers WHEN new.search IS NOT NULL
        BEGIN
            INSERT INTO {TABLE} (rowid, search) VALUES (new.id, {VALUE.format(row="new")});
        END""",
    "subscribers_search_update": f"""
        CREATE TRIGGER subscribers_search_update AFTER UPDATE OF search ON subscribers
        WHEN old.search IS NOT new.search
        BEGIN
            INSERT INTO {TABLE} ({TABLE}, rowid, search)
                SELECT 'delete', old.id, {VALUE.format(row="old")} WHERE old.search IS NOT NULL;
            INSERT INTO {TABLE} (rowid, search)
                SELECT new.id, {VALUE.format(row="new")} WHERE new.search IS NOT NULL;
        END""",
    "subscribers_search_delete": f"""
        CREATE TRIGGER subscribers_search_delete AFTER DELETE ON subscribers WHEN old.search IS NOT NULL
        BEGIN
            INSERT INTO {TABLE} ({TABLE}, rowid, search) VALUES ('delete', old.id, {VALUE.format(row="old")});
        END""",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX IF NOT EXISTS {DOMAIN} ON subscribers "
                   "((substr(email, strpos(email, '@'))) text_pattern_ops)")
        return
    op.execute(f"CREATE VIRTUAL TABLE {TABLE} USING fts5(search, content='', tokenize='trigram case_sensitive 1')")
    op.execute(f"INSERT INTO {TABLE} (rowid, search) SELECT id, {VALUE.format(row='subscribers')} FROM subscribers "
               "WHERE search IS NOT NULL")
    for statement in TRIGGERS.values():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {DOMAIN}")
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
