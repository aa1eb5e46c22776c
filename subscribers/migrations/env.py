"""Alembic environment for the subscribers package, run programmatically by subscribers.db.

The caller passes an open Connection in `config.attributes["connection"]`; there is no alembic.ini.
"""

from alembic import context

from subscribers.db import VERSION_TABLE
from subscribers.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through subscribers.db
    raise RuntimeError("run migrations through subscribers.db.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
