"""Click and open tracking over real HTTP: a tracked send to the outbox, then readers, scanners and
forgers at /c/ and /o/, the preferences opt-out, forget and keep_days, and the report.

The app's recorder reads the clock through `clock`, so a test puts requests seconds or an hour apart
without waiting; `flush` decides what is pending at once (what the server does every tenth of a second).
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from mailer.compose.render import compose_issue
from mailer.config import ClickTracking
from mailer.reports import report as reports
from mailer.send import dispatch, tracking
from mailer.send.tracking import send_links, send_tracking, tracking_hits
from subscribers import store
from subscribers.models import utcnow

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
          "Safari/537.36")
TRACKED_URL = re.compile(r"https?://127\.0\.0\.1:\d+/c/[0-9a-z.\-]+")
STORY = "https://example.org/story?id=1&src=mail"


class Clock:
    """The recorder's clock: an hour after the copies were made, moved on by hand."""

    def __init__(self) -> None:
        self.now = time.time() + 3600

    def __call__(self) -> float:
        return self.now


def tracked_live(live, tmp_path, mode=ClickTracking.READER, opens=True, **rules):
    settings = dataclasses.replace(
        live.settings,
        newsletter=dataclasses.replace(live.settings.newsletter, privacy_url="https://example.org/privacy"),
        tracking=dataclasses.replace(live.settings.tracking, clicks=mode, opens=opens, **rules),
        delivery=dataclasses.replace(live.settings.delivery, outbox_dir=tmp_path / "outbox"))
    live.settings = settings
    web = live.web
    web.settings = settings
    web.tracking.settings = settings.tracking
    clock = web.tracking.clock = web.tracking.recorder.clock = Clock()
    return clock


def send(live, repo, names=("ann", "bob")) -> dict[str, dict]:
    """Send tests/fixtures/issues/tracked.md to the readers named; their mails, by name."""
    with live.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank")
        for name in names:
            store.add_subscriber(conn, f"{name}@example.com", crank.id, name=name.title())
    path = Path(live.settings.compose.issues_dir) / "tracked.md"
    source = (repo / "tests" / "fixtures" / "issues" / "tracked.md").read_text(encoding="utf-8")
    path.write_text(source.replace("http://127.0.0.1:8000", live.url), encoding="utf-8")   # our own archive
    composed = compose_issue(path, live.settings)
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank"))
    mails = {}
    for eml in (Path(live.settings.delivery.outbox_dir)).rglob("*.eml"):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        name = msg["To"].addresses[0].username
        mails[name] = {"html": msg.get_body(("html",)).get_content(), "text": msg.get_body(("plain",)).get_content()}
    return mails


def links_in(mail: dict) -> list[str]:
    """The tracked links of a mail's HTML part, in order, each once."""
    return list(dict.fromkeys(TRACKED_URL.findall(mail["html"])))


def path(url: str) -> str:
    return url[url.index("/", len("http://")):]


def counts(live):
    with live.web.engine.connect() as conn:
        row = conn.execute(select(send_tracking)).one()
        links = {r.url: (r.people, r.machine) for r in conn.execute(select(send_links))}
        hits = conn.execute(select(func.count()).select_from(tracking_hits)).scalar_one()
    return row, links, hits


