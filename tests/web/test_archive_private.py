"""Private issues stay private: an issue is on /archive, /archive/NAME and /archive/feed.xml only
when it was sent to a public list as a whole, and never when its file says `archive = false`.
Real sends (mailer.send.dispatch, outbox backend) read back through the real web app."""

from __future__ import annotations

import os

import pytest

from mailer.send import dispatch
from tests.deliver.helpers import seed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _issue(live, repo, setting: str = "") -> object:
    """2024-11 written into the archive's issues folder, with `setting` added to its settings."""
    text = (repo / "issues" / "2024-11.md").read_text()
    if setting:
        text = text.replace("+++\n", f"+++\n{setting}\n", 1)
    path = live.settings.compose.issues_dir / "2024-11.md"
    path.write_text(text)
    return path


def _send(live, path, list_name: str, tags: tuple[str, ...] = ()) -> None:
    from mailer.compose.render import compose_issue

    composed = compose_issue(path, live.settings)
    summary = dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, list_name, tags=tags))
    assert summary.sent > 0


def _seed(live, list_name: str, *, private: bool = False, tag: str | None = None) -> None:
    from sqlalchemy import select

    from subscribers import store
    from subscribers.models import subscribers
    from subscribers.tags import add_tags

    with live.web.engine.begin() as conn:
        if list_name != "crank":
            store.create_list(conn, list_name, private=private)
    seed(live.web.engine.url.render_as_string(hide_password=False), 2, list_name)
    if tag:
        with live.web.engine.begin() as conn:
            found = conn.execute(select(subscribers.c.id).where(subscribers.c.email == "r0@example.org")).scalar_one()
            add_tags(conn, found, [tag])


def _shown(live) -> bool:
    """Whether 2024-11 is on every archive surface; asserts the three agree."""
    index = 'href="/archive/2024-11"' in live.http.get("/archive").text
    page = live.http.get("/archive/2024-11").status_code
    feed = "/archive/2024-11</id>" in live.http.get("/archive/feed.xml").text
    assert page in (200, 404) and index == feed == (page == 200)
    return index


CASES = [  # (what was sent, list, private list?, segment tags, the file's setting, on the web?)
    ("public list, whole", "crank", False, (), "", True),
    ("public list, archive = true", "crank", False, (), "archive = true", True),
    ("private list", "staff", True, (), "", False),
    ("private list, archive = true", "staff", True, (), "archive = true", False),
    ("segment of a public list", "crank", False, ("press",), "", False),
    ("public list, archive = false", "crank", False, (), "archive = false", False),
]


@pytest.mark.parametrize(("what", "list_name", "private", "tags", "setting", "shown"), CASES,
                         ids=[c[0] for c in CASES])
def test_only_a_whole_public_list_send_is_on_the_web(live, repo, what, list_name, private, tags, setting, shown):
    _seed(live, list_name, private=private, tag=tags[0] if tags else None)
    _send(live, _issue(live, repo, setting), list_name, tags)
    assert _shown(live) is shown


def test_the_stored_setting_holds_when_the_file_is_gone(live, repo):
    _seed(live, "crank")
    path = _issue(live, repo, "archive = false")
    _send(live, path, "crank")
    path.unlink()
    assert not _shown(live)


def test_a_segment_send_hides_nothing_that_a_whole_send_published(live, repo):
    _seed(live, "crank", tag="press")
    path = _issue(live, repo)
    _send(live, path, "crank", ("press",))
    assert not _shown(live)
    _send(live, path, "crank")          # then the rest of the list: now it is public
    assert _shown(live)


def test_the_file_and_the_list_decide_when_read(live, repo):
    """Setting `archive = false` after the send takes the issue off; removing it brings it back.
    A list made private later takes its issues off; a deleted list's issue is not shown."""
    from subscribers.models import lists

    _seed(live, "crank")
    path = _issue(live, repo)
    _send(live, path, "crank")
    assert _shown(live)
    text = path.read_text()
    path.write_text(text.replace("+++\n", "+++\narchive = false\n", 1))
    os.utime(path, (path.stat().st_mtime + 5,) * 2)
    assert not _shown(live)
    path.write_text(text)
    os.utime(path, (path.stat().st_mtime + 10,) * 2)
    assert _shown(live)
    with live.web.engine.begin() as conn:
        conn.execute(lists.update().where(lists.c.name == "crank").values(private=True))
    assert not _shown(live)


