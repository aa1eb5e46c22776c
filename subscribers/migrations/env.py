"""Alembic environment for the subscribers package, run programmatically by subscribers.db."""

from subscribers.db import VERSION_TABLE, run_env
from subscribers.models import metadata

run_env(metadata, VERSION_TABLE)