def test_a_readers_click_goes_to_the_story_and_counts_them_once(live, repo, tmp_path):
    clock = tracked_live(live, tmp_path)
    mails = send(live, repo)
    ann = links_in(mails["ann"])
    assert len(ann) == 3 and all(u.startswith(live.url + "/c/") for u in ann)
    # our own pages, mailto and the text part
    assert f'href="{live.url}/archive/2025-02"' in mails["ann"]["html"]
    assert f"{live.url}/unsubscribe/" in mails["ann"]["html"] and "mailto:editor@example.org" in mails["ann"]["html"]
    assert TRACKED_URL.search(mails["ann"]["text"]) and "example.org/story" not in mails["ann"]["text"]
    first = live.http.get(path(ann[0]), headers={"user-agent": CHROME})
    assert (first.status_code, first.headers["location"]) == (302, STORY)
    assert first.headers["cache-control"].startswith("no-store")
    # answered before FastAPI's routing (mailer/web/tracking.py FastPath), still with our headers:
    # the token in the address goes to no other site
    assert (first.headers["referrer-policy"], first.headers["x-content-type-options"]) == ("no-referrer", "nosniff")
    clock.now += 60
    again = live.http.get(path(ann[0]), headers={"user-agent": CHROME})   # the same link, a minute later
    assert again.headers["location"] == STORY
    live.web.tracking.recorder.flush(everything=True)
    row, links, hits = counts(live)
    assert (row.clicks, row.machine_clicks) == (1, 0)
    assert links[STORY] == (1, 0) and hits == 1


@pytest.mark.parametrize(("case", "expected"), [     # the other rules: tests/test_tracking.py
    ("HEAD", (0, 1)),
    ("scanner agent", (0, 1)),
    ("within seconds of sending", (0, 1)),
])
def test_machines_are_counted_apart(live, repo, tmp_path, case, expected):
    clock = tracked_live(live, tmp_path)
    ann = links_in(send(live, repo)["ann"])
    headers = {"user-agent": CHROME}
    if case == "scanner agent":
        headers["user-agent"] = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
    elif case == "within seconds of sending":
        clock.now = time.time()
    answer = (live.http.head if case == "HEAD" else live.http.get)(path(ann[1]), headers=headers)
    assert (answer.status_code, answer.headers["location"]) == (302, "https://example.org/report")
    live.web.tracking.recorder.flush(everything=True)
    row, links, hits = counts(live)
    assert (row.clicks, row.machine_clicks) == expected
    assert links["https://example.org/report"] == expected and hits == 0


def test_the_first_clicks_of_a_send_in_a_burst_read_its_links_once(live, repo, tmp_path, monkeypatch):
    tracked_live(live, tmp_path)
    names = tuple(f"reader{i}" for i in range(12))
    mails = send(live, repo, names)
    reads, links_of = [], tracking.links_of

    def slow_links_of(conn, send_id):     # a database slower than the burst: every click waits for it
        reads.append(send_id)
        time.sleep(0.3)
        return links_of(conn, send_id)

    monkeypatch.setattr("mailer.web.tracking.tracking.links_of", slow_links_of)
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda name: httpx.get(live.url + path(links_in(mails[name])[0]),
                                                       headers={"user-agent": CHROME}, timeout=10), names))
    assert [a.headers.get("location") for a in answers] == [STORY] * len(names)
    assert len(reads) == 1


def test_a_sweep_is_a_machine_and_the_reader_who_clicks_later_still_counts(live, repo, tmp_path):
    clock = tracked_live(live, tmp_path)
    ann = links_in(send(live, repo)["ann"])
    for url in ann:                         # a gateway follows every link, half a second apart
        assert live.http.get(path(url), headers={"user-agent": CHROME}).status_code == 302
        clock.now += 0.5
    clock.now += 10
    live.web.tracking.recorder.flush()      # the sweep's window has passed: decided now
    clock.now += 50                         # Ann reads it a minute later
    live.http.get(path(ann[2]), headers={"user-agent": CHROME})
    live.web.tracking.recorder.flush(everything=True)
    row, links, _hits = counts(live)
    assert (row.clicks, row.machine_clicks) == (1, 3)
    assert links == {STORY: (0, 1), "https://example.org/report": (0, 1), "https://example.org/data.csv": (1, 1)}


@pytest.mark.parametrize("forgery", ["one character changed", "two sends' halves", "a link the send lacks",
                                     "not a token"])      # the other forgeries: tests/test_tracking.py
