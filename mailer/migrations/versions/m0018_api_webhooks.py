"""The REST API's tokens and idempotency keys; the outgoing webhooks' deliveries.

Revision ID: m0018_api_webhooks
Revises: m0015_strangers_b
Create Date: 2026-12-08

- api_tokens: one row per token made by `mailer admin token create` (mailer/api_tokens.py): its
  name (the audit log's actor), the SHA-256 of the token (the token itself is shown once and never
  stored: it is 256 random bits, so a slow hash adds nothing), its scopes, and when it was revoked.
- api_idempotency: the answer given to a create or update that carried an `Idempotency-Key`, kept
  24 hours so a retry is answered the same and changes nothing (docs/api.md). Keyed by token and key.
- webhook_deliveries: one row per outbox event (the store's `outbox`, 0015_i28) and endpoint of
  `[[webhooks.out]]`: its state (pending, delivered, failed), tries, next try, the receiver's last
  status or error (mailer/notify/delivery.py). Deleted with its event, by the sweep; no foreign key,
  like the store's history: mailer's history may run on a store older than the outbox (tests of old
  revisions do).
- welcome_mails: a list's welcome mail (`mailer lists welcome`): its issue file, name and subject
  (mailer/send/welcome.py); the mails themselves are sends in the ledger, segment `welcome`.
Frozen snapshot: types spelt out.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "m0018_api_webhooks"
down_revision = "m0015_strangers_b"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "api_idempotency",
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], name="fk_api_idempotency_token_id_api_tokens",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_id", "key", name="pk_api_idempotency"),
    )
    op.create_index("ix_api_idempotency_created_at", "api_idempotency", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outbox_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("outbox_id", "url", name="uq_webhook_deliveries_outbox_id"),
    )
    op.create_table(
        "welcome_mails",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("set_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("list_id", name="pk_welcome_mails"),
    )
    op.create_index("ix_webhook_deliveries_state_next_attempt_at", "webhook_deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("welcome_mails")
    op.drop_table("webhook_deliveries")
    op.drop_table("api_idempotency")
    op.drop_table("api_tokens")
