"""Alembic environment for mailer's own tables, run programmatically by mailer.migrate."""

from mailer.ledger import metadata
import mailer.issue_states  # noqa: F401,E402  (its tables join the metadata)
import mailer.leases  # noqa: F401,E402  (worker_leases joins the metadata)
import mailer.ratelimit  # noqa: F401,E402  (rate_budget too)
from mailer.migrate import VERSION_TABLE
from subscribers.db import run_env

run_env(metadata, VERSION_TABLE)
