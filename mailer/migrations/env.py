"""Alembic environment for mailer's own tables, run programmatically by mailer.migrate."""

import mailer.schedule.states  # noqa: F401,E402  (its tables join the metadata)
import mailer.send.leases  # noqa: F401,E402  (worker_leases joins the metadata)
import mailer.send.ratelimit  # noqa: F401,E402  (rate_budget too)
from mailer.migrate import VERSION_TABLE
from mailer.send.ledger import metadata
from subscribers.db import run_env

run_env(metadata, VERSION_TABLE)
