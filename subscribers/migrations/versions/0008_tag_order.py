"""A tag's subscribers in subscriber order, from an index alone.

Revision ID: 0008_tag_order
Revises: 0007_no_tracking
Create Date: 2026-12-07

The admin's view filtered by tag (subscribers/selection.py) reads the first tag's entries in
subscriber order and joins their subscribers: with (tag, subscriber_id) a page or a capped count
reads only the entries it shows, for a tag on ten people or on half the table alike. The
(tag) index of 0005_audience stays (sends' segments look tags up by subscriber, through the key).
Frozen snapshot.
"""

from alembic import op

revision = "0008_tag_order"
down_revision = "0007_no_tracking"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscriber_tags_tag_subscriber_id", "subscriber_tags", ["tag", "subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_subscriber_tags_tag_subscriber_id", table_name="subscriber_tags")
