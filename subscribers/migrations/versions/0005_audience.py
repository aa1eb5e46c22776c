"""The audience: private lists, tags, and the signup half of a double opt-in's consent record.

Revision ID: 0005_audience
Revises: 0002_events
Create Date: 2026-12-02

- lists.private: a private list is never offered on the public /subscribe page.
- subscriber_tags: (subscriber, tag) pairs; a send may pick the readers with any of some tags.
  Rows go with their subscriber (ON DELETE CASCADE), so `forget` erases them too.
- memberships.optin_at / optin_ip: when and from where the signup was asked for (Mailchimp's
  OPTIN_TIME / OPTIN_IP); consent_at / consent_ip keep the confirmation (CONFIRM_TIME / CONFIRM_IP).
Frozen snapshot: types spelt out, nothing imported from the package.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_audience"
down_revision = "0003_consent_ids"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild: on SQLite with foreign keys on, dropping the old
    # `lists` or `memberships` table in a rebuild would cascade into the tables that point at it.
    op.add_column("lists", sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("memberships", sa.Column("optin_at", TS, nullable=True))
    op.add_column("memberships", sa.Column("optin_ip", sa.String(45), nullable=True))
    op.create_table(
        "subscriber_tags",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"],
                                name="fk_subscriber_tags_subscriber_id_subscribers", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id", "tag", name="pk_subscriber_tags"),
    )
    op.create_index("ix_subscriber_tags_tag", "subscriber_tags", ["tag"])


def downgrade() -> None:
    op.drop_index("ix_subscriber_tags_tag", table_name="subscriber_tags")
    op.drop_table("subscriber_tags")
    # DROP COLUMN (SQLite 3.35+) keeps the tables, and so every row that points at them.
    op.drop_column("memberships", "optin_ip")
    op.drop_column("memberships", "optin_at")
    op.drop_column("lists", "private")
