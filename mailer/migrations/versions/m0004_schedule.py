"""The schedule: one row per issue that was ever scheduled, and one per slot the scheduler decided.

Revision ID: m0004_schedule
Revises: m0001_ledger
Create Date: 2026-12-02

A frozen snapshot of mailer/schedule/states.py. APScheduler's own job table
(`mailer_scheduler_jobs`) is created by its SQLAlchemyJobStore, not here (docs/schedule.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "m0004_schedule"
down_revision = "m0005_segments"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
STATES = "'draft', 'scheduled', 'sending', 'sent', 'failed'"


def upgrade() -> None:
    op.create_table(
        "issue_states",
        sa.Column("issue", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("list_name", sa.String(64), nullable=False),
        sa.Column("send_at", TS, nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("proof_sent_at", TS, nullable=True),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("runner", sa.String(300), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("issue", name="pk_issue_states"),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_issue_states_send_id_sends", ondelete="SET NULL"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_issue_states_state"),
    )
    op.create_index("ix_issue_states_state_send_at", "issue_states", ["state", "send_at"])
    op.create_table(
        "schedule_slots",
        sa.Column("slot_at", TS, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("runner", sa.String(300), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("slot_at", name="pk_schedule_slots"),
    )


def downgrade() -> None:
    op.drop_table("schedule_slots")
    op.drop_index("ix_issue_states_state_send_at", table_name="issue_states")
    op.drop_table("issue_states")
