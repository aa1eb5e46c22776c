"""The store's tables and enums: the database contract that mailer builds on (docs/design.md).

Declarative SQLAlchemy 2 classes; each table is also exported under its own name (`lists`,
`subscribers`, `memberships`, `history`, `forgotten`) for Core statements, which is what the
store uses: bulk imports and million-row sends cannot afford an ORM object per row.

Status values are plain strings in the database (VARCHAR + CHECK), so mailer can compare them in
SQL without the enum types. Timestamps are aware UTC datetimes on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from subscribers.status import Status

GLOBAL_STATUSES = (Status.BOUNCED, Status.COMPLAINED)          # suppressed on every list
SUPPRESSED = (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)  # never resurrected by accident


class ConsentSource(enum.StrEnum):
    IMPORT = "import"
    WEB = "web"
    ADMIN = "admin"


class Action(enum.StrEnum):
    """What a history row records."""

    SUBSCRIBE = "subscribe"   # a membership was created (new_status says how)
    STATUS = "status"         # a membership's or the global status changed
    CONFIRM = "confirm"       # double opt-in completed (unconfirmed -> active)
    # REQUEST and CONFIRM_MAIL are no longer written: since 0003_consent_ids a web signup (and its
    # mail throttle) is one row per list and address in signup_requests, not a history row per
    # request. They stay to name what older history rows hold.
    REQUEST = "request"
    CONFIRM_MAIL = "confirm_mail"
    PREFERENCES_MAIL = "preferences_mail"  # a fresh preferences link was mailed (the web throttles by it)
    UPDATE = "update"         # name or attributes changed (detail names the fields, not values)
    FORGET = "forget"         # erased; the row keeps no subscriber id and no personal data
    TRACKING = "tracking"     # the reader turned click and open tracking off or on (detail: {"tracking": ...})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Aware UTC in, aware UTC out, on SQLite (which keeps no zone) as on PostgreSQL.

    The one place that knows how the two databases differ here (docs/design.md, "The database
    contract"): SQLite stores SQLAlchemy's text `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, PostgreSQL a
    timestamptz. A naive value is taken as UTC on both (PostgreSQL would otherwise read it in the
    session's time zone). Code that writes past SQLAlchemy's statements (subscribers/bulk.py) uses
    `driver_value`; SQL that needs the day or the text of a timestamp uses `utc_date`, `utc_text`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def driver_value(dialect) -> Callable[[datetime | None], Any]:
    """A function turning a datetime into what this dialect's driver stores for a UtcDateTime
    column (SQLite: SQLAlchemy's text; PostgreSQL: the aware datetime), for statements that hand
    values straight to the driver."""
    return UtcDateTime().dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


class utc_date(FunctionElement):
    """The UTC calendar day of a UtcDateTime column, as a `date` on both databases."""

    type = Date()
    inherit_cache = True


@compiles(utc_date, "sqlite")
def _utc_date_sqlite(element, compiler, **kw):
    return f"date({compiler.process(element.clauses, **kw)})"          # the stored text is UTC


@compiles(utc_date, "postgresql")
def _utc_date_postgresql(element, compiler, **kw):       # not the session's time zone
    return f"CAST(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC' AS DATE)"


class utc_text(FunctionElement):
    """A UtcDateTime column as ISO 8601 text, `2024-11-05T09:30:00.000000Z`, the same on both
    databases (made by the database: no per-row work in Python)."""

    type = String()
    inherit_cache = True


@compiles(utc_text, "sqlite")
def _utc_text_sqlite(element, compiler, **kw):
    return f"(replace({compiler.process(element.clauses, **kw)}, ' ', 'T') || 'Z')"


@compiles(utc_text, "postgresql")
def _utc_text_postgresql(element, compiler, **kw):
    column = compiler.process(element.clauses, **kw)
    return f"""to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
HistoryId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite rowids are 64-bit already

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values) -> str:
    # An OR chain, not IN (...): SQLite evaluates this several times faster per inserted row
    # (docs/decisions.md: IN cost more per row than the insert itself).
    return " OR ".join(f"{column} = '{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    if TYPE_CHECKING:   # each model maps one Table of its own (SQLAlchemy types it as any FromClause)
        __table__: ClassVar[Table]


# Ids are never handed out twice (SQLite: AUTOINCREMENT; PostgreSQL: sequences), so nothing made
# for a deleted row can land on a later one (0003_consent_ids, docs/consent.md).
NEVER_REUSE = {"sqlite_autoincrement": True}


class List(Base):
    __tablename__ = "lists"
    __table_args__ = (NEVER_REUSE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    private: Mapped[bool] = mapped_column(Boolean, default=False)   # never offered on /subscribe
    # The language its readers are served in (its footer, confirmation and welcome mails, the pages
    # about it): a tag such as "fr"; None: the reader's own where known, else the newsletter's
    language: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        CheckConstraint(_one_of("global_status", GLOBAL_STATUSES), name="global_status"),
        NEVER_REUSE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # normalized (normalize.py)
    name: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    global_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # The reader turned click and open tracking off (their preferences page): their links go
    # straight to the sites and nothing of theirs is counted (mailer's docs/tracking.md). No Python
    # default: inserts that do not name it (older revisions' tests, bulk paths) leave it to the database.
    no_tracking: Mapped[bool] = mapped_column(Boolean, server_default=false())


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("list_id", "subscriber_id"),
        Index(None, "subscriber_id"),
        CheckConstraint(_one_of("status", Status), name="status"),
        CheckConstraint(_one_of("consent_source", ConsentSource), name="consent_source"),
        NEVER_REUSE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    consent_source: Mapped[str] = mapped_column(String(16))
    consent_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    consent_user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The signup request before a double opt-in (Mailchimp's OPTIN_TIME / OPTIN_IP); consent_at and
    # consent_ip then hold the confirmation (CONFIRM_TIME / CONFIRM_IP).
    optin_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    optin_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Random, signed into this membership's links (subscribers.links); the database fills it in
    # when an insert leaves it out (bulk imports), 16 hex characters.
    token_key: Mapped[str] = mapped_column(String(16), server_default=FetchedValue())


class History(Base):
    """Append-only. `forget` sets subscriber_id to NULL and scrubs `detail` of its rows;
    deleting a list sets list_id to NULL. No foreign keys on purpose: a log row must never
    block a delete, and PostgreSQL's per-row FK triggers tripled the cost of a bulk import."""

    __tablename__ = "history"
    __table_args__ = (Index(None, "subscriber_id"),)

    id: Mapped[int] = mapped_column(HistoryId, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    list_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    old_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    new_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source: Mapped[str] = mapped_column(String(64))   # who or what: "admin", "import", "web", "sendgrid-webhook"
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)


class Outbox(Base):
    """What happened to readers (and to sends, written by mailer), for other systems: one row per
    event, written in the transaction of the change (subscribers/outbox.py); mailer's outgoing
    webhooks deliver them (mailer/notify/). `email` is emptied when its reader is forgotten, so
    no event still to be delivered carries the address. No foreign keys, like history."""

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "fanned_out", "id"), Index(None, "subscriber_id"), NEVER_REUSE)

    id: Mapped[int] = mapped_column(HistoryId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)     # msg_...: the webhook-id of every try
    type: Mapped[str] = mapped_column(String(32))                       # subscriber.created, send.finished, ...
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    subscriber_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    list_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)    # a delivery row per endpoint made


