"""A reader's refusal of click and open tracking.

Revision ID: 0007_no_tracking
Revises: 0006_list_language
Create Date: 2026-12-08

- subscribers.no_tracking: set from the reader's preferences page; a send then gives them direct
  links and no open image, and nothing of theirs is counted. False for everyone until they say so.
Frozen snapshot: types spelt out, nothing imported from the package.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_no_tracking"
down_revision = "0006_list_language"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild (0005_audience says why).
    op.add_column("subscribers", sa.Column("no_tracking", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("subscribers", "no_tracking")
