"""Stage 7b (mail): returned messages -> BounceReports -> DeliveryEvents -> subscribers.policy.

Messages are taken a chunk at a time (CHUNK): parsed (mailer/events/bounce_mail.py), their refs
and addresses resolved against the store in a few queries, and the events ingested through the one
policy in one transaction, so a crash loses at most a chunk's work, which a rescan redoes without
counting anything twice (each event's id is stable per message and recipient; the events table
keeps UNIQUE(event_id, source)).

Who a bounce is about (docs/bounces.md, "Which ref to trust"):
- a ref whose MAC verifies names the subscriber, whatever address the report gives (mail that
  was forwarded bounces from the address it was forwarded to);
- otherwise (no ref, an old unsigned one, a forged one) the address the report names decides; the
  ref only links the event to its send when its subscriber has that very address;
- an address we do not know changes nothing (the policy drops it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from mailer.events.bounce_mail import KINDS, RANK, BounceReport, event_for, parse_bytes
from mailer.events.mailsource import Mail
from mailer.send.ledger import sends
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

    def as_dict(self) -> dict:
        recipients = sorted({*self.report.recipients, *(e.recipient for e in self.events)})
        return {"file": self.label, "kind": self.report.kind, "recipients": recipients}


@dataclass
class ScanSummary:
    messages: int = 0
    kinds: Counter = field(default_factory=Counter)
    events: int = 0                 # events made (for known and unknown addresses alike)
    stored: int = 0                 # new events written
    duplicates: int = 0             # seen in an earlier scan
    unknown: int = 0                # for addresses we do not know
    changed: int = 0                # subscribers the policy changed: people, each once, not status changes
    dry_run: bool = False
    changed_ids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"messages": self.messages, "kinds": {k: self.kinds.get(k, 0) for k in KINDS},
                "events": self.events, "stored": self.stored, "duplicates": self.duplicates,
                "unknown": self.unknown, "changed": self.changed, "dry_run": self.dry_run}


def scan(engine, mails: Iterable[Mail], *, key: str, limits, dry_run: bool = False,
         on_message: Callable[[Scanned], None] | None = None,
         on_chunk: Callable[[Sequence[Mail]], None] | None = None) -> ScanSummary:
    """Parse, resolve and (unless dry_run) apply every message; `on_chunk(mails)` runs after a
    chunk is committed (the IMAP source moves those messages then)."""
    summary = ScanSummary(dry_run=dry_run)
    chunk: list[Mail] = []
    for mail in mails:
        chunk.append(mail)
        if len(chunk) >= CHUNK:
            _scan_chunk(engine, chunk, key, limits, dry_run, summary, on_message, on_chunk)
            chunk = []
    if chunk:
        _scan_chunk(engine, chunk, key, limits, dry_run, summary, on_message, on_chunk)
    return summary


def _scan_chunk(engine, chunk, key, limits, dry_run, summary, on_message, on_chunk) -> None:
    reports = [parse_bytes(mail.data) for mail in chunk]
    now = datetime.now(UTC)
    with (engine.connect() if dry_run else engine.begin()) as conn:
        made = resolve(conn, reports, key, now)
        batch = [e for events in made for e in events]
        if dry_run:
            known = subscriber_ids(conn, {e.recipient for e in batch})
            summary.unknown += sum(e.recipient not in known for e in batch)
        elif batch:
            result = ingest(conn, batch, limits)
            summary.stored += result.stored
            summary.duplicates += result.duplicates
            summary.unknown += result.unknown
            summary.changed_ids |= result.changed_ids
            summary.changed = len(summary.changed_ids)
    for mail, report, events in zip(chunk, reports, made, strict=True):
        summary.messages += 1
        summary.kinds[report.kind] += 1
        summary.events += len(events)
        if on_message:
            on_message(Scanned(mail.label, report, tuple(events)))
    if on_chunk and not dry_run:
        on_chunk(chunk)


def resolve(conn, reports: Sequence[BounceReport], key: str, now: datetime) -> list[list]:
    """The events of each report, after the ref-trust rule (module docstring)."""
    read = {ref: read_ref(ref, key) for r in reports for ref in r.refs}
    refs = {text: ref for text, ref in read.items() if ref is not None}
    emails = _emails(conn, {ref.subscriber_id for ref in refs.values()})
    issues = _issues(conn, {ref.send_id for ref in refs.values()})
    out = []
    for report in reports:
        candidates = [(text, refs[text]) for text in report.refs if text in refs]
        out.append(_events(report, candidates, emails, issues, now))
    return out


def _events(report: BounceReport, candidates: list[tuple[str, Ref]], emails: dict, issues: dict,
            now: datetime) -> list:
    if not report.findings:
        return []
    signed = next(((text, ref) for text, ref in candidates if ref.signed), None)
    if signed is not None:
        text, ref = signed
        address = emails.get(ref.subscriber_id)
        if address is None:                      # forgotten since, or never ours
            return []
        worst = max(report.findings, key=lambda f: RANK[f.kind])
        return [event_for(report, worst, address, send_ref=text, issue=issues.get(ref.send_id), now=now)]
    events = []
    for finding in report.findings:
        linked = next(((text, ref) for text, ref in candidates if emails.get(ref.subscriber_id) == finding.recipient),
                      (None, None))
        events.append(event_for(report, finding, finding.recipient, send_ref=linked[0],
                                issue=issues.get(linked[1].send_id) if linked[1] else None, now=now))
    return events


def _emails(conn, ids: set[int]) -> dict[int, str]:
    return _lookup(conn, subscribers.c.id, subscribers.c.email, ids)


def _issues(conn, ids: set[int]) -> dict[int, str]:
    return _lookup(conn, sends.c.id, sends.c.issue, ids)


def _lookup(conn, key_column, value_column, ids: set[int]) -> dict:
    wanted, found = sorted(ids), {}
    for i in range(0, len(wanted), CHUNK):
        found.update(conn.execute(select(key_column, value_column).where(key_column.in_(wanted[i:i + CHUNK]))).all())
    return {k: v for k, v in found.items() if v is not None}