def test_a_forged_or_foreign_token_answers_404_and_redirects_nowhere(live, repo, tmp_path, forgery):
    tracked_live(live, tmp_path)
    good = path(links_in(send(live, repo)["ann"])[0])[len("/c/"):]
    link_part, _, copy_part = good.partition(".")
    send_id = int(link_part.split("-")[0], 16)
    ours = live.web.tracking.signer
    token = {
        "one character changed": good[:-1] + ("0" if good[-1] != "0" else "1"),
        "two sends' halves": f"{ours.link_part(send_id + 1, 0)}.{copy_part}",
        "a link the send lacks": f"{ours.link_part(send_id, 99)}.{ours.copy_part(send_id, True, 1, 1)}",
        "not a token": "https%3A%2F%2Fevil.example%2F",
    }[forgery]
    answer = live.http.get(f"/c/{token}", headers={"user-agent": CHROME})
    assert answer.status_code == 404 and "location" not in answer.headers
    live.web.tracking.recorder.flush(everything=True)
    assert counts(live)[0].machine_clicks == 0 and counts(live)[0].clicks == 0


def test_a_reader_who_turns_tracking_off_gets_direct_links_and_counts_for_nothing(live, repo, tmp_path):
    clock = tracked_live(live, tmp_path)
    mails = send(live, repo)
    old_link = links_in(mails["bob"])[0]
    with live.web.engine.connect() as conn:
        bob = store.find_subscriber(conn, "bob@example.com").id
    from subscribers.links import link_token

    with live.web.engine.connect() as conn:
        token = link_token(conn, live.web.secret, "unsubscribe", bob, store.get_list(conn, "crank").id)
    page = live.http.get(f"/preferences/{token}")
    assert "Turn off click counting" in page.text and "https://example.org/privacy" in page.text
    done = live.http.post(f"/preferences/{token}/tracking", data={"tracking": "off"})
    assert done.status_code == 200 and "click counting turned off" in done.text
    # (allowing it again is consent: the footer's link offers a fresh link for that, not the button)
    assert "Allow click counting" not in done.text and "get a fresh link" in done.text
    # last month's copy still leads to the story, and counts nothing
    assert live.http.get(path(old_link), headers={"user-agent": CHROME}).headers["location"] == STORY
    live.web.tracking.recorder.flush(everything=True)
    assert counts(live)[0].clicks == 0
    # the next send gives Bob direct links and no open image; Ann's stay tracked
    with live.web.engine.begin() as conn:
        conn.execute(tracking_hits.delete())
    shutil.rmtree(live.settings.delivery.outbox_dir)
    (Path(live.settings.compose.issues_dir) / "tracked.md").rename(Path(live.settings.compose.issues_dir) / "next.md")
    composed = compose_issue(Path(live.settings.compose.issues_dir) / "next.md", live.settings)
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank"))
    mails = {}
    for eml in Path(live.settings.delivery.outbox_dir).rglob("*.eml"):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        mails[msg["To"].addresses[0].username] = msg.get_body(("html",)).get_content()
    assert "/c/" not in mails["bob"] and "/o/" not in mails["bob"]
    assert 'href="https://example.org/story?id=1&amp;src=mail"' in mails["bob"]
    assert "/c/" in mails["ann"] and "/o/" in mails["ann"]
    with live.web.engine.connect() as conn:
        assert [h.action for h in store.history_of(conn, bob) if h.action == "tracking"] == ["tracking"]
    assert clock


