"""Send edges: a deferred reader's next attempt, and the archive copy stored when a send starts.

Revision ID: m0002_send_edges
Revises: m0001_ledger
Create Date: 2026-12-02

deliveries.next_attempt_at: when a reader refused temporarily (SMTP 4xx, greylisting) is tried
again; sends.archive_html / archive_text / archive_date / archive_preheader: the composed issue
with neutral reader fields, as it was mailed, served at /archive/ISSUE from the moment the send
starts (docs/exactly-once.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "m0002_send_edges"
down_revision = "m0001_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("archive_html", sa.Text(), nullable=True))
        batch.add_column(sa.Column("archive_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("archive_date", sa.Date(), nullable=True))
        batch.add_column(sa.Column("archive_preheader", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("archive_preheader")
        batch.drop_column("archive_date")
        batch.drop_column("archive_text")
        batch.drop_column("archive_html")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("next_attempt_at")
