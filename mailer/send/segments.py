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

from sqlalchemy import Select, exists, select

from mailer.send.ledger import deliveries, sends
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


def readers(conn, issue: str, list_id: int, segment: str) -> Select:
    """recipients_select for the segment, minus readers another send of this issue and list has.

    The other sends are looked up first, so the query names them: each reader is then one probe of
    deliveries' (send_id, subscriber_id) key, and none at all when there is no other send (the
    usual case). Correlated through `sends` instead, PostgreSQL may drive the probe by
    subscriber_id alone, a scan of the whole key per reader while the send's own rows go in."""
    other = list(conn.execute(select(sends.c.id).where(sends.c.issue == issue, sends.c.list_id == list_id,
                                                       sends.c.segment != segment)).scalars())
    chosen = recipients_select(list_id, tags_of(segment))
    if not other:
        return chosen
    return chosen.where(~exists().where(deliveries.c.send_id.in_(other),
                                        deliveries.c.subscriber_id == subscribers.c.id))
