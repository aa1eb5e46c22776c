"""Room in each page of `deliveries` for a reader's next two versions (PostgreSQL).

Revision ID: m0008_deliveries_fillfactor
Revises: m0007_workers
Create Date: 2026-12-07

A send updates each delivery row twice (pending -> sending -> accepted) and PostgreSQL writes a new
row version each time. With full pages the new version lands on another page and every index of the
table gets a new entry; with a quarter of each page filled at insert, both versions fit beside the
first (a HOT update: no index is touched), which halves the database's cost of a send
(docs/postgresql.md). Only pages written from now on are affected. SQLite has no such setting.
"""

from alembic import op

revision = "m0008_deliveries_fillfactor"
down_revision = "m0007_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 25)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
