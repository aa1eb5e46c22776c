"""Click and open tracking: the links stored with each send, its counts, and who clicked.

Revision ID: m0010_tracking
Revises: m0009_spent_challenges
Create Date: 2026-12-08

- send_links: each tracked send's links (the index its tokens name, URL, the words in the issue)
  with the count of people who clicked each and of requests counted as machines'.
- send_tracking: per send, people who clicked, machine clicks, opens, machine opens.
- tracking_hits: a person's first click on a link (first open of a copy); in "reader" mode it names
  the subscriber and goes with them (ON DELETE CASCADE: forget), and every hit goes after
  [tracking] keep_days. The counts above stay. docs/tracking.md.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0010_tracking"
down_revision = "m0009_spent_challenges"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "send_links",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_send_links_send_id_sends", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("send_id", "idx", name="pk_send_links"),
    )
    op.create_table(
        "send_tracking",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("machine_clicks", sa.Integer(), nullable=False),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("machine_opens", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_send_tracking_send_id_sends",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("send_id", name="pk_send_tracking"),
    )
    op.create_table(
        "tracking_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("copy", sa.String(20), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_tracking_hits_send_id_sends", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"],
                                name="fk_tracking_hits_subscriber_id_subscribers", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_hits"),
    )
    op.create_index("ix_tracking_hits_send_id_copy", "tracking_hits", ["send_id", "copy"])
    op.create_index("ix_tracking_hits_at", "tracking_hits", ["at"])
    op.create_index("ix_tracking_hits_subscriber_id", "tracking_hits", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("tracking_hits")
    op.drop_table("send_tracking")
    op.drop_table("send_links")
