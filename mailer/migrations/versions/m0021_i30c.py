"""Pacing by mailbox provider and warm-up across workers.

Revision ID: m0021_i30c
Revises: m0019_pacing
Create Date: 2026-12-08

- rate_budget.rate: the rate (per second) a budget row refills at when it is not the configured one.
  `mailer send --workers N` keeps one row per send and provider (`pace:SEND:PROVIDER`,
  mailer/send/pacing.py SharedPacer); a "rate limited" answer to any worker halves that provider's
  rate here, so every worker slows down, not only the one that was answered. NULL: the configured
  rate ([delivery.sendgrid] requests_per_second, [delivery.pacing] limits).
- send_warmups.claimed_on, claimed: how many readers workers claimed on that UTC day of a warm-up
  send, counted from the ledger at the day's first claim and kept up by each claim under the send's
  row lock (mailer/send/warmup.py `claimable`), so the day's cap holds for all workers together
  without counting the send's deliveries at every claim.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0021_i30c"
down_revision = "m0019_pacing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rate_budget", sa.Column("rate", sa.Float(), nullable=True))
    op.add_column("send_warmups", sa.Column("claimed_on", sa.Date(), nullable=True))
    op.add_column("send_warmups", sa.Column("claimed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("send_warmups") as batch:
        batch.drop_column("claimed")
        batch.drop_column("claimed_on")
    with op.batch_alter_table("rate_budget") as batch:
        batch.drop_column("rate")
