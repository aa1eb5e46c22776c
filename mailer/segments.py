"""(issue, list, tags) -> a send's segment key and its readers.

`mailer send ISSUE --list NAME --tag T ...` sends to the list's active readers with any of the
tags. The ledger keeps one send per (issue, list, segment), where the segment is "" for the whole
list or "tag:" and the sorted, normalized tags ("tag:donor,press"), so the same tags given in any
order or case name the same send, and exactly-once holds per segment.

Across segments of one list nobody gets an issue twice: a reader already in another send of the
same issue and list (any state: sent, in flight, failed or skipped) is left out of a new one, so
"--tag press" then the whole list sends the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, exists

from mailer.ledger import deliveries, sends
from subscribers.models import subscribers
from subscribers.queries import recipients_select
from subscribers.tags import normalize_tags

PREFIX = "tag:"


def segment_key(tags: Iterable[str]) -> str:
    """The ledger's name for these tags; InvalidTag (a SubscriberError) for a bad one."""
    found = normalize_tags(tags)
    return PREFIX + ",".join(found) if found else ""


def tags_of(segment: str) -> tuple[str, ...]:
    return tuple(segment[len(PREFIX):].split(",")) if segment.startswith(PREFIX) else ()


def describe(list_name: str, segment: str) -> str:
    """`crank` or `crank (tags: donor, press)`, for people."""
    tags = tags_of(segment)
    return f"{list_name} (tags: {', '.join(tags)})" if tags else list_name


def readers(issue: str, list_id: int, segment: str) -> Select:
    """recipients_select for the segment, minus readers another send of this issue and list has."""
    other = (exists().where(deliveries.c.subscriber_id == subscribers.c.id, deliveries.c.send_id == sends.c.id,
                            sends.c.issue == issue, sends.c.list_id == list_id, sends.c.segment != segment))
    return recipients_select(list_id, tags_of(segment)).where(~other)
