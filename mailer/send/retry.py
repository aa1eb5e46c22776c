"""An issue's failed readers -> pending again, so the next run of its send tries them once more.

What the admin's "Retry failed" button does before it runs the send (mailer/web/admin/issues.py).
A failed reader is one the provider refused for good or whose address could not be used; a retry
is for when the cause was on our side (a suppression lifted since, a fixed sender setting). Only
`failed` rows move: `sending` rows keep their exactly-once handling, accepted ones are never
touched, and a send already `done` becomes `stopped` so its next run picks them up.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from mailer.send import ledger
from mailer.send.ledger import SendStatus, sends


def requeue_failed(conn: Connection, issue: str, list_id: int | None = None) -> int:
    """Put the issue's failed readers back to pending (on one list's send, or every send of the
    issue); returns how many. The sends' counters lose them until they are sent."""
    query = select(sends.c.id).where(sends.c.issue == issue)
    if list_id is not None:
        query = query.where(sends.c.list_id == list_id)
    moved = 0
    for send_id in conn.execute(query).scalars().all():
        n = ledger.requeue_failed(conn, send_id)   # the rows as `mailer send --retry-failed` moves them
        if n:
            conn.execute(update(sends).where(sends.c.id == send_id)
                         .values(failed=sends.c.failed - n, status=SendStatus.STOPPED.value))
            moved += n
    return moved