def test_archive_must_be_true_or_false(tmp_path, repo):
    from mailer.compose.source import archive_setting, read_issue
    from mailer.errors import IssueSourceError

    path = tmp_path / "2024-11.md"
    path.write_text((repo / "issues" / "2024-11.md").read_text().replace("+++\n", '+++\narchive = "no"\n', 1))
    with pytest.raises(IssueSourceError, match=r"2024-11.md:2: settings: archive must be true or false"):
        read_issue(path)
    assert archive_setting(path) is None
    path.write_text("+++\narchive = false\n")              # settings never closed: not readable
    assert archive_setting(path) is None
    assert archive_setting(tmp_path / "missing.md") is None


def test_a_send_whose_list_was_deleted_is_not_shown(live, repo):
    """Nobody can tell any more whether that list was private."""
    from subscribers import store

    _seed(live, "crank")
    _send(live, _issue(live, repo), "crank")
    with live.web.engine.begin() as conn:
        store.delete_list(conn, "crank")
    assert not _shown(live)


def test_the_rule_in_sql_on_both_databases(db_url):
    """mailer.send.ledger.archived / archived_copy on SQLite and PostgreSQL: one row per case."""
    from mailer.migrate import connect, upgrade
    from mailer.send.ledger import archived, archived_copy, sends
    from subscribers import store
    from subscribers.models import utcnow

    upgrade(db_url)
    engine = connect(db_url)
    with engine.begin() as conn:
        public = store.create_list(conn, "crank").id
        staff = store.create_list(conn, "staff", private=True).id
        rows = [("public", public, "", None), ("public-true", public, "", True), ("staff", staff, "", True),
                ("segment", public, "tag:press", None), ("off", public, "", False)]
        for issue, list_id, segment, archive in rows:
            conn.execute(sends.insert().values(issue=issue, list_id=list_id, list_name="x", subject=issue,
                                               backend="outbox", status="done", total=1, sent=1, segment=segment,
                                               archive=archive, started_at=utcnow()))
        assert sorted(r[0] for r in archived(conn)) == ["public", "public-true"]
        assert archived_copy(conn, "public-true") is not None and archived_copy(conn, "staff") is None
    engine.dispose()


def _browser_links(live) -> set[str]:
    """The view-in-browser addresses in the mails of the outbox (their text parts)."""
    import email
    import email.policy
    import re

    found = set()
    for path in live.settings.delivery.outbox_dir.glob("*.eml"):
        text = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("plain",))
        found |= set(re.findall(rf"{re.escape(live.url)}/archive[^\s>)\]]*", text.get_content()))
    return found


@pytest.mark.parametrize(("list_name", "private", "tags", "setting", "link"), [
    ("crank", False, (), "", "/archive/2024-11"),
    ("staff", True, (), "", "/archive/2024-11?key="),
    ("crank", False, ("press",), "", "/archive/2024-11?key="),
    ("staff", True, (), "archive = false", "/archive"),
])
def test_the_browser_link_of_each_send_opens_what_it_may(live, repo, list_name, private, tags, setting, link):
    """A public send links the issue's page; a private list's or a segment's readers get the page
    with the issue's key (unlisted, not cached); `archive = false` links the archive's index."""
    _seed(live, list_name, private=private, tag=tags[0] if tags else None)
    _send(live, _issue(live, repo, setting), list_name, tags)
    [found] = _browser_links(live)
    path = found[len(live.url):]
    assert path.startswith(link) and (path == link or link.endswith("key="))
    page = live.http.get(path)
    assert page.status_code == 200
    if link.endswith("key="):
        assert "North Korea and Russia finalize" in page.text and page.headers["cache-control"] == "no-store"
        assert not _shown(live)                                           # still not listed
        wrong = live.http.get(path[:-3] + ("abc" if not path.endswith("abc") else "xyz"))
        assert wrong.status_code == 404 and "North Korea" not in wrong.text
        assert live.http.get(path.replace("2024-11", "2024-12")).status_code == 404   # one issue's key only
        withdrawn = live.settings.compose.issues_dir / "2024-11.md"      # archive = false later: the key stops too
        withdrawn.write_text(withdrawn.read_text().replace("+++\n", "+++\narchive = false\n", 1))
        os.utime(withdrawn, (withdrawn.stat().st_mtime + 5,) * 2)
        assert live.http.get(path).status_code == 404
