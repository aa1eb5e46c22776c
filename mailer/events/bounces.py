"""Stage 7b (mail): returned messages -> BounceReports -> DeliveryEvents -> subscribers.policy.

Messages are taken a chunk at a time (CHUNK): parsed (mailer/events/bounce_mail.py), their refs
and addresses resolved against the store in a few queries, and the events ingested through the one
policy in one transaction, so a crash loses at most a chunk's work, which a rescan redoes without
counting anything twice (each event's id is stable per message and recipient; the events table
keeps UNIQUE(event_id, source)).

Who a bounce is about (docs/bounces.md, "Which report to trust"): the bounce address is public,
so a report must prove it is about a message we sent.
- a ref whose MAC verifies (in the VERP address, an X-Mailer-Ref or one of our Message-IDs quoted
  in it) names the subscriber, whatever address the report gives (mail that was forwarded bounces
  from the address it was forwarded to);
- else one of our Message-IDs quoted in it that the ledger has for that very reader (deliveries'
  provider_id: what a key change leaves provable) names them;
- anything else (no ref, an unsigned or forged one, addresses alone) is unverified: recorded
  (mailer/events/unverified.py), counted and listed, and it changes nobody.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, tuple_

from mailer.events import unverified
from mailer.events.bounce_mail import (
    KINDS,
    RANK,
    BounceKind,
    BounceReport,
    Finding,
    event_for,
    parse_bytes,
    ref_in_message_id,
)
from mailer.events.mailsource import Mail
from mailer.send.ledger import deliveries, sends
from mailer.send.refs import Ref, read_ref
from subscribers.models import subscribers
from subscribers.policy import ingest, subscriber_ids

CHUNK = 500


@dataclass(frozen=True)
class Scanned:
    """One message: what it said and what became of it."""

    label: str
    report: BounceReport
    events: tuple = ()              # the DeliveryEvents made for it (before the policy)
    why: str = ""                   # set when it names someone but proves nothing: unverified
    error: str = ""                 # set when it could not be read at all: set aside

    def as_dict(self) -> dict:
        if self.error:
            return {"file": self.label, "kind": "failed", "recipients": [], "error": self.error}
        recipients = sorted({*self.report.recipients, *(e.recipient for e in self.events)})
        row: dict = {"file": self.label, "kind": self.report.kind, "recipients": recipients[:unverified.NAMED]}
        if len(recipients) > unverified.NAMED:
            row["more_recipients"] = len(recipients) - unverified.NAMED
        if self.why:
            row["unverified"] = self.why
        return row


@dataclass
class ScanSummary:
    messages: int = 0
    kinds: Counter = field(default_factory=Counter)
    events: int = 0                 # events made (for known and unknown addresses alike)
    stored: int = 0                 # new events written
    duplicates: int = 0             # seen in an earlier scan
    unknown: int = 0                # for addresses we do not know
    changed: int = 0                # subscribers the policy changed: people, each once, not status changes
    unverified: list = field(default_factory=list)   # Scanned reports that prove nothing
    failed: list = field(default_factory=list)       # Scanned messages that could not be read: set aside
    dry_run: bool = False
    changed_ids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"messages": self.messages, "kinds": {k: self.kinds.get(k, 0) for k in KINDS},
                "events": self.events, "stored": self.stored, "duplicates": self.duplicates,
                "unknown": self.unknown, "changed": self.changed, "unverified": len(self.unverified),
                "failed": len(self.failed), "dry_run": self.dry_run}


@dataclass(frozen=True)
class Hooks:
    """What the source does with messages once a chunk is committed (never in a dry run):
    `processed(mails)` for those read (IMAP moves them to processed_folder), `failed(mails)` for
    those that could not be read (IMAP sets them aside in failed_folder)."""

    on_message: Callable[[Scanned], None] | None = None
    processed: Callable[[Sequence[Mail]], None] | None = None
    failed: Callable[[Sequence[Mail]], None] | None = None


def scan(engine, mails: Iterable[Mail], *, key: str, limits, dry_run: bool = False,
         on_message: Callable[[Scanned], None] | None = None,
         on_chunk: Callable[[Sequence[Mail]], None] | None = None,
         on_failed: Callable[[Sequence[Mail]], None] | None = None) -> ScanSummary:
    """Parse, resolve and (unless dry_run) apply every message; `on_chunk(mails)` runs after a
    chunk is committed (the IMAP source moves those messages then), `on_failed(mails)` with the
    messages of the chunk that could not be read (a parser that crashed on one message never stops
    the others)."""
    summary = ScanSummary(dry_run=dry_run)
    hooks = Hooks(on_message, on_chunk, on_failed)
    chunk: list[Mail] = []
    for mail in mails:
        chunk.append(mail)
        if len(chunk) >= CHUNK:
            _scan_chunk(engine, chunk, key, limits, dry_run, summary, hooks)
            chunk = []
    if chunk:
        _scan_chunk(engine, chunk, key, limits, dry_run, summary, hooks)
    return summary


def read_one(mail: Mail) -> BounceReport | str:
    """The message's report, or why it could not be read (any exception of the parsers: one odd
    message, such as 1,000 nested multiparts, must not stop a scan)."""
    try:
        return parse_bytes(mail.data)
    except RecursionError:
        return "too deeply nested to read (RecursionError)"
    except Exception as exc:  # noqa: BLE001 - whatever a parser trips over, that message is set aside
        return f"cannot read it: {type(exc).__name__}: {exc}"[:300]


def _scan_chunk(engine, whole, key, limits, dry_run, summary, hooks: Hooks) -> None:
    read = [(mail, read_one(mail)) for mail in whole]
    broken = [Scanned(mail.label, BounceReport(kind=BounceKind.UNRECOGNIZED), error=found)
              for mail, found in read if isinstance(found, str)]
    chunk = [mail for mail, found in read if not isinstance(found, str)]
    reports = [found for _mail, found in read if not isinstance(found, str)]
    applied, unread = iter(_apply(engine, chunk, reports, key, limits, dry_run, summary)), iter(broken)
    summary.failed += broken
    for _mail, found in read:                    # in the source's order
        summary.messages += 1
        scanned = next(unread) if isinstance(found, str) else next(applied)
        if hooks.on_message:
            hooks.on_message(scanned)
    if dry_run:
        return
    if hooks.processed and chunk:
        hooks.processed(chunk)
    if hooks.failed and broken:
        hooks.failed([mail for mail, found in read if isinstance(found, str)])


def _apply(engine, chunk, reports, key, limits, dry_run, summary) -> list[Scanned]:
    now = datetime.now(UTC)
    with (engine.connect() if dry_run else engine.begin()) as conn:
        made = resolve(conn, reports, key, now)
        batch = [e for events, _why in made for e in events]
        doubtful = [_unverified_row(mail, report, why)
                    for mail, report, (_events, why) in zip(chunk, reports, made, strict=True) if why]
        if dry_run:
            known = subscriber_ids(conn, {e.recipient for e in batch})
            summary.unknown += sum(e.recipient not in known for e in batch)
        else:
            unverified.record(conn, doubtful, now)
            if batch:
                result = ingest(conn, batch, limits)
                summary.stored += result.stored
                summary.duplicates += result.duplicates
                summary.unknown += result.unknown
                summary.changed_ids |= result.changed_ids
                summary.changed = len(summary.changed_ids)
    out = []
    for mail, report, (events, why) in zip(chunk, reports, made, strict=True):
        summary.kinds[report.kind] += 1
        summary.events += len(events)
        out.append(Scanned(mail.label, report, tuple(events), why))
        if why:
            summary.unverified.append(out[-1])
    return out


def _unverified_row(mail: Mail, report: BounceReport, why: str) -> dict:
    return {"message_key": report.key, "label": mail.label[:1000], "kind": str(report.kind),
            "reader": report.reader[:64], "why": why, "addresses": len(report.recipients),
            "refs": ", ".join(report.refs[:5]),
            "subject": report.subject[:200], "at": report.at}


NO_REF = "no ref of ours in it"
NOT_SIGNED = "no ref in it verifies (unsigned, forged or another key's) and no Message-ID of ours matches the ledger"


def resolve(conn, reports: Sequence[BounceReport], key: str, now: datetime) -> list[tuple[list, str]]:
    """Each report's events and, when it names someone but proves nothing, why (module docstring)."""
    read = {ref: read_ref(ref, key) for r in reports for ref in r.refs}
    signed = {text: ref for text, ref in read.items() if ref is not None and ref.signed}
    ledger = _ledger_matches(conn, {mid for r in reports for mid in r.message_ids})
    proven = [*signed.values(), *ledger.values()]
    emails = _emails(conn, {ref.subscriber_id for ref in proven})
    issues = _issues(conn, {ref.send_id for ref in proven})
    out: list[tuple[list, str]] = []
    for report in reports:
        if not report.findings:
            out.append(([], ""))
            continue
        found = [(text, signed[text]) for text in report.refs if text in signed]
        found += [(ref_in_message_id(mid) or "", ledger[mid]) for mid in report.message_ids if mid in ledger]
        if not found:
            out.append(([], NOT_SIGNED if report.refs or report.message_ids else NO_REF))
            continue
        out.append((_events(report, found[0], emails, issues, now), ""))
    return out


