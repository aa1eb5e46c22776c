"""Ids never reused; links bound to their membership; one signup-request row per address and list.

Revision ID: 0003_consent_ids
Revises: 0002_events
Create Date: 2026-12-02

Why (docs/consent.md):
- SQLite gives a table without AUTOINCREMENT the rowid max+1, so after the newest subscriber, list
  or membership was deleted, the next one got its id, and links made for the dead row acted on the
  new one. SQLite cannot add AUTOINCREMENT to a table, so lists, subscribers and memberships are
  rebuilt (create a copy, fill it, drop the old one, rename the copy); subscribers.db runs
  migrations with foreign keys off on SQLite, so dropping the old tables cascades nothing.
  PostgreSQL's sequences never hand out a number twice: nothing to do there.
- memberships.token_key: a random key per membership, signed into every new confirm and
  unsubscribe link, so a link for a row that no longer exists acts on nobody. Existing rows get a
  key here. Links mailed before this revision carry no key; store_meta remembers the highest
  membership id at this moment ("legacy_links_upto"), and such a link keeps working only for a
  membership at or below it (subscribers.links).
- signup_requests: one row per (list, keyed hash of the address), the web form's request time and
  last confirmation mail, updated in place, so probing the form adds no history row.

Frozen snapshot: types spelt out, nothing imported from the package.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_consent_ids"
down_revision = "0002_events"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
STATUSES = ("unconfirmed", "active", "unsubscribed", "bounced", "complained")
KEY_DEFAULT = {  # 16 hex characters (64 bits) from each database's own random source
    "sqlite": "(lower(hex(randomblob(8))))",
    "postgresql": "(substr(replace(gen_random_uuid()::text, '-', ''), 1, 16))",
}


def one_of(column: str, values) -> str:
    return " OR ".join(f"{column} = '{v}'" for v in values)


def _tables(suffix: str, key_default: str) -> list[sa.Table]:
    """lists, subscribers, memberships as 0001 made them, plus AUTOINCREMENT and token_key.
    Foreign keys name the final tables, which the renamed copies become."""
    meta = sa.MetaData()
    lists = sa.Table(
        "lists" + suffix, meta,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lists"),
        sa.UniqueConstraint("name", name="uq_lists_name"),
        sqlite_autoincrement=True,
    )
    subscribers = sa.Table(
        "subscribers" + suffix, meta,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("global_status", sa.String(16), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(one_of("global_status", STATUSES[3:]), name="ck_subscribers_global_status"),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("email", name="uq_subscribers_email"),
        sqlite_autoincrement=True,
    )
    sa.Table("lists", meta, sa.Column("id", sa.Integer(), primary_key=True))          # FK targets
    sa.Table("subscribers", meta, sa.Column("id", sa.Integer(), primary_key=True))
    memberships = sa.Table(
        "memberships" + suffix, meta,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent_at", TS, nullable=True),
        sa.Column("consent_source", sa.String(16), nullable=False),
        sa.Column("consent_ip", sa.String(45), nullable=True),
        sa.Column("consent_user_agent", sa.String(512), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("token_key", sa.String(16), nullable=False, server_default=sa.text(key_default)),
        sa.CheckConstraint(one_of("status", STATUSES), name="ck_memberships_status"),
        sa.CheckConstraint(one_of("consent_source", ("import", "web", "admin")),
                           name="ck_memberships_consent_source"),
        sa.ForeignKeyConstraint(["list_id"], ["lists.id"], name="fk_memberships_list_id_lists", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"],
                                name="fk_memberships_subscriber_id_subscribers", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_memberships"),
        sa.UniqueConstraint("list_id", "subscriber_id", name="uq_memberships_list_id_subscriber_id"),
        sqlite_autoincrement=True,
    )
    return [lists, subscribers, memberships]


def _rebuild_sqlite() -> None:
    bind = op.get_bind()
    new = _tables("_new", KEY_DEFAULT["sqlite"])
    for table in new:
        bind.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")   # left by an interrupted run
        table.create(bind)
    for table in new:
        old = table.name[:-len("_new")]
        columns = ", ".join(c.name for c in table.columns if c.name != "token_key")
        bind.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old} ORDER BY id")
    for table in reversed(new):
        bind.exec_driver_sql(f"DROP TABLE {table.name[:-len('_new')]}")
    for table in new:
        bind.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {table.name[:-len('_new')]}")
    op.create_index("ix_memberships_subscriber_id", "memberships", ["subscriber_id"])


def upgrade() -> None:
    bind = op.get_bind()
    # Links mailed before now carry no key: valid only for memberships that exist now.
    upto = bind.execute(sa.text("SELECT coalesce(max(id), 0) FROM memberships")).scalar()
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite()
    else:
        op.add_column("memberships", sa.Column("token_key", sa.String(16), nullable=False,
                                               server_default=sa.text(KEY_DEFAULT["postgresql"])))
    meta = op.create_table(
        "store_meta",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_meta"),
    )
    op.bulk_insert(meta, [{"name": "legacy_links_upto", "value": str(upto)}])
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("mailed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["list_id"], ["lists.id"], name="fk_signup_requests_list_id_lists",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_signup_requests"),
        sa.UniqueConstraint("list_id", "address_hash", name="uq_signup_requests_list_id_address_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_signup_requests_address_hash", "signup_requests", ["address_hash"])


def downgrade() -> None:
    op.drop_index("ix_signup_requests_address_hash", table_name="signup_requests")
    op.drop_table("signup_requests")
    op.drop_table("store_meta")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("token_key")
