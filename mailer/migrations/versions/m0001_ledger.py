"""The send ledger: sends and deliveries.

Revision ID: m0001_ledger
Revises:
Create Date: 2026-11-29

A frozen snapshot: types are spelled out rather than imported from mailer.send.ledger. Foreign keys
to the subscribers package's tables are SET NULL, so `mailer lists delete` and `mailer subscribers
forget` keep working; the ledger holds ids only, no addresses or names (docs/design.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "m0001_ledger"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATES = "'pending', 'sending', 'accepted', 'deferred', 'failed', 'skipped'"


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue", sa.String(64), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=True),
        sa.Column("list_name", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(300), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sends"),
        sa.ForeignKeyConstraint(["list_id"], ["lists.id"], name="fk_sends_list_id_lists", ondelete="SET NULL"),
        sa.UniqueConstraint("issue", "list_id", name="uq_sends_issue_list_id"),
        sa.CheckConstraint("status IN ('sending', 'stopped', 'done')", name="ck_sends_status"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("provider_id", sa.String(300), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_deliveries_send_id_sends", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_deliveries_subscriber_id_subscribers",
                                ondelete="SET NULL"),
        sa.UniqueConstraint("send_id", "subscriber_id", name="uq_deliveries_send_id_subscriber_id"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_deliveries_state"),
    )
    # Not on state: it changes twice per reader, and every change would rewrite such an index.
    op.create_index("ix_deliveries_send_id_id", "deliveries", ["send_id", "id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("sends")
