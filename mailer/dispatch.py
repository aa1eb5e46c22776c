"""Stage 5: composed issue x list -> the send run: ledger, batches, retries, resume, progress.

    plan = plan_send(settings, composed, "crank")          # who, how many, already sent?
    summary = run_send(settings, plan, on_progress=...)    # exactly once, resumable

The readers are fixed when the send starts (mailer.ledger). Each batch is claimed atomically,
committed as `sending`, handed to the backend, and its results committed. A rerun of the same
issue and list after any crash (even kill -9) continues with the pending readers; the batch that
was `sending` at the crash is named and resent (`[delivery] on_interrupted = "resend"`) or skipped
("skip"). Message-IDs derive from the send and the reader, so over SMTP a resent copy carries the
same Message-ID as a copy the server may have taken. A fully sent issue is reported, never resent.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from sqlalchemy.exc import IntegrityError

from mailer import batches, ledger
from mailer.batches import BatchLoop
from mailer.config import Settings, database_url, secret
from mailer.deliver.base import Backend, create_backend
from mailer.errors import DeliveryError, SendError
from mailer.ledger import SendStatus
from mailer.model import ComposedIssue
from mailer.personalize import Recipient, personalize, prepare

MAX_ATTEMPTS = batches.MAX_ATTEMPTS


@dataclass
class Plan:
    """What a send would do; `readers` is how many this run would still try."""

    issue: ComposedIssue
    list_id: int
    list_name: str
    backend: str
    readers: int
    send_id: int | None = None
    already_sent: bool = False
    engine: object = field(default=None, repr=False)


@dataclass
class SendSummary:
    issue: str
    list: str
    backend: str
    send_id: int | None = None
    total: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    duration: float = 0.0
    already_sent: bool = False
    dry_run: bool = False
    interrupted: list = field(default_factory=list)   # [(batch, readers)] found in flight at start
    status: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def open_store(settings: Settings):
    from mailer.migrate import connect

    return connect(database_url(settings))


def plan_send(settings: Settings, issue: ComposedIssue, list_name: str, backend: str | None = None) -> Plan:
    """Look the list and any earlier send of this issue up; count who would get it."""
    from sqlalchemy import func, select

    from subscribers.store import get_list, recipients_select

    engine = open_store(settings)
    with engine.connect() as conn:
        found = get_list(conn, list_name)
        row = ledger.find_send(conn, issue.slug, found.id)
        if row is None:
            readers = conn.execute(select(func.count()).select_from(recipients_select(found.id).subquery())).scalar_one()
        else:
            c = ledger.counts(conn, row.id)
            readers = c["pending"] + c["sending"] + c["deferred"]
    return Plan(issue, found.id, found.name, backend or settings.delivery.backend, readers,
                send_id=row.id if row else None, already_sent=row is not None and readers == 0, engine=engine)


def run_send(settings: Settings, plan: Plan, *, backend: Backend | None = None,
             on_progress: Callable[[SendSummary], None] | None = None,
             notice: Callable[[str], None] = lambda message: None,
             on_interrupted: str | None = None, retry_delay: float = 10.0,
             sleep: Callable[[float], None] = time.sleep) -> SendSummary:
    """Send (or resume sending) plan.issue to plan.list; returns the counts for the whole send."""
    started = time.monotonic()
    summary = SendSummary(plan.issue.slug, plan.list_name, plan.backend)
    if plan.send_id is None and plan.readers == 0:
        raise SendError(f"{plan.list_name} has no active subscribers: nothing to send")
    if not plan.already_sent:  # settings and secrets fail here, before the ledger is touched
        tokens = _token_maker(settings, plan.list_id)
        ref_key = ref_key_of(settings)
        backend = backend or create_backend(plan.backend, settings)
    send_id, summary.interrupted, finished = _start(plan, on_interrupted or settings.delivery.on_interrupted, notice)
    summary.send_id = send_id
    with plan.engine.connect() as conn:
        _fill(summary, ledger.counts(conn, send_id))
    if finished:
        summary.already_sent, summary.status = True, SendStatus.DONE.value
        return summary
    edition = prepare(plan.issue, settings.newsletter, nonce=f"s{send_id}")
    loop = BatchLoop(plan.engine, send_id, plan.list_id, edition, tokens, backend, summary,
                     on_progress or (lambda s: None), started, ref_key=ref_key)
    loop.progress()  # the starting point, so a progress bar's rate counts this run only
    try:
        with backend:
            loop.run(retry_delay, sleep)
    except DeliveryError as exc:
        _finish(plan, summary, SendStatus.STOPPED, str(exc))
        raise SendError(f"send stopped after {summary.sent:,} sent: {exc}. The ledger is intact: run the "
                        "same command again to continue.") from exc
    except BaseException:
        _finish(plan, summary, SendStatus.STOPPED, "interrupted")  # its batch stays `sending`: named next run
        raise
    left = summary.deferred + _unfinished(plan, send_id)
    _finish(plan, summary, SendStatus.STOPPED if left else SendStatus.DONE, None)
    summary.duration = time.monotonic() - started
    return summary


def dry_run(settings: Settings, plan: Plan, *, on_progress=None) -> SendSummary:
    """Everything but delivery: personalize each reader a new send would fix; write nothing."""
    from subscribers.store import iter_recipients

    started = time.monotonic()
    summary = SendSummary(plan.issue.slug, plan.list_name, plan.backend, send_id=plan.send_id,
                          total=plan.readers, dry_run=True)
    edition = prepare(plan.issue, settings.newsletter, nonce="dry")
    tokens = _token_maker(settings, plan.list_id)
    if plan.send_id is None:
        with plan.engine.connect() as conn:
            for subscriber_id, email, name in iter_recipients(conn, plan.list_id):
                try:
                    personalize(edition, Recipient(ledger.delivery_ref(0, subscriber_id, "dry-run"), email, name or "",
                                                   tokens(subscriber_id))).as_bytes()
                    summary.sent += 1
                except DeliveryError:
                    summary.failed += 1
    else:
        summary.sent = plan.readers  # a resumed send: its readers were checked when it started
    summary.duration = time.monotonic() - started
    return summary


def _start(plan: Plan, on_interrupted: str, notice) -> tuple[int, list, bool]:
    """Create the send (readers fixed now) or take over an earlier one, settling its batch in flight.

    Returns (send id, batches found in flight, whether the send was already complete)."""
    from subscribers.store import recipients_select

    for _ in range(2):  # a concurrent first start loses the UNIQUE race once, then resumes
        try:
            with plan.engine.begin() as conn:
                row = ledger.find_send(conn, plan.issue.slug, plan.list_id)
                if row is None:
                    return ledger.create_send(conn, issue=plan.issue.slug, list_id=plan.list_id,
                                              list_name=plan.list_name, subject=plan.issue.subject,
                                              backend=plan.backend, recipients=recipients_select(plan.list_id)), [], False
                c = ledger.counts(conn, row.id)
                if not (c["pending"] or c["sending"] or c["deferred"]):
                    return row.id, [], True
                if ledger.runner_alive(row):
                    raise SendError(f"send #{row.id} of {row.issue} to {row.list_name} is running in another "
                                    f"process ({row.runner}); wait for it or stop it first")
                ledger.take_over(conn, row.id, plan.backend)
                flying = ledger.in_flight(conn, row.id)
                for batch, readers in flying:
                    verb = "resending it" if on_interrupted == "resend" else "skipping it"
                    notice(f"batch {batch} ({readers:,} readers) was in flight when the last run stopped: the "
                           f"provider may or may not have taken it; {verb} ([delivery] on_interrupted = "
                           f"\"{on_interrupted}\")")
                ledger.settle_in_flight(conn, row.id, resend=on_interrupted == "resend")
                ledger.requeue_deferred(conn, row.id)
                return row.id, [tuple(f) for f in flying], False
        except IntegrityError:
            continue
    raise SendError(f"could not start the send of {plan.issue.slug} to {plan.list_name}")


def _fill(summary: SendSummary, c: dict[str, int]) -> None:
    summary.total = sum(c.values())
    summary.sent, summary.failed, summary.skipped, summary.deferred = (
        c["accepted"], c["failed"], c["skipped"], c["deferred"])


def _unfinished(plan: Plan, send_id: int) -> int:
    with plan.engine.connect() as conn:
        c = ledger.counts(conn, send_id)
    return c["pending"] + c["sending"] + c["deferred"]


def _finish(plan: Plan, summary: SendSummary, status: SendStatus, error: str | None) -> None:
    with plan.engine.begin() as conn:
        _fill(summary, ledger.finish(conn, summary.send_id, status, error))
    summary.status = status.value


def _token_maker(settings: Settings, list_id: int) -> Callable[[int], str]:
    from subscribers.tokens import token_maker

    key = secret(settings.secret_key_env, key="secret_key_env (unsubscribe links)")
    return token_maker(key, "unsubscribe", list_id)  # the signer is built once per send


def ref_key_of(settings: Settings) -> str:
    """The key that signs delivery refs (mailer/refs.py): the secret key."""
    return secret(settings.secret_key_env, key="secret_key_env (signed delivery refs)")


def send_proof(settings: Settings, issue: ComposedIssue, addresses: list[str], *, backend_name: str | None = None,
               backend: Backend | None = None) -> list:
    """A copy marked as a proof ("[PROOF] " subject, X-Mailer-Proof) to each address; no ledger."""
    edition = prepare(issue, settings.newsletter, proof=True)
    outs = [personalize(edition, Recipient(f"proof.{i}", address, "", "proof"))
            for i, address in enumerate(addresses, 1)]
    backend = backend or create_backend(backend_name or settings.delivery.backend, settings)
    with backend:
        return [r for k in range(0, len(outs), backend.max_batch) for r in backend.send_batch(outs[k:k + backend.max_batch])]
