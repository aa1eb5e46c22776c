"""Alembic environment for mailer's own tables, run programmatically by mailer.migrate.

The caller passes an open Connection in `config.attributes["connection"]`; there is no alembic.ini.
"""

from alembic import context

from mailer.ledger import metadata
from mailer.migrate import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through mailer.migrate
    raise RuntimeError("run migrations through mailer.migrate.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
