"""An issue's deferrals by mailbox provider, and which provider is pushing back.

A reader counts as deferred when any try of theirs was refused for now: still `deferred` in the
ledger, tried more than once (a deferred reader retried, or held back by the pacer, counts on each
try; a batch resent after a crash counts too, rarely), or a provider's `deferred` event for them
(SendGrid's webhook). The provider is the domain's, as mailer/send/pacing.py groups readers (its
`mail_providers` cache, then the well-known domains; unknown domains are `other`).

A provider deferring more than DEFERRAL_WARN of its readers (and at least DEFERRAL_MIN of them) is
named as pushing back: Gmail's `421 4.7.28` and Yahoo's `421 4.7.0 [TSS04]` are how a provider says
"too much, too fast from you" (docs/deliverability.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import case, exists, func, or_, select

from mailer.send.ledger import State, deliveries
from mailer.send.pacing import Provider, domain_of, known_provider, mail_providers
from subscribers.events import EventType
from subscribers.models import subscribers
from subscribers.policy import events

DEFERRAL_WARN = 0.05
DEFERRAL_MIN = 5


@dataclass
class ProviderFigures:
    provider: str
    readers: int
    deferred: int

    @property
    def rate(self) -> float:
        return self.deferred / self.readers if self.readers else 0.0

    def as_dict(self) -> dict:
        return {"provider": self.provider, "readers": self.readers, "deferred": self.deferred,
                "deferral_rate": round(self.rate, 6)}


def by_provider(conn, issue: str, send_ids: list[int]) -> list[ProviderFigures]:
    """Readers and deferred readers per provider, the most readers first."""
    domain = domain_of(conn, subscribers.c.email)
    deferred_event = exists().where(events.c.subscriber_id == deliveries.c.subscriber_id, events.c.issue == issue,
                                    events.c.type == EventType.DEFERRED.value)
    was_deferred = or_(deliveries.c.state == State.DEFERRED.value, deliveries.c.attempts > 1, deferred_event)
    rows = conn.execute(select(domain, func.count(), func.sum(case((was_deferred, 1), else_=0)))
                        .join_from(deliveries, subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                        .where(deliveries.c.send_id.in_(send_ids)).group_by(domain)).all()
    cached = dict(conn.execute(select(mail_providers.c.domain, mail_providers.c.provider)).all())
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, readers, deferred in rows:
        provider = cached.get(name) or known_provider(name or "") or Provider.OTHER
        totals[str(provider)][0] += readers
        totals[str(provider)][1] += int(deferred or 0)
    found = [ProviderFigures(p, n, d) for p, (n, d) in totals.items()]
    return sorted(found, key=lambda f: (-f.readers, f.provider))


def pushing_back(figures: list[ProviderFigures]) -> list[str]:
    """A warning for each provider deferring too much, the worst first."""
    worst = sorted((f for f in figures if f.deferred >= DEFERRAL_MIN and f.rate > DEFERRAL_WARN),
                   key=lambda f: -f.rate)
    return [f"{f.provider} is pushing back: {f.rate:.1%} of its readers were deferred ({f.deferred:,} of "
            f"{f.readers:,}); lower [delivery.pacing] {f.provider} or warm up (docs/deliverability.md)"
            for f in worst]