def _events(report: BounceReport, proof: tuple[str, Ref], emails: dict, issues: dict, now: datetime) -> list:
    """One event, for the reader the proof names: what the report says about their address, else
    the worst it says (the address it names may be the one the mail was forwarded to)."""
    text, ref = proof
    address = emails.get(ref.subscriber_id)
    if address is None:                          # forgotten since
        return []
    finding = _finding_for(report, address)
    return [event_for(report, finding, address, send_ref=text, issue=issues.get(ref.send_id), now=now)]


def _finding_for(report: BounceReport, address: str) -> Finding:
    mine = [f for f in report.findings if f.recipient == address]
    return max(mine or report.findings, key=lambda f: RANK[f.kind])


def _ledger_matches(conn, mids: set[str]) -> dict[str, Ref]:
    """{Message-ID: its ref} for the quoted Message-IDs the ledger has for that very reader (SMTP
    and outbox deliveries keep the Message-ID they sent as provider_id), when they carry a MAC (made
    with any key, ours before a change included): one without is the issue's slug, two numbers and
    the send's, which a stranger can write, and a copy mailed before refs were signed had one."""
    pairs = {}
    for mid in mids:
        ref = ref_in_message_id(mid) or ""
        found = read_ref(ref)
        if found is not None and ref.count(".") == 2:   # with a MAC: "SEND.SUBSCRIBER.sSEND" anyone can write
            pairs[(found.send_id, found.subscriber_id)] = mid
    out: dict[str, Ref] = {}
    wanted = sorted(pairs)
    for i in range(0, len(wanted), CHUNK):
        rows = conn.execute(select(deliveries.c.send_id, deliveries.c.subscriber_id, deliveries.c.provider_id)
                            .where(tuple_(deliveries.c.send_id, deliveries.c.subscriber_id).in_(wanted[i:i + CHUNK])))
        for send_id, subscriber_id, provider_id in rows:
            mid = pairs[(send_id, subscriber_id)]
            if provider_id == mid:
                out[mid] = Ref(send_id, subscriber_id, True)
    return out


def _emails(conn, ids: set[int]) -> dict[int, str]:
    return _lookup(conn, subscribers.c.id, subscribers.c.email, ids)


def _issues(conn, ids: set[int]) -> dict[int, str]:
    return _lookup(conn, sends.c.id, sends.c.issue, ids)


def _lookup(conn, key_column, value_column, ids: set[int]) -> dict:
    wanted, found = sorted(ids), {}
    for i in range(0, len(wanted), CHUNK):
        found.update(conn.execute(select(key_column, value_column).where(key_column.in_(wanted[i:i + CHUNK]))).all())
    return {k: v for k, v in found.items() if v is not None}