def test_opens_count_copies_and_image_proxies_apart(live, repo, tmp_path):
    tracked_live(live, tmp_path)
    mails = send(live, repo)
    images = {name: path(re.search(r'src="(http://[^"]+/o/[^"]+)"', m["html"]).group(1)) for name, m in mails.items()}
    image = live.http.get(images["ann"], headers={"user-agent": CHROME})
    assert (image.status_code, image.headers["content-type"]) == (200, "image/gif")
    live.http.get(images["ann"], headers={"user-agent": CHROME})            # opened twice: one copy
    live.http.get(images["bob"], headers={"user-agent": "Mozilla/5.0"})     # Apple Mail Privacy Protection
    live.http.get(images["bob"], headers={"user-agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                                                        "(via ggpht.com GoogleImageProxy)"})
    assert live.http.get("/o/0-o-00000000.r1-1-000000000000").status_code == 404
    live.web.tracking.recorder.flush(everything=True)
    row = counts(live)[0]
    assert (row.opens, row.machine_opens) == (1, 2)
    with live.web.engine.connect() as conn:
        found = reports.build(conn, "tracked")
    assert (found.figures["opens"], found.figures["machine_opens"]) == (1, 2)
    assert any("lower bound" in note for note in found.notes)


def test_forget_and_keep_days_delete_who_clicked_and_keep_the_counts(live, repo, tmp_path):
    clock = tracked_live(live, tmp_path)
    mails = send(live, repo)
    for name, gap in (("ann", 0), ("bob", 120)):
        clock.now += gap
        live.http.get(path(links_in(mails[name])[0]), headers={"user-agent": CHROME})
    live.web.tracking.recorder.flush(everything=True)
    assert counts(live)[2] == 2
    with live.web.engine.begin() as conn:
        store.forget(conn, "ann@example.com", live.web.secret)
    row, links, hits = counts(live)
    assert hits == 1 and row.clicks == 2 and links[STORY] == (2, 0)
    with live.web.engine.begin() as conn:
        assert tracking.purge(conn, 90, at=utcnow() + timedelta(days=89)) == 0
        assert tracking.purge(conn, 90, at=utcnow() + timedelta(days=91)) == 1
    row, links, hits = counts(live)
    assert hits == 0 and row.clicks == 2 and links[STORY] == (2, 0)


def test_aggregate_mode_names_nobody(live, repo, tmp_path):
    clock = tracked_live(live, tmp_path, mode=ClickTracking.AGGREGATE, opens=False)
    mails = send(live, repo)
    assert "/o/" not in mails["ann"]["html"]
    for name in ("ann", "bob"):
        clock.now += 60
        live.http.get(path(links_in(mails[name])[1]), headers={"user-agent": CHROME})
    live.web.tracking.recorder.flush(everything=True)
    with live.web.engine.connect() as conn:
        assert conn.execute(select(tracking_hits.c.subscriber_id, tracking_hits.c.copy)).all() != []
        assert {r.subscriber_id for r in conn.execute(select(tracking_hits))} == {None}
        found = reports.build(conn, "tracked")
    assert found.figures["clicks"] == 2
    assert (found.links[0].url, found.links[0].people) == ("https://example.org/report", 2)


def test_report_lists_links_by_people_in_json_html_and_admin(live, repo, tmp_path):
    from tests.web.admin_helpers import add_user, login

    clock = tracked_live(live, tmp_path)
    mails = send(live, repo)
    for name, which in (("ann", 1), ("bob", 1), ("ann", 2)):
        clock.now += 60
        live.http.get(path(links_in(mails[name])[which]), headers={"user-agent": CHROME})
    live.http.head(path(links_in(mails["bob"])[0]))
    live.web.tracking.recorder.flush(everything=True)
    with live.web.engine.connect() as conn:
        found = reports.build(conn, "tracked")
    data = found.as_dict()
    assert (data["figures"]["clicks"], data["figures"]["machine_clicks"]) == (2, 1)
    assert [(link["url"], link["text"], link["people"], link["machine"]) for link in data["links"]] == [
        ("https://example.org/report", "the report / a PDF", 2, 0),
        ("https://example.org/data.csv", "the data", 1, 0),
        (STORY, "the first story", 0, 1)]
    page = reports.render_html(found)
    assert page.index("https://example.org/report") < page.index("https://example.org/data.csv") < page.index(
        "https://example.org/story?id=1&amp;src=mail")
    add_user(live)
    admin = login(live)
    shown = admin.get("/admin/issues/tracked/report").text
    admin.close()
    assert "Links, most people first" in shown and shown.index("the report / a PDF") < shown.index("the data")
    assert "lower bound" in shown
