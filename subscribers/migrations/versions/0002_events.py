"""Delivery events: each provider event stored once, for the policy and for the record.

Revision ID: 0002_events
Revises: 0001
Create Date: 2026-11-29

Added by the web service (issue 5) for subscribers.policy. One row per event of a known
subscriber; UNIQUE(event_id, source) makes SendGrid's repeated posts harmless (insert-or-ignore);
rows go with their subscriber (ON DELETE CASCADE), so `forget` erases them too. Frozen snapshot:
types spelt out, nothing imported from the package.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_events"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(8), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("issue", sa.String(100), nullable=True),
        sa.Column("send_ref", sa.String(100), nullable=True),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("raw", JSON, nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"],
                                name="fk_events_subscriber_id_subscribers", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        # event_id first: the batch lookups ask `event_id IN (...)`, which then is the index's own
        # condition whatever the planner thinks of the table's size (source alone is not selective).
        sa.UniqueConstraint("event_id", "source", name="uq_events_event_id_source"),
    )
    # The soft-bounce count: one subscriber's events of one kind in a time window.
    op.create_index("ix_events_subscriber_id_type_at", "events", ["subscriber_id", "type", "at"])


def downgrade() -> None:
    op.drop_index("ix_events_subscriber_id_type_at", table_name="events")
    op.drop_table("events")
