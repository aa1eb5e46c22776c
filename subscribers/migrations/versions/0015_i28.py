"""The outbox: events for other systems, written with the change they report.

Revision ID: 0015_i28
Revises: 0008_tag_order
Create Date: 2026-12-08

One row per event (subscribers/outbox.py): its id (the `webhook-id` of every delivery try), type,
time, the reader's id and address (emptied when they are forgotten), the list's name and a JSON
detail; `fanned_out` once mailer made a delivery row per outgoing webhook that wants it
(mailer/notify/). No foreign keys, like history: an event outlives its reader and list.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015_i28"
down_revision = "0008_tag_order"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("list_name", sa.String(64), nullable=True),
        sa.Column("data", JSON, nullable=True),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_fanned_out_id", "outbox", ["fanned_out", "id"])
    op.create_index("ix_outbox_subscriber_id", "outbox", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("outbox")
