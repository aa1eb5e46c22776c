"""Stage 5: composed issue x list -> the send run: ledger, batches, retries, resume, progress.

    plan = plan_send(settings, composed, "crank")          # who, how many, already sent?
    summary = run_send(settings, plan, on_progress=...)    # exactly once, resumable

The readers are fixed when the send starts (mailer.send.ledger). Each batch is claimed atomically,
committed as `sending`, handed to the backend, and its results committed. A rerun of the same
issue and list after any crash (even kill -9) continues with the pending readers; a batch left
`sending` (in flight at a crash, or sent without an answer: AmbiguousDelivery, SMTP's IN_DOUBT) is
named and resent (`[delivery] on_interrupted = "resend"`) or skipped ("skip"); only a batch that
provably never reached the provider is retried without asking. Message-IDs derive from the send
and the reader, so over SMTP a resent copy carries the same Message-ID as a copy the server may
have taken. Deferred readers (4xx) are retried for [delivery] retry_hours. The runner's heartbeat
(ledger.Heartbeat) tells a live runner from a dead one. A fully sent issue is reported, never
resent. The argument: docs/exactly-once.md.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mailer import engines
from mailer.compose import tracking as links
from mailer.compose.archived import archive_key, neutral_copy
from mailer.compose.personalize import Edition, Recipient, personalize, prepare
from mailer.config import ClickTracking, OnInterrupted, Settings, database_url, secret_key, tracking_problem
from mailer.errors import (
    AmbiguousDelivery,
    ConfigError,
    DatabaseUnavailable,
    DeliveryError,
    SendBusy,
    SendError,
    SendTakenOver,
)
from mailer.i18n import known
from mailer.model import STAFF_TOKENS, ArchiveCopy, ComposedIssue
from mailer.send import batches, leases, ledger, pacing, segments, tracking, warmup
from mailer.send.batches import BatchLoop
from mailer.send.deliver.base import Backend
from mailer.send.deliver.refusals import refusal_event
from mailer.send.deliver.registry import create_backend
from mailer.send.ledger import SendStatus, State
from mailer.send.stall import Stall
from mailer.send.stall import apply as apply_journal
from subscribers.links import MembershipKeys
from subscribers.models import lists, utcnow
from subscribers.policy import ingest
from subscribers.store import get_list
from subscribers.tokens import token_maker


@dataclass
class Plan:
    """What a send would do; `readers` is how many this run would still try."""

    issue: ComposedIssue
    list_id: int
    list_name: str
    backend: str
    readers: int
    engine: Engine = field(repr=False)
    send_id: int | None = None
    already_sent: bool = False
    segment: str = ""              # segments.py: "" = the whole list


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
    # [(batch, readers)] found in flight at start (`builtins`: `list` names the list here)
    interrupted: builtins.list = field(default_factory=builtins.list)
    in_doubt: int = 0              # readers whose message may or may not have been taken (left `sending`)
    retry_at: str | None = None    # ISO time the earliest deferred reader is due again
    status: str = ""
    segment: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def open_store(settings: Settings) -> Engine:
    """The project's database, both schemas at head: this process's one Engine for it (mailer/engines.py)."""
    return engines.get(database_url(settings))


def list_language(settings: Settings, list_name: str) -> str:
    """The language a list's mails speak (their footer): its own, else [newsletter] language.
    ListNotFound for no such list, before anything is composed."""
    with open_store(settings).connect() as conn:
        return known(get_list(conn, list_name).language) or settings.newsletter.language


def language_of(settings: Settings, engine: Engine, list_id: int) -> str:
    """list_language for a list known by its id (a worker's send row)."""
    with engine.connect() as conn:
        own = conn.execute(select(lists.c.language).where(lists.c.id == list_id)).scalar()
    return known(own) or settings.newsletter.language


def plan_send(settings: Settings, issue: ComposedIssue, list_name: str, backend: str | None = None,
              tags: tuple[str, ...] = ()) -> Plan:
    """Look the list and any earlier send of this issue (and segment) up; count who would get it."""
    segment = segments.segment_key(tags)
    engine = open_store(settings)
    with engine.connect() as conn:
        found = get_list(conn, list_name)
        row = ledger.find_send(conn, issue.slug, found.id, segment)
        if row is None:
            chosen = segments.readers(conn, issue.slug, found.id, segment).subquery()
            readers = conn.execute(select(func.count()).select_from(chosen)).scalar_one()
        else:
            c = ledger.counts(conn, row.id)
            readers = ledger.unfinished(c)
    return Plan(issue, found.id, found.name, backend or settings.delivery.backend, readers,
                send_id=row.id if row else None, already_sent=row is not None and readers == 0, engine=engine,
                segment=segment)


def run_send(settings: Settings, plan: Plan, *, backend: Backend | None = None,
             on_progress: Callable[[SendSummary], None] | None = None,
             notice: Callable[[str], None] = lambda message: None,
             on_interrupted: OnInterrupted | None = None, take_over: bool = False,
             sleep: Callable[[float], object] = time.sleep,
             stop: Callable[[], bool] = lambda: False) -> SendSummary:
    """Send (or resume sending) plan.issue to plan.list; returns the counts for the whole send.

    `stop` is asked between batches (mailer/schedule/scheduler.py on SIGTERM): when it says True the run ends
    after recording the batch on the wire, status `stopped`, and a rerun continues."""
    started = time.monotonic()
    summary = SendSummary(plan.issue.slug, plan.list_name, plan.backend, segment=plan.segment)
    if plan.send_id is None and plan.readers == 0:
        raise SendError(f"{segments.describe(plan.list_name, plan.segment)} has no active subscribers "
                        "(who have not had this issue): nothing to send")
    ready = None
    if not plan.already_sent:  # settings and secrets fail here, before the ledger is touched
        check_tracking(settings)
        ready = _Ready(_token_maker(settings, plan.list_id, plan.engine), ref_key_of(settings),
                       backend or create_backend(plan.backend, settings), archive_copy(plan.issue, settings.newsletter))
    d = settings.delivery
    paced = _paced(settings, plan, sleep) if ready else None
    send_id, summary.interrupted, finished = _start(plan, on_interrupted or d.on_interrupted,
                                                    notice, take_over=take_over,
                                                    archive=ready.archive if ready else None, journal=d.journal_dir,
                                                    order=paced.order if paced else None)
    summary.send_id = send_id
    stall = Stall(d.database_retry_seconds, notice=notice)   # the database briefly away: retried (stall.py)
    begun = stall(lambda attempt: _counted(plan, summary, send_id), "reading the send")
    if finished:
        summary.already_sent, summary.status = True, SendStatus.DONE.value
        return summary
    assert ready is not None   # complete when planned means complete now: readers never rejoin a send
    tokens, ref_key, sender = ready.tokens, ready.ref_key, ready.backend
    edition = edition_for(settings, plan.engine, plan.issue, send_id)
    retry = batches.Retry(begun, d.retry_hours, d.retry_first_seconds, d.retry_wait_seconds)
    pacer = paced.pacer if paced else None
    limit = warmup.for_run(plan.engine, send_id, settings, sender, pacer)   # a warm-up's day, in front of the pacer
    halt = stop if limit is None else (lambda: stop() or limit())
    try:
        with ledger.Heartbeat(plan.engine, send_id) as beat:
            loop = BatchLoop(plan.engine, send_id, plan.list_id, edition, tokens, sender, summary,
                             on_progress or (lambda s: None), started, retry=retry, ref_key=ref_key,
                             refused=_bounce_policy(settings, send_id, ref_key), lost=lambda: beat.lost, stop=halt,
                             stall=stall, journal=d.journal_dir, pacer=limit or pacer)
            loop.progress()  # the starting point, so a progress bar's rate counts this run only
            with sender:
                loop.run(sleep)
    except SendTakenOver as exc:
        summary.status = "taken over"
        exc.told(summary)
        raise  # the row is the new runner's now: leave it as it is
    except DatabaseUnavailable as exc:  # nothing more can be written: the send's row says `sending`, its runner gone
        raise DatabaseUnavailable(f"send stopped after {summary.sent:,} sent: {exc}") from exc
    except AmbiguousDelivery as exc:
        _finish(plan, summary, SendStatus.STOPPED, str(exc), stall)
        raise SendError(f"send stopped after {summary.sent:,} sent: {exc}. The provider may or may not have "
                        f"taken the last batch ({summary.in_doubt:,} readers): it stays in flight, and the next "
                        f"run names it and applies [delivery] on_interrupted (now \"{d.on_interrupted}\")."
                        ).told(summary) from exc
    except DeliveryError as exc:
        _finish(plan, summary, SendStatus.STOPPED, str(exc), stall)
        raise SendError(f"send stopped after {summary.sent:,} sent: {exc}. The ledger is intact: run the "
                        "same command again to continue.").told(summary) from exc
    except BaseException:
        try:
            _finish(plan, summary, SendStatus.STOPPED, "interrupted")  # its batch stays `sending`: named next run
        except SQLAlchemyError:   # the database is away too: the row stays `sending`, its runner gone
            pass
        raise
    left = summary.deferred + stall(lambda attempt: _unfinished(plan, send_id), "counting the readers left")
    if limit is not None and left and limit.reached:
        warmup.stopped_at_cap(plan.engine, send_id, limit.day, left, notice)
    if beat.lost or not _finish(plan, summary, SendStatus.STOPPED if left else SendStatus.DONE, None, stall):
        raise SendTakenOver(f"send #{send_id} was taken over by another runner after this one's last batch; "
                            "the send is the new runner's now").told(summary)
    summary.duration = time.monotonic() - started
    return summary


def failed_readers(plan: Plan) -> int:
    """How many readers of the planned send failed (`mailer send --retry-failed` would send to them)."""
    if plan.send_id is None:
        raise SendError(f"{plan.issue.slug} was never sent to {segments.describe(plan.list_name, plan.segment)}: "
                        "nothing failed to retry (leave out --retry-failed to send it)")
    with plan.engine.connect() as conn:
        return ledger.counts(conn, plan.send_id)[State.FAILED]


def retry_failed(plan: Plan) -> int:
    """`mailer send --retry-failed`: the send's failed readers back to pending, for this run to send;
    never those accepted or in doubt (left `sending`, or skipped by on_interrupted). How many."""
    assert plan.send_id is not None   # failed_readers said so
    with plan.engine.begin() as conn:
        row = conn.execute(select(ledger.sends).where(ledger.sends.c.id == plan.send_id)).one()
        at = ledger.db_now(conn)
        if ledger.runner_alive(row, at):
            raise SendBusy(_alive_message(row, at))
        return ledger.requeue_failed(conn, plan.send_id)


class _Ready(NamedTuple):
    """What a send needs from the settings and secrets, made before it touches the ledger."""
    tokens: Callable[..., str]
    ref_key: str
    backend: Backend
    archive: ArchiveCopy


def check_tracking(settings: Settings) -> None:
    """[tracking] as the send will use it ("reader" needs a privacy notice), before the ledger is touched."""
    problem = tracking_problem(settings)
    if problem:
        raise ConfigError(problem)


def edition_for(settings: Settings, engine: Engine, issue: ComposedIssue, send_id: int) -> Edition:
    """The send's edition (Message-IDs derive from the send); with [tracking] on, the issue's links
    are stored with the send (mailer/send/tracking.py) and rewritten, once, for every reader."""
    track = tracking_plan(settings, engine, issue, send_id)
    with engine.connect() as conn:
        list_name = conn.execute(select(ledger.sends.c.list_name).where(ledger.sends.c.id == send_id)).scalar() or ""
    return prepare(issue, settings.newsletter, nonce=f"s{send_id}", track=track, list_name=list_name,
                   browser_link=browser_link(settings, engine, issue.slug, send_id))


def browser_link(settings: Settings, engine: Engine, slug: str, send_id: int) -> str:
    """The send's view-in-browser link when it is not the issue's public page ("" when it is): a
    private list's or a segment's readers get the page with its key, an `archive = false` issue's
    the archive's index (docs/readers.md#what-the-archive-shows)."""
    with engine.connect() as conn:
        kind = ledger.browser_link_kind(conn, send_id)
    base = settings.newsletter.base_url.rstrip("/")
    if kind == "key":
        return f"{base}/archive/{slug}?key={archive_key(secret_key(settings), slug)}"
    return f"{base}/archive" if kind == "none" else ""


def tracking_plan(settings: Settings, engine: Engine, issue: ComposedIssue, send_id: int) -> links.Plan | None:
    t = settings.tracking
    if not t.on:
        return None
    check_tracking(settings)
    found = (links.find_links(issue.html, issue.text, settings.newsletter.base_url)
             if t.clicks is not ClickTracking.OFF else [])
    with engine.begin() as conn:
        stored = tracking.store_links(conn, send_id, found)
        tracking.purge(conn, t.keep_days)   # who clicked, past keep_days (the web service purges too)
    wanted = {link.url for link in found}
    return links.Plan(send_id, links.Signer.from_secret(secret_key(settings)), t.clicks is ClickTracking.READER,
                      {url: i for url, i in stored.items() if url in wanted}, t.opens)


def archive_copy(issue: ComposedIssue, newsletter) -> ArchiveCopy:
    """The issue as mailed, every reader field neutral: what /archive/ISSUE serves (html, text)."""
    return neutral_copy(issue, newsletter.base_url)


def proof_where(result, backend: str) -> str:
    """Where one proof (or notice) went, for the person who sent it: the outbox file, or the
    backend and its id for the message; what was refused says why."""
    if not result.ok:
        return f"{result.status.value}" + (f" ({result.detail})" if result.detail else "")
    if backend == "outbox":
        return f"written to {result.raw}"
    return f"accepted by {backend}" + (f" as {result.provider_id}" if result.provider_id else "")


def _bounce_policy(settings: Settings, send_id: int, ref_key: str):
    """A permanent per-reader refusal at RCPT with a hard-bounce status (5.1.x, 5.2.1, 5.4.4)
    becomes a hard-bounce DeliveryEvent through subscribers.policy, the webhook's own policy."""
    limits = settings.bounces.limits()

    def refused(conn, reader, detail: str | None) -> None:
        issue = conn.execute(select(ledger.sends.c.issue).where(ledger.sends.c.id == send_id)).scalar()
        event = refusal_event(reader.email, detail, ledger.delivery_ref(send_id, reader.subscriber_id, ref_key), issue)
        if event is not None:
            ingest(conn, [event], limits)

    return refused


DRY_RUN_STEP = 1000   # readers between two progress reports of a dry run (200,000 readers take ~14 s)


def dry_run(settings: Settings, plan: Plan, *, on_progress=None) -> SendSummary:
    """Everything but delivery: personalize each reader a new send would fix; write nothing.
    `on_progress(summary)` hears every DRY_RUN_STEP readers and at the end, as a send's does."""
    started = time.monotonic()
    summary = SendSummary(plan.issue.slug, plan.list_name, plan.backend, send_id=plan.send_id,
                          total=plan.readers, dry_run=True, segment=plan.segment)
    edition = prepare(plan.issue, settings.newsletter, nonce="dry", list_name=plan.list_name)
    tokens = _token_maker(settings, plan.list_id, plan.engine)
    if plan.send_id is None:
        with plan.engine.connect() as conn:
            chosen = conn.execution_options(yield_per=5000).execute(
                segments.readers(conn, plan.issue.slug, plan.list_id, plan.segment))
            for subscriber_id, email, name in chosen:
                try:
                    personalize(edition, Recipient(ledger.delivery_ref(0, subscriber_id, "dry-run"), email, name or "",
                                                   tokens(subscriber_id))).as_bytes()
                    summary.sent += 1
                except DeliveryError:
                    summary.failed += 1
                if on_progress and (summary.sent + summary.failed) % DRY_RUN_STEP == 0:
                    summary.duration = time.monotonic() - started
                    on_progress(summary)
    else:
        summary.sent = plan.readers  # a resumed send: its readers were checked when it started
    summary.duration = time.monotonic() - started
    if on_progress:
        on_progress(summary)
    return summary


def _paced(settings: Settings, plan: Plan, sleep) -> pacing.Paced | None:
    """[delivery.pacing] (mailer/send/pacing.py): the readers' order and the pacer, or None."""
    if not settings.delivery.pacing.on:
        return None
    readers = None
    if plan.send_id is None:
        with plan.engine.connect() as conn:
            readers = segments.readers(conn, plan.issue.slug, plan.list_id, plan.segment)
    tier = warmup.engagement if settings.delivery.pacing.warmup else None   # the engaged first
    return pacing.for_send(settings, plan.engine, readers, tier=tier, sleep=sleep)


def _start(plan: Plan, on_interrupted: OnInterrupted, notice, *, take_over: bool = False,
           archive: ArchiveCopy | None = None, journal: Path | None = None,
           join: bool = False, order=None) -> tuple[int, list, bool]:
    """Create the send (readers fixed now, in pacing's `order` when paced; the composed issue stored)
    or take over an earlier one, applying its journal (results the database would not take: stall.py)
    and settling what it left in flight. A shared send (`mailer send --workers`) whose live workers
    still hold batches is joined (`join`: only batches whose worker's lease is dead are settled) or refused.

    Returns (send id, batches found in flight, whether the send was already complete)."""
    for _ in range(3):  # a concurrent first start loses the UNIQUE race, a take-over the compare-and-set
        applied: list[Path] = []
        try:
            started = _start_once(plan, on_interrupted, notice, take_over, archive, journal, applied, join, order)
        except IntegrityError:
            continue
        if started is None:
            continue   # another runner changed the row since we read it: read it again
        for path in applied:   # committed: the journal's results are the ledger's now
            path.unlink(missing_ok=True)
        return started
    raise SendError(f"could not start the send of {plan.issue.slug} to {plan.list_name}: other runners kept "
                    "changing it; try again")


def _start_once(plan: Plan, on_interrupted: OnInterrupted, notice, take_over: bool, archive: ArchiveCopy | None,
                journal: Path | None, applied: list[Path], join: bool, order=None) -> tuple[int, list, bool] | None:
    with plan.engine.begin() as conn:
        row = ledger.find_send(conn, plan.issue.slug, plan.list_id, plan.segment)
        if row is None:
            chosen = segments.readers(conn, plan.issue.slug, plan.list_id, plan.segment)
            if order is not None:   # [delivery.pacing]: providers interleaved, the engaged first (pacing.py)
                chosen = order(conn, chosen)
            return ledger.create_send(conn, issue=plan.issue.slug, list_id=plan.list_id,
                                      list_name=plan.list_name, subject=plan.issue.subject,
                                      backend=plan.backend, recipients=chosen, segment=plan.segment,
                                      archive=archive, composed=plan.issue), [], False
        c = ledger.counts(conn, row.id)
        if not ledger.unfinished(c):
            return row.id, [], True
        at = ledger.db_now(conn)
        if ledger.runner_alive(row, at):
            if not take_over:
                raise SendBusy(_alive_message(row, at))
            notice(f"taking send #{row.id} over from {row.runner} (--take-over); it stops at its next "
                   "heartbeat")
        batches = _settleable(conn, row, join)
        if not ledger.take_over(conn, row, plan.backend):
            return None
        kept, paths = apply_journal(conn, journal, row.id)
        applied.extend(paths)
        if paths:
            notice(f"{kept:,} readers' results that the database would not take when the last run stopped were "
                   f"applied from {', '.join(str(p) for p in paths)}")
        flying = ledger.in_flight_batches(conn, row.id, batches)
        _name_in_flight(flying, on_interrupted, notice)
        ledger.settle_in_flight(conn, row.id, on_interrupted == OnInterrupted.RESEND, batches)
        ledger.requeue_due(conn, row.id)
        return row.id, [(b, n) for b, n, handed in flying if handed], False


def _settleable(conn, row, join: bool) -> list[int] | None:
    """Which in-flight batches a new runner may settle: all of a send run by one process (None);
    of a shared send, only those whose worker's lease is dead. A plain run refuses a shared send
    whose live workers hold batches; `mailer send --workers` joins them."""
    if not row.workers:
        return None
    live = leases.live_holders(conn, row.id)
    if live and not join:
        raise SendBusy(f"send #{row.id} of {row.issue} to {row.list_name} is shared by workers that are still "
                       f"sending ({', '.join(live)}): wait for them, or join them with `mailer send {row.issue} "
                       f"--list {row.list_name} --workers N`")
    return [b for b, _, _ in leases.orphaned(conn, row.id)]


def fate_of_interrupted(handed: bool, on_interrupted: OnInterrupted) -> str:
    """What happens to a batch whose runner stopped, for the operator: never handed over, it goes
    back to pending; handed over, nobody can tell, and on_interrupted decides. (A single run's
    rerun here, a dead worker's lease in mailer/send/workers.py.)"""
    if not handed:
        return "never handed to the provider: back to pending"
    verb = "resending it" if on_interrupted == OnInterrupted.RESEND else "skipping it"
    return f"the provider may or may not have taken it; {verb} ([delivery] on_interrupted = \"{on_interrupted}\")"


def _name_in_flight(flying: list[tuple], on_interrupted: OnInterrupted, notice) -> None:
    for batch, readers, handed in flying:
        state = "was claimed but" if not handed else "was in flight when the last run stopped:"
        notice(f"batch {batch} ({readers:,} readers) {state} {fate_of_interrupted(handed, on_interrupted)}")


def _alive_message(row, at=None) -> str:
    age = ledger.heartbeat_age(row, at)
    beat = f"{age.total_seconds():.0f} s ago" if age is not None else "never"
    return (f"send #{row.id} of {row.issue} to {row.list_name} is running in another process ({row.runner}, "
            f"last heartbeat {beat}); wait for it, or if you know that process is "
            "gone, run again with --take-over")


def _fill(summary: SendSummary, c: dict[State, int]) -> None:
    summary.total = sum(c.values())
    summary.sent, summary.failed, summary.skipped, summary.deferred = (
        c[State.ACCEPTED], c[State.FAILED], c[State.SKIPPED], c[State.DEFERRED])


def _unfinished(plan: Plan, send_id: int) -> int:
    with plan.engine.connect() as conn:
        return ledger.unfinished(ledger.counts(conn, send_id))


def _finish(plan: Plan, summary: SendSummary, status: SendStatus, error: str | None,
            stall: Stall | None = None) -> bool:
    """End the run on the send's row, if it is still ours; False (and the row untouched) if another
    runner took it over meanwhile."""
    send_id = summary.send_id
    assert send_id is not None   # set when the send started
    mine: list[bool] = []

    def write(attempt: int = 0) -> None:
        with plan.engine.begin() as conn:
            c, ours = ledger.finish(conn, send_id, status, error)
        _fill(summary, c)
        mine[:] = [ours]

    if stall is None:
        write()
    else:
        stall(write, "marking the send " + status.value)
    summary.status = status.value if mine[0] else "taken over"
    return mine[0]


def _counted(plan: Plan, summary: SendSummary, send_id: int):
    """The send's counts into `summary`; returns when it started."""
    with plan.engine.connect() as conn:
        _fill(summary, ledger.counts(conn, send_id))
        return ledger.started_at(conn, send_id)


def _token_maker(settings: Settings, list_id: int, engine) -> Callable[..., str]:
    key = secret_key(settings)
    # the signer is built once per send; each link is bound to its membership's key, which a send
    # reads with the reader (ledger.Reader.key); MembershipKeys serves the dry run
    return token_maker(key, "unsubscribe", list_id, keys=MembershipKeys(engine, list_id))


def ref_key_of(settings: Settings) -> str:
    """The key that signs delivery refs (mailer/send/refs.py): the secret key."""
    return secret_key(settings)


def send_proof(settings: Settings, issue: ComposedIssue, addresses: list[str], *, backend_name: str | None = None,
               backend: Backend | None = None, proof: bool = True) -> list:
    """A copy marked as a proof ("[PROOF] " subject, X-Mailer-Proof) to each address; no ledger.
    With proof=False, a plain copy (the scheduler's notices to the editors).

    Each copy's ref names this run (the time and the edition's random nonce), so every proof keeps
    its own outbox file (`2024-12.proof.20241130T090000Z.3f9a1c2b7d4e.1.eml`) and Message-ID, and
    `proof_where` says where each went."""
    edition = prepare(issue, settings.newsletter, proof=proof)
    kind = STAFF_TOKENS[0] if proof else STAFF_TOKENS[1]
    run = f"{kind}.{utcnow():%Y%m%dT%H%M%SZ}.{edition.nonce}"
    outs = [personalize(edition, Recipient(f"{run}.{i}", address, "", kind))
            for i, address in enumerate(addresses, 1)]
    backend = backend or create_backend(backend_name or settings.delivery.backend, settings)
    with backend:
        size = backend.max_batch
        return [r for k in range(0, len(outs), size) for r in backend.send_batch(outs[k:k + size])]
