"""Database URL -> mailer's own tables (the send ledger) at their Alembic head.

mailer keeps its own Alembic history in `mailer/migrations/` with its own version table,
`mailer_alembic_version`, beside the subscribers package's (`alembic_version`) in the same
database (docs/design.md). `upgrade(url)` applies the subscribers migrations first, because the
ledger's foreign keys point at `lists` and `subscribers`. It runs programmatically: no alembic.ini.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from subscribers import db
from subscribers.db import Migrations

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "mailer_alembic_version"
HISTORY = Migrations(MIGRATIONS, VERSION_TABLE, lock_id=0x5CB5_0004)
_upgraded: set[str] = set()


def head_revision() -> str:
    return HISTORY.head()


def current_revision(engine: Engine) -> str | None:
    return HISTORY.current(engine)


def upgrade(url: str | Engine) -> str:
    """Bring the subscribers tables, then mailer's, to head; returns mailer's head revision. An
    Engine made here from a URL is disposed before returning."""
    engine = url if isinstance(url, Engine) else db.create(url)
    try:
        db.upgrade(engine)
        return HISTORY.upgrade(engine)
    finally:
        if engine is not url:
            engine.dispose()


def connect(url: str) -> Engine:
    """An Engine with both histories applied (once per URL and process)."""
    engine = db.connect(url)
    if url not in _upgraded:
        upgrade(engine)
        _upgraded.add(url)
    return engine
