"""Logging out ends the session on the server.

Revision ID: m0015_strangers_b
Revises: m0014_strangers_a
Create Date: 2026-12-08

- admin_users.session_epoch: a counter in every session's stamp (mailer/admin_users.py `stamp`).
  Logging out adds one, so every cookie issued before, a copied one included, stops working at
  once; the next login issues cookies with the new value. Existing users start at 0.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0015_strangers_b"
down_revision = "m0014_strangers_a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN with a default (no batch rebuild), as m0011 did on the same table.
    op.add_column("admin_users", sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("admin_users", "session_epoch")
