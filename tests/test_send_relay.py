"""SMTP relays that lose a reply and stay down, or refuse us rather than the readers, against the
real local sink; every reader's copies are counted at the sink (docs/exactly-once.md, "A relay
that refuses us" and "In doubt before reconnecting"). Also `mailer send --retry-failed`."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest

from mailer.errors import SendError
from mailer.send import dispatch, ledger
from tests.deliver.helpers import seed
from tests.servers.smtp_sink import SmtpSink
from tests.test_dispatch import (  # noqa: F401
    composed,
    repo,
    secrets_in_env,
    store_settings,
)
from tests.test_send_edges import delivery, run, smtp
from tests.test_send_signals import command, environment, project, rerun

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # http base_url on purpose


def copies(*sinks: SmtpSink) -> Counter:
    return Counter(to for sink in sinks for m in sink.messages for to in m.rcpt_tos)


def counts(settings) -> dict:
    with dispatch.open_store(settings).connect() as conn:
        return {s.value: n for s, n in ledger.counts(conn, 1).items() if n}


def relay(settings, port: int, **changes):
    """SMTP to the sink on `port`, one connection, no waiting for deferred readers nor a down relay."""
    return delivery(smtp(settings, port, connections=1, connect_retry_seconds=0, **changes),
                    retry_wait_seconds=0, retry_first_seconds=1)


# --- a lost 250, and the relay stays down -------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 20])
def test_a_lost_reply_is_in_doubt_even_when_the_relay_stays_down_and_skip_never_resends_it(
        store_settings, composed, batch_size):
    seed(store_settings.database.url, 3)
    with SmtpSink(drop_after_data={"r1@example.org"}, down_after_drop=True) as down:
        settings = delivery(relay(store_settings, down.port, batch_size=batch_size), on_interrupted="skip")
        if batch_size == 1:   # the next batch cannot connect: the run stops, r1 recorded in doubt
            with pytest.raises(SendError, match="cannot connect"):
                run(settings, composed)
        else:                 # the rest of the batch cannot go: deferred, r1 recorded in doubt
            first = run(settings, composed)
            assert (first.sent, first.in_doubt, first.deferred) == (1, 1, 1)
            time.sleep(1.1)   # retry_first_seconds
        assert counts(settings)["sending"] == 1
    with SmtpSink() as back:   # the relay is back (on a new port)
        notes: list[str] = []
        second = run(relay(settings, back.port, batch_size=batch_size), composed, notice=notes.append)
        assert second.status == "done" and "(1 readers) was in flight" in notes[0]
    assert copies(down, back) == {"r0@example.org": 1, "r1@example.org": 1, "r2@example.org": 1}
    assert counts(settings) == {"accepted": 2, "skipped": 1}


# --- a relay that refuses us, not the readers ------------------------------------------------------

@pytest.mark.parametrize("options, cause", [
    ({"refuse_rcpt": "554 5.7.1 <r0@example.org>: Relay access denied"}, "Relay access denied"),
    ({"refuse_rcpt": "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"},
     "Client host rejected"),
    ({"refuse_rcpt": "550 relay not permitted"}, "relay not permitted"),
    ({"users": {"crank": "secret"}}, "requires authentication before it takes mail: set [delivery.smtp] username"),
    ({"refuse_sender": "554 5.7.1 Relay access denied"}, "refuses to take mail from this host (relaying denied)"),
])
def test_a_relay_refusing_every_first_reader_stops_the_run_with_everyone_pending(store_settings, composed,
                                                                                 options, cause):
    seed(store_settings.database.url, 4)
    with SmtpSink(**options) as sink:
        settings = relay(store_settings, sink.port)
        with pytest.raises(SendError) as stopped:
            run(settings, composed)
        message = str(stopped.value)
        assert cause in message and "run the same command again to continue" in message
        assert counts(settings) == {"pending": 4}
        handler = sink.controller.handler   # the relay is fixed: the rerun sends everyone once
        handler.refuse_rcpt = handler.refuse_sender = None
        if "users" in options:
            sink.controller.SMTP_kwargs.update(auth_required=False)
        assert run(settings, composed).status == "done"
    assert copies(sink) == {f"r{i}@example.org": 1 for i in range(4)}


@pytest.mark.parametrize("replies, failed", [
    ({f"r{i}@example.org": "550 5.1.1 User unknown" for i in range(3)}, 3),   # about the readers: failed
    ({"r1@example.org": "554 5.7.1 Relay access denied", "r2@example.org": "554 5.7.1 Relay access denied"}, 2),
])
def test_refusals_about_the_readers_or_after_an_accepted_reader_fail_those_readers(store_settings, composed,
                                                                                  replies, failed):
    seed(store_settings.database.url, 3)
    with SmtpSink(replies=replies) as sink:
        summary = run(relay(store_settings, sink.port), composed)
    assert (summary.status, summary.failed, summary.sent) == ("done", failed, 3 - failed)
    assert set(copies(sink).values()) <= {1}


# --- mailer send --retry-failed ------------------------------------------------------------------

def test_retry_failed_resends_only_the_readers_that_failed_never_the_accepted_or_in_doubt(tmp_path, repo):
    refused = "550 5.7.1 Message rejected by policy"
    with SmtpSink(replies={"r1@example.org": refused, "r4@example.org": refused},
                  drop_after_data={"r2@example.org"}) as sink:
        config, _ = project(tmp_path, repo, sink.port, on_interrupted="skip")
        first = rerun(config, tmp_path)   # r1, r4 refused; r2's reply lost (in doubt)
        assert "Traceback" not in first.stderr and "1 may or may not have been taken" in first.stdout
        sink.controller.handler.replies.clear()   # the policy was lifted
        again = rerun(config, tmp_path)           # a plain rerun: r2 skipped, the failed left alone
        assert "Traceback" not in again.stderr and "r1@example.org" not in copies(sink)
        retried = command(config, "--retry-failed")
        done = subprocess.run(retried, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "2 readers of send #1 failed; --retry-failed sends to them again" in done.stderr
        twice = subprocess.run(retried, cwd=tmp_path, env=environment(), capture_output=True, text=True,
                               timeout=120, check=False)
        assert "0 readers of send #1 failed" in twice.stderr and "already sent" in twice.stdout
        got = copies(sink)
    assert got == Counter({f"r{i}@example.org": 1 for i in range(30)})
