"""Segmented sends: a send is one (issue, list, segment).

Revision ID: m0005_segments
Revises: m0001_ledger
Create Date: 2026-12-02

`sends.segment` names the readers a send picked within its list: "" for the whole list, else
"tag:" and the sorted tags joined by "," (readers with any of them). Exactly-once now holds per
(issue, list, segment), so the unique key gains the column.

SQLite cannot drop a UNIQUE constraint, so `sends` is rebuilt; with foreign keys on, dropping it
would cascade into `deliveries`, so deliveries is set aside in a temporary copy first and put back
after, rows and ids unchanged. Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op

revision = "m0005_segments"
down_revision = "m0002_send_edges"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATES = "'pending', 'sending', 'accepted', 'deferred', 'failed', 'skipped'"


def upgrade() -> None:
    _rebuild(["issue", "list_id", "segment"], "uq_sends_issue_list_id", "uq_sends_issue_list_id_segment",
             add=True)


def downgrade() -> None:
    _rebuild(["issue", "list_id"], "uq_sends_issue_list_id_segment", "uq_sends_issue_list_id", add=False)


def _rebuild(key: list[str], old: str, new: str, *, add: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE m0005_deliveries AS SELECT * FROM deliveries")
        op.drop_index("ix_deliveries_send_id_id", table_name="deliveries")
        op.drop_table("deliveries")
    with op.batch_alter_table("sends", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(old, type_="unique")
        if add:
            batch.add_column(sa.Column("segment", sa.String(500), nullable=False, server_default=""))
        else:
            batch.drop_column("segment")
        batch.create_unique_constraint(new, key)
    if sqlite:
        _create_deliveries()
        op.execute("INSERT INTO deliveries SELECT * FROM m0005_deliveries")
        op.execute("DROP TABLE m0005_deliveries")


def _create_deliveries() -> None:
    """deliveries as m0002_send_edges left it (m0001_ledger's table plus next_attempt_at, last)."""
    op.create_table(
        "deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("provider_id", sa.String(300), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=True),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="fk_deliveries_send_id_sends", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], name="fk_deliveries_subscriber_id_subscribers",
                                ondelete="SET NULL"),
        sa.UniqueConstraint("send_id", "subscriber_id", name="uq_deliveries_send_id_subscriber_id"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_deliveries_state"),
    )
    op.create_index("ix_deliveries_send_id_id", "deliveries", ["send_id", "id"])
