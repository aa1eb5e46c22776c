"""The admin as a workbench: users' roles and second factor, and the audit log.

Revision ID: m0011_admin_workbench
Revises: m0010_tracking
Create Date: 2026-12-07

- admin_users.role: owner, editor or viewer (docs/admin.md). Users made before roles existed could
  do everything, so they become owners; `mailer admin set-role` lowers them.
- admin_users.totp_secret / totp_step: the optional TOTP second factor (RFC 6238) and the last
  time step accepted, so a code is good once. admin_recovery_codes: each user's one-time recovery
  codes, as SHA-256 hashes (they are random, 50 bits each: a slow hash adds nothing).
- audit_log: who changed what, when, on whom and from which client address, in the admin pages,
  the admin commands or the API (mailer/audit.py). No foreign keys, like `history`: an entry never
  blocks deleting a subscriber, list or user, and outlives them. It holds the subscriber's id, not
  their address: pages join the address in, so a forgotten subscriber's entries stay without it.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "m0011_admin_workbench"
down_revision = "m0010_tracking"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): nothing points at admin_users but the new table.
    op.add_column("admin_users", sa.Column("role", sa.String(16), nullable=False, server_default="owner"))
    op.add_column("admin_users", sa.Column("totp_secret", sa.String(64), nullable=True))
    op.add_column("admin_users", sa.Column("totp_step", sa.BigInteger(), nullable=True))
    op.create_table(
        "admin_recovery_codes",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["admin_users.id"], name="fk_admin_recovery_codes_user_id_admin_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "code_hash", name="pk_admin_recovery_codes"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("detail", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    # The page's filters, each newest first (keyset paging by id).
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor", "id"])
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_subscriber_id_id", "audit_log", ["subscriber_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_subscriber_id_id", table_name="audit_log")
    op.drop_index("ix_audit_log_action_id", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("admin_recovery_codes")
    op.drop_column("admin_users", "totp_step")
    op.drop_column("admin_users", "totp_secret")
    op.drop_column("admin_users", "role")
