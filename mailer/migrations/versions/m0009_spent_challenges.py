"""The signup forms' spent proof-of-work solutions, so that one solution signs up one form.

Revision ID: m0009_spent_challenges
Revises: m0008_deliveries_fillfactor
Create Date: 2026-12-08

`spent_challenges` holds the signature of every challenge whose solution a signup form sent
(mailer/web/challenge.py), until the challenge expires; a second post with the same solution finds
its row and is refused. Rows past `expires_at` are deleted as new ones come (the index).
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0009_spent_challenges"
down_revision = "m0008_deliveries_fillfactor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_challenges",
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature", name="pk_spent_challenges"),
    )
    op.create_index("ix_spent_challenges_expires_at", "spent_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_spent_challenges_expires_at", table_name="spent_challenges")
    op.drop_table("spent_challenges")
