"""Database URL -> mailer's own tables (the send ledger) at their Alembic head.

mailer keeps its own Alembic history in `mailer/migrations/` with its own version table,
`mailer_alembic_version`, beside the subscribers package's (`alembic_version`) in the same
database (notes/schema.md). `upgrade(url)` applies the subscribers migrations first, because the
ledger's foreign keys point at `lists` and `subscribers`. It runs programmatically: no alembic.ini.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mailer.errors import SendError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "mailer_alembic_version"
_LOCK_ID = 0x5CB5_0004  # pg_advisory_xact_lock key: one mailer migrator at a time
_upgraded: set[str] = set()


def _config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(url: str | Engine) -> str:
    """Bring the subscribers tables, then mailer's, to head; returns mailer's head revision."""
    from subscribers import db

    engine = url if isinstance(url, Engine) else db.create(url)
    db.upgrade(engine)
    head, where = head_revision(), engine.url.render_as_string(hide_password=True)
    try:
        if current_revision(engine) == head:
            return head
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # two first sends at once: the second waits
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
            from alembic import command

            command.upgrade(_config(conn), "head")
    except OperationalError as exc:
        raise SendError(f"cannot open database {where}: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise SendError(f"cannot migrate database {where}: {exc}") from exc
    return head


def connect(url: str) -> Engine:
    """An Engine with both histories applied (once per URL and process)."""
    from subscribers import db

    engine = db.connect(url)
    if url not in _upgraded:
        upgrade(engine)
        _upgraded.add(url)
    return engine
