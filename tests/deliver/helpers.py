"""Small builders shared by the delivery tests."""

from __future__ import annotations

from mailer.compose.personalize import Recipient, personalize


def readers(edition, n: int, *, start: int = 0, send: int = 1, names=None):
    """`n` Outgoing messages to r{i}@example.org with refs SEND.i."""
    names = names or (lambda i: f"Reader {i}")
    return [personalize(edition, Recipient(f"{send}.{i}", f"r{i}@example.org", names(i), f"tok{i}"))
            for i in range(start, start + n)]


def seed(url: str, n: int, list_name: str = "crank", *, start: int = 0) -> int:
    """A list with `n` active readers r{i}@example.org ("Reader i"); returns the list id."""
    from subscribers.db import connect
    from subscribers.errors import ListNotFound
    from subscribers.store import add_subscriber, create_list, get_list

    engine = connect(url)
    try:
        with engine.begin() as conn:
            try:
                found = get_list(conn, list_name)
            except ListNotFound:
                found = create_list(conn, list_name)
            for i in range(start, start + n):
                add_subscriber(conn, f"r{i}@example.org", found.id, name=f"Reader {i}")
    finally:
        engine.dispose()   # its own Engine, not mailer.engines': closed here, not left to the collector
    return found.id
