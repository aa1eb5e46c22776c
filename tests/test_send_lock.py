"""While a batch is with the provider, the send holds no write transaction (issue 23): on SQLite
another connection takes the writer lock at once (no waiting allowed), on PostgreSQL none of the
send's connections sits in an open transaction. So readers' one-click unsubscribes never wait for
a provider's answer."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid

import pytest
from sqlalchemy import create_engine, text

from mailer.send.deliver.registry import create_backend
from tests.deliver.helpers import seed
from tests.test_dispatch import composed, repo, secrets_in_env, send  # noqa: F401 - fixtures

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose


@pytest.fixture
def store_settings(settings, db_url):
    """This test's database; on PostgreSQL its connections carry a name of their own, so the probe
    looks at them only (other tests share the server)."""
    if not db_url.startswith("sqlite"):
        db_url += f"&application_name=probe-{uuid.uuid4().hex[:12]}"
    return dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))


def _free_now(url: str) -> bool:
    """Whether a write could start right now, without waiting for anyone."""
    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")        # raises "database is locked" if a writer holds it
            probe.execute("COMMIT")
            return True
        finally:
            probe.close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            busy = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = current_setting('application_name') "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'")).scalar_one()
        return busy == 0
    finally:
        engine.dispose()


def test_no_write_transaction_is_open_while_the_provider_has_a_batch(store_settings, composed):  # noqa: F811
    seed(store_settings.database.url, 120)
    outbox = create_backend("outbox", store_settings)
    seen: list[bool] = []

    class Probing(type(outbox)):
        def _send(self, batch, encoded):
            seen.append(_free_now(store_settings.database.url))
            return super()._send(batch, encoded)

    summary = send(store_settings, composed, backend=Probing(store_settings.delivery.outbox_dir))
    assert (summary.sent, summary.status) == (120, "done")
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} batches went out inside a write transaction"
