"""Workers: a send shared by several `mailer worker` processes, each holding a lease.

Revision ID: m0007_workers
Revises: m0006_admin_users
Create Date: 2026-12-02

`sends.workers` > 0 marks a send that workers may join (`mailer send --workers N`); a send run by
one process alone keeps 0 and is never touched by a worker. `deliveries.worker` names who claimed a
reader's batch, and `worker_leases` holds each live worker's lease, renewed by its heartbeat: a
`sending` reader whose worker has no live lease was in flight on a dead worker (docs/workers.md).
`rate_budget` is the provider's request budget all workers share (mailer/send/ratelimit.py).
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0007_workers"
down_revision = "m0006_admin_users"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("sends", sa.Column("workers", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("deliveries", sa.Column("worker", sa.String(300), nullable=True))
    op.create_table(
        "worker_leases",
        sa.Column("worker", sa.String(300), nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("lease_until", TS, nullable=False),
        sa.PrimaryKeyConstraint("worker", name="pk_worker_leases"),
    )
    op.create_table(
        "rate_budget",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.Column("wait_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rate_budget"),
    )


def downgrade() -> None:
    op.drop_table("rate_budget")
    op.drop_table("worker_leases")
    # plain DROP COLUMN (SQLite >= 3.35 too): rebuilding `sends` would cascade into deliveries
    op.execute("ALTER TABLE deliveries DROP COLUMN worker")
    op.execute("ALTER TABLE sends DROP COLUMN workers")
