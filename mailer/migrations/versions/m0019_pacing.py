"""Pacing by mailbox provider, and warm-up.

Revision ID: m0019_pacing
Revises: m0013_exactly_once_b
Create Date: 2026-12-08

- mail_providers: a domain's mailbox provider (gmail, microsoft, yahoo, other), found from its MX
  and kept CACHE_DAYS (mailer/send/pacing.py), so a send asks DNS only about new domains.
- send_warmups: a send made with `--warmup` (or [delivery.pacing] warmup): the UTC day it started,
  from which each day's cap on the ramp is counted, and the last day a run stopped at the cap
  (the scheduler resumes it the next day; mailer/send/warmup.py).
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0019_pacing"
down_revision = "m0013_exactly_once_b"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mail_providers",
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("checked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("domain", name="pk_mail_providers"),
    )
    op.create_table(
        "send_warmups",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("first_cap", sa.Integer(), nullable=False),
        sa.Column("capped_on", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_send_warmups_send_id_sends", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("send_id", name="pk_send_warmups"),
    )


def downgrade() -> None:
    op.drop_table("send_warmups")
    op.drop_table("mail_providers")
