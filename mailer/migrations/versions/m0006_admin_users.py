"""Admin web interface: its users, and indexes for the admin's search and member pages.

Revision ID: m0006_admin_users
Revises: m0001_ledger
Create Date: 2026-12-02

Frozen snapshot: types spelt out. `admin_users` holds argon2id hashes only (docs/admin.md).
The indexes serve /admin/subscribers?q= (prefix searches on the address and on the lower-cased
name) and /admin/lists/NAME (a list's members by status, in subscriber order, a page at a time), the
dashboard's chart and an issue's report (events by day, and by issue and type).
On PostgreSQL the prefix indexes use text_pattern_ops, so `LIKE 'ann%'` can use them whatever
the database's collation; SQLite's search uses a range on the plain (binary) index instead.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0006_admin_users"
down_revision = "m0004_schedule"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_users"),
        sa.UniqueConstraint("name", name="uq_admin_users_name"),
    )
    op.create_index("ix_memberships_list_id_status_subscriber_id", "memberships",
                    ["list_id", "status", "subscriber_id"])
    # The few subscribers bounced or complained anywhere (search.status_counts).
    op.create_index("ix_subscribers_global_status", "subscribers", ["global_status"],
                    sqlite_where=sa.text("global_status IS NOT NULL"),
                    postgresql_where=sa.text("global_status IS NOT NULL"))
    # An issue's unsubscribes: its lists' unsubscribe rows of the history after the send. Partial,
    # so the history rows an import writes (every new member) never touch it.
    op.create_index("ix_history_unsubscribes", "history", ["list_id", "at"],
                    sqlite_where=sa.text("new_status = 'unsubscribed'"),
                    postgresql_where=sa.text("new_status = 'unsubscribed'"))
    # The dashboard's chart (events per day) and an issue's report (its events by type and day).
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index("ix_events_issue_type_at", "events", ["issue", "type", "at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_subscribers_email_prefix ON subscribers (email text_pattern_ops)")
        op.execute("CREATE INDEX ix_subscribers_name_prefix ON subscribers (lower(name) text_pattern_ops)")
    else:
        op.execute("CREATE INDEX ix_subscribers_name_prefix ON subscribers (lower(name))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_subscribers_email_prefix")
    op.execute("DROP INDEX ix_subscribers_name_prefix")
    op.drop_index("ix_events_issue_type_at", table_name="events")
    op.drop_index("ix_events_at", table_name="events")
    op.drop_index("ix_history_unsubscribes", table_name="history")
    op.drop_index("ix_subscribers_global_status", table_name="subscribers")
    op.drop_index("ix_memberships_list_id_status_subscriber_id", table_name="memberships")
    op.drop_table("admin_users")