class SubscriberTag(Base):
    """A subscriber's tags (tags.py says what a tag may be); a send can pick readers by tag."""

    __tablename__ = "subscriber_tags"
    __table_args__ = (Index(None, "tag"), Index(None, "tag", "subscriber_id"))   # 0005_audience, 0008_tag_order

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class Forgotten(Base):
    __tablename__ = "forgotten"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)  # tokens.forget_hash
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StoreMeta(Base):
    """Facts about the store itself, e.g. "legacy_links_upto": links made before tokens carried
    a key are valid only for memberships with an id up to this value."""

    __tablename__ = "store_meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class SignupRequest(Base):
    """The web form's last request per list and address (keyed hash, as in `forgotten`), updated
    in place: the resend throttle, and what lets a confirmation lift an earlier suppression."""

    __tablename__ = "signup_requests"
    __table_args__ = (UniqueConstraint("list_id", "address_hash"), Index(None, "address_hash"), NEVER_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    address_hash: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    mailed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


lists = List.__table__
subscribers = Subscriber.__table__
memberships = Membership.__table__
history = History.__table__
forgotten = Forgotten.__table__
subscriber_tags = SubscriberTag.__table__
store_meta = StoreMeta.__table__
signup_requests = SignupRequest.__table__
outbox = Outbox.__table__
metadata = Base.metadata
