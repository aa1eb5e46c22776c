"""Bounce reports that prove nothing: kept, counted and listed, but they change nobody.

Revision ID: m0014_strangers_a
Revises: m0011_admin_workbench
Create Date: 2026-12-07

- unverified_reports: a DSN or complaint that names addresses but carries no signed ref that
  verifies and quotes none of our Message-IDs the ledger has (mailer/events/unverified.py,
  docs/bounces.md). One row per message (message_key unique), so a rescan adds nothing; how many
  addresses it names, never which (a stranger's claims must not outlive a reader's erasure).
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0014_strangers_a"
down_revision = "m0011_admin_workbench"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "unverified_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reader", sa.String(64), nullable=False),
        sa.Column("why", sa.String(200), nullable=False),
        sa.Column("addresses", sa.Integer(), nullable=False),
        sa.Column("refs", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_unverified_reports"),
        sa.UniqueConstraint("message_key", name="uq_unverified_reports_message_key"),
    )
    # `mailer report` counts those received since an issue went out.
    op.create_index("ix_unverified_reports_received_at", "unverified_reports", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_unverified_reports_received_at", table_name="unverified_reports")
    op.drop_table("unverified_reports")
