"""Alembic environment for mailer's own tables, run programmatically by mailer.migrate."""

# Imported for their tables, which join the metadata (issue_states and schedule_slots, worker_leases, rate_budget,
# send_links, send_tracking and tracking_hits):
import mailer.schedule.states
import mailer.send.leases
import mailer.send.ratelimit
import mailer.send.tracking  # noqa: F401
from mailer.migrate import VERSION_TABLE
from mailer.send.ledger import metadata
from subscribers.db import run_env

run_env(metadata, VERSION_TABLE)
