"""A list's language: the one its readers are served in.

Revision ID: 0006_list_language
Revises: 0005_audience
Create Date: 2026-12-08

- lists.language: a language tag ("fr"), or NULL for a list that speaks the reader's language
  where it is known and the newsletter's otherwise (docs/languages.md). Existing lists get NULL,
  which is how they behaved: nothing changes until an admin sets one.
Frozen snapshot: types spelt out, nothing imported from the package.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_list_language"
down_revision = "0005_audience"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild (0005_audience says why).
    op.add_column("lists", sa.Column("language", sa.String(16), nullable=True))


def downgrade() -> None:
    op.drop_column("lists", "language")
