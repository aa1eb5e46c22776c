"""Database URL -> SQLAlchemy Engine with this package's Alembic migrations applied.

SQLite runs in WAL mode with foreign keys on; PostgreSQL through psycopg 3
(`postgresql+psycopg://`; a bare `postgresql://` URL is taken to mean the same). The migrations
(`subscribers/migrations/`, version table `alembic_version`) ship inside the package and run
programmatically: no alembic.ini. mailer's own history uses its own version table.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    OperationalError,
    SQLAlchemyError,
)

from subscribers.errors import StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
_LOCK_ID = 0x5CB5_0001  # pg_advisory_xact_lock key: one migrator at a time
IDLE_PING_SECONDS = 10.0
# A process frozen inside a transaction (SIGSTOP, a suspended VM, a debugger) holds its row locks
# until PostgreSQL ends that session: every other worker, the web service and a rerun queue behind
# it. None of our transactions waits on anything but the database (docs/exactly-once.md), so one
# idle this long belongs to a frozen process; its work is redone by the lease rules.
IDLE_IN_TRANSACTION_SECONDS = 30
_upgraded: set[str] = set()  # URLs already brought to head in this process


def _driver_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create(url: str) -> Engine:
    """An Engine for `url`, without touching the schema."""
    url = _driver_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    try:
        engine = create_engine(url, connect_args={"options": _pg_options(parsed)})
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use database {parsed.render_as_string(hide_password=True)}: {exc}") from exc
    _ping_when_idle(engine)
    return engine


def _pg_options(parsed: URL) -> str:
    """libpq's `options` for our sessions: the URL's own (a search_path, say), then the bound on
    a transaction left idle (IDLE_IN_TRANSACTION_SECONDS)."""
    given = parsed.query.get("options", "")
    own = given if isinstance(given, str) else " ".join(given)
    return f"{own} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_SECONDS * 1000}".strip()


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping's safety without its round trip on every checkout: a connection is pinged
    only when it comes out of the pool after IDLE_PING_SECONDS unused (a server restart or a
    firewall may have dropped it meanwhile); one in steady use (the web service's writer, an
    import) goes straight to work. A failed ping makes the pool open a fresh connection."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # any failure: the connection is not usable
            raise DisconnectionError(str(exc)) from exc


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:" and not Path(database).parent.is_dir():
        raise StoreError(f"cannot create the SQLite database {database}: folder {Path(database).parent} does not exist")
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # per connection: these are not stored in the file
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")      # readers never block the writer
        cur.execute("PRAGMA synchronous=NORMAL")    # safe with WAL: a crash loses no committed txn
        cur.close()

    return engine


class Migrations:
    """One Alembic history run programmatically (no alembic.ini) with its own version table.

    The subscribers package has one; mailer keeps its own beside it in the same database.
    """

    def __init__(self, script_location: Path, version_table: str, lock_id: int):
        self.script_location, self.version_table, self.lock_id = script_location, version_table, lock_id

    def config(self, connection):
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.attributes["connection"] = connection
        return cfg

    def head(self) -> str:
        head = ScriptDirectory.from_config(self.config(None)).get_current_head()
        if head is None:   # a packaging mistake, not a state of the database
            raise StoreError(f"no migrations found in {self.script_location}")
        return head

    def current(self, engine: Engine) -> str | None:
        try:
            with engine.connect() as conn:
                opts = {"version_table": self.version_table}
                return MigrationContext.configure(conn, opts=opts).get_current_revision()
        except OperationalError as exc:
            raise StoreError(f"cannot open database {_where(engine)}: {exc.orig}") from exc

    def upgrade(self, engine: Engine) -> str:
        """Bring this history to head; returns the head revision."""
        head = self.head()
        try:
            if self.current(engine) == head:
                return head
            with engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                if sqlite:  # before any transaction, or SQLite ignores it (see _sqlite_fk_off)
                    _sqlite_fk_off(conn)
                try:
                    with conn.begin():
                        if not sqlite:  # two first uses at once: the second waits
                            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.lock_id})
                        command.upgrade(self.config(conn), "head")
                        if sqlite:
                            _sqlite_fk_check(conn)
                finally:
                    if sqlite:
                        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                        conn.commit()
        except OperationalError as exc:
            raise StoreError(f"cannot open database {_where(engine)}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate database {_where(engine)}: {exc}") from exc
        return head


def _sqlite_fk_off(conn) -> None:
    """SQLite alters a table by copying it (a new table, the rows, drop the old, rename): with
    foreign keys on, dropping the old table would cascade to every row that refers to it. SQLite
    honours the pragma only outside a transaction; sqlite3 opens none for a PRAGMA."""
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()


def _sqlite_fk_check(conn) -> None:
    """Refuse to commit a migration that left a row pointing nowhere."""
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(f"a migration left {len(broken)} rows whose foreign keys point nowhere, e.g. {broken[0]}")


def run_env(metadata, version_table: str) -> None:
    """The body of an Alembic env.py run through `Migrations.upgrade` (no alembic.ini).

    The caller passed an open Connection in `config.attributes["connection"]`.
    """
    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only through Migrations.upgrade
        raise RuntimeError("run migrations through subscribers.db.upgrade(url) or mailer.migrate.upgrade(url)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


MIGRATIONS_HISTORY = Migrations(MIGRATIONS, VERSION_TABLE, _LOCK_ID)


def connect(url: str) -> Engine:
    """An Engine for `url`, with the subscribers migrations applied on first use."""
    engine = create(url)
    if url not in _upgraded:
        MIGRATIONS_HISTORY.upgrade(engine)
        _upgraded.add(url)
    return engine


def upgrade(url: str | Engine) -> str:
    """Apply the subscribers migrations up to head; returns the head revision. An Engine made here
    from a URL is disposed before returning."""
    if isinstance(url, Engine):
        return MIGRATIONS_HISTORY.upgrade(url)
    engine = create(url)
    try:
        return MIGRATIONS_HISTORY.upgrade(engine)
    finally:
        engine.dispose()


def head_revision() -> str:
    return MIGRATIONS_HISTORY.head()


def current_revision(engine: Engine) -> str | None:
    return MIGRATIONS_HISTORY.current(engine)
