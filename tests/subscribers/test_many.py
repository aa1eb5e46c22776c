"""subscribers.selection and subscribers.many on SQLite and PostgreSQL: a view's rows and chunks,
and each bulk action doing what the one-subscriber call does, idempotently."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from subscribers import many, store
from subscribers.models import Status, forgotten, history, subscriber_tags
from subscribers.selection import Selection
from subscribers.tags import add_tags, tags_of
from tests.subscribers.conftest import SECRET


@pytest.fixture
def readers(engine, crank, digest):
    """Six readers on crank: 0-3 tagged press (0 and 2 also vip), 4 unsubscribed, 5 bounced."""
    with engine.begin() as conn:
        ids = [store.add_subscriber(conn, f"r{i}@example.com", crank, name=f"Reader {i}").subscriber_id
               for i in range(6)]
        for i in range(4):
            add_tags(conn, ids[i], ["press"] + (["vip"] if i % 2 == 0 else []))
        store.unsubscribe(conn, ids[4], crank, source="admin")
        store.set_status(conn, ids[5], None, Status.BOUNCED, "test")
    return ids


@pytest.mark.parametrize("view, expected", [
    (Selection(), [0, 1, 2, 3, 4, 5]),
    (Selection(tags=("press",)), [0, 1, 2, 3]),
    (Selection(tags=("press", "vip")), [0, 2]),
    (Selection(status=Status.UNSUBSCRIBED), [4]),
    (Selection(status=Status.BOUNCED), [5]),
    (Selection(status=Status.ACTIVE, tags=("vip",)), [0, 2]),
    (Selection(status=Status.BOUNCED, tags=("press",)), []),      # the bounced (1) lead, not press (4)
    (Selection(text="r1"), [1]),
    (Selection(text="reader 3"), [3]),
    (Selection(text="@example.com", tags=("vip",)), [0, 2]),
])
def test_a_view_pages_counts_and_chunks(engine, readers, view, expected):
    want = [readers[i] for i in expected]
    with engine.connect() as conn:
        rows, before, _ = view.page(conn, limit=3)
        assert [r.id for r in rows] == want[:3] and not before
        assert view.count(conn) == len(want) and view.count(conn, cap=1) == min(2, len(want))
        assert [i for chunk in view.chunks(conn, size=2) for i in chunk] == want
        if not view.by_address and len(want) > 3:
            rest, before, _ = view.page(conn, after=rows[-1].id, limit=3)
            assert [r.id for r in rest] == want[3:6] and before
            back, _, _ = view.page(conn, before=rest[0].id, limit=3)
            assert [r.id for r in back] == want[:3]


def test_of_reads_what_a_person_typed():
    assert Selection.of(" ann ", ["Press", "vip ", ""], "active") == Selection("ann", ("press", "vip"), Status.ACTIVE)
    assert Selection.of().empty and Selection.of(tags=["a"]).query_string() == "tag=a"
    with pytest.raises(ValueError, match="status must be one of"):
        Selection.of(status="gone")


def test_tag_and_untag_many_are_idempotent_with_history(engine, readers):
    with engine.begin() as conn:
        first = many.tag_many(conn, [*readers[:3], 999999], ["press", "New"], "admin:ann")
        again = many.tag_many(conn, readers[:3], ["new"], "admin:ann")
        assert (first.ids, first.already, again.ids, again.already) == (readers[:3], 0, [], 3)
        assert tags_of(conn, readers[1]) == ["new", "press"]
        gone = many.untag_many(conn, readers, ["vip", "new"], "admin:ann")
        assert gone.ids == readers[:3] and gone.already == 3
        assert conn.execute(select(func.count()).select_from(subscriber_tags).where(
            subscriber_tags.c.tag.in_(["vip", "new"]))).scalar() == 0
        rows = conn.execute(select(history.c.source, history.c.detail).where(
            history.c.subscriber_id == readers[0]).order_by(history.c.id.desc()).limit(2)).all()
        assert [(s, d) for s, d in rows] == [("admin:ann", {"fields": ["tags"], "removed": ["new", "vip"]}),
                                            ("admin:ann", {"fields": ["tags"], "added": ["new"]})]


def test_add_many_never_brings_anyone_back(engine, readers, crank, digest):
    with engine.begin() as conn:
        joined = many.add_many(conn, readers, digest, "admin:ann", secret=SECRET)
        assert joined.ids == readers[:5] and joined.left_alone == 1                 # bounced: left alone
        assert store.membership_status(conn, readers[4], digest) is Status.ACTIVE  # left crank, not digest
        back = many.add_many(conn, readers, crank, "admin:ann")
        assert (back.ids, back.already, back.left_alone) == ([], 4, 2)             # unsubscribed, bounced
        member = next(m for m in store.memberships_of(conn, readers[0]) if m.list == "digest")
        assert member.consent_source == "admin"
        store.forget(conn, "r9@example.com", SECRET)              # a hash on record makes the check run
        ghost = store.add_subscriber(conn, "ghost@example.com", crank, secret=SECRET).subscriber_id
        conn.execute(forgotten.insert().values(email_hash=__import__("subscribers.tokens").tokens.forget_hash(
            SECRET, "ghost@example.com"), at=__import__("subscribers.models").models.utcnow()))
        assert many.add_many(conn, [ghost], digest, "admin:ann", secret=SECRET).left_alone == 1


def test_unsubscribe_many_from_one_list_or_all(engine, readers, crank, digest):
    with engine.begin() as conn:
        many.add_many(conn, readers[:2], digest, "admin:ann")
        one = many.unsubscribe_many(conn, readers[:2], digest, "admin:ann")
        assert one.ids == readers[:2] and store.membership_status(conn, readers[0], crank) is Status.ACTIVE
        every = many.unsubscribe_many(conn, readers, None, "admin:ann")
        assert every.ids == [readers[i] for i in (0, 1, 2, 3, 5)] and every.already == 1
        assert many.unsubscribe_many(conn, readers, None, "admin:ann").ids == []


def test_forget_many_leaves_only_hashes(engine, readers):
    with engine.begin() as conn:
        store.forget(conn, "r0@example.com", SECRET)                 # forgotten once already: kept once
        done = many.forget_many(conn, [*readers[1:3], readers[0]], SECRET, "admin:ann")
        assert done.ids == readers[1:3]
        assert store.find_subscriber(conn, "r1@example.com") is None
        assert store.is_forgotten(conn, "r2@example.com", SECRET)
        assert conn.execute(select(func.count()).select_from(history).where(
            history.c.subscriber_id.in_(readers[1:3]))).scalar() == 0
        assert conn.execute(select(func.count()).select_from(forgotten)).scalar() == 3
        assert many.forget_many(conn, [123_456], SECRET, "x").ids == []
