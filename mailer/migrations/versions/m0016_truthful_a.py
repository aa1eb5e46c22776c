"""The issue file's `archive` setting on its sends.

Revision ID: m0016_truthful_a
Revises: m0015_strangers_b
Create Date: 2026-12-07

sends.archive: the issue file's `archive = true/false` when the send started; NULL for sends from
before the setting (and for files without it). False keeps the issue off /archive whatever its
list; a private list's or a segment's send is never shown either way (mailer/send/ledger.py,
_VISIBLE). Plain ADD COLUMN, nullable: no rebuild. Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0016_truthful_a"
down_revision = "m0018_api_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("archive", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("sends", "archive")
