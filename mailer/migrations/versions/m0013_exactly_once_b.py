"""Exactly once with workers: when a batch was handed to the backend, and what the coordinator composed.

Revision ID: m0013_exactly_once_b
Revises: m0016_truthful_a
Create Date: 2026-12-08

- deliveries.handed_at: set when a reader's batch is handed to the backend (a single run in the
  claim itself; a worker just before the request, after checking the claim is still its own). A
  `sending` reader without it was claimed but never left: it always goes back to pending, whatever
  on_interrupted says (docs/exactly-once.md, docs/workers.md).
- scheduler_lease: on SQLite (no advisory lock) the one `mailer schedule run` holds this lease;
  a second is refused (docs/schedule.md).
- sends.composed: the composed issue (JSON: subject, preheader, MJML, HTML, text with markers) as
  the coordinator made it at send start; every worker sends that, never its own issues/ folder.
Frozen snapshot: types spelt out. Plain ADD COLUMN, nullable: no rewrite of the readers' rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0013_exactly_once_b"
down_revision = "m0016_truthful_a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sends", sa.Column("composed", sa.Text(), nullable=True))
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("runner", sa.String(300), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_lease"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_lease")
    op.drop_column("sends", "composed")
    op.drop_column("deliveries", "handed_at")
