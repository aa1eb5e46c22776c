"""The admin pages over HTTP, logged in: each action does what the matching CLI command does."""

from __future__ import annotations

import csv
import io

import pytest

from tests.web.admin_helpers import add_user, login, page_token, post_events, send_issue

HTML = {"accept": "text/html"}
CSV_TEXT = ("email,name,city\nann@example.com,Ann Lee,Oslo\nBOB@example.org,Bob,\nnot-an-address,Nobody,\n"
            "ann@example.com,Ann again,\n")


@pytest.fixture
def admin(live):
    add_user(live)
    client = login(live)
    client.headers.update(HTML)
    live.admin = client
    return live


def post(admin, path: str, data: dict | None = None, **kw):
    return admin.admin.post(path, data={"csrf": page_token(admin.admin), **(data or {})}, **kw)


def members(admin, list_name: str = "crank") -> dict[str, str]:
    from subscribers import store

    with admin.web.engine.connect() as conn:
        found = store.get_list(conn, list_name)
        rows = conn.exec_driver_sql(
            "SELECT s.email, coalesce(s.global_status, m.status) FROM memberships m JOIN subscribers s "
            "ON s.id = m.subscriber_id WHERE m.list_id = ?", (found.id,)).all()
    return dict(rows)


def outbox_mails(live):
    import email
    import email.policy

    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in live.settings.delivery.outbox_dir.rglob("*.eml")]


def figures_of(html: str) -> dict[str, str]:
    import re

    return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", html))


def test_lists_create_edit_delete(admin):
    made = post(admin, "/admin/lists", {"name": "digest", "title": "The Digest", "description": "weekly"})
    assert made.status_code == 303 and made.headers["location"] == "/admin/lists/digest?created=1"
    page = admin.admin.get("/admin/lists/digest?created=1")
    assert "Created list digest." in page.text and "The Digest" in page.text
    bad = post(admin, "/admin/lists", {"name": "Not A Name"})
    assert bad.status_code == 400 and "must be 1-64 lower-case letters" in bad.text
    taken = post(admin, "/admin/lists", {"name": "digest"})
    assert taken.status_code == 400 and "already exists" in taken.text
    edited = post(admin, "/admin/lists/digest", {"title": "The Weekly Digest", "description": ""})
    assert edited.status_code == 303
    assert "The Weekly Digest" in admin.admin.get("/admin/lists").text
    confirm = admin.admin.get("/admin/lists/digest/delete")
    assert "Delete list digest?" in confirm.text and "cannot be undone" in confirm.text
    assert "digest" in admin.admin.get("/admin/lists").text
    gone = post(admin, "/admin/lists/digest/delete")
    assert gone.headers["location"] == "/admin/lists?deleted=digest"
    assert admin.admin.get("/admin/lists/digest").status_code == 404


def test_import_dry_run_then_apply_then_export(admin):
    files = {"file": ("audience.csv", CSV_TEXT.encode(), "text/csv")}
    dry = post(admin, "/admin/lists/crank/import", files=files)
    assert dry.status_code == 200, dry.text
    assert ("Dry run, nothing was written. Read 4 rows from audience.csv into crank: 2 new, 0 updated, "
            "0 unchanged, 1 invalid, 0 suppressed, 1 duplicates merged.") in dry.text
    assert "not-an-address" in dry.text and members(admin) == {}
    upload = dry.text.split('name="upload" value="')[1].split('"')[0]
    done = post(admin, "/admin/lists/crank/import/apply", {"upload": upload, "overwrite": "1"})
    assert "Read 4 rows from audience.csv into crank: 2 new" in done.text and "Dry run" not in done.text
    assert members(admin) == {"ann@example.com": "active", "bob@example.org": "active"}
    with admin.web.engine.connect() as conn:
        from subscribers import store

        first = store.history_of(conn, store.get_subscriber(conn, "ann@example.com").id)[0]
    assert first.detail["file"] == "audience.csv"                     # the admin's name for it
    again = post(admin, "/admin/lists/crank/import/apply", {"upload": upload})
    assert again.status_code == 410                                   # applied once, not twice
    exported = admin.admin.get("/admin/lists/crank/export.csv")
    assert exported.headers["content-disposition"] == 'attachment; filename="crank.csv"'
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert [(r["email"], r["name"], r["status"], r["city"]) for r in rows] == [
        ("ann@example.com", "Ann Lee", "active", "Oslo"), ("bob@example.org", "Bob", "active", "")]
    assert admin.admin.get("/admin/lists/crank/export.csv?status=bounced").text.count("\n") == 1


def test_import_of_a_file_that_is_not_csv_says_why(admin):
    files = {"file": ("photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00binary", "text/csv")}
    reply = post(admin, "/admin/lists/crank/import", files=files)
    assert reply.status_code == 400 and "could not be imported" in reply.text


def test_members_filter_and_pages(admin):
    from subscribers import store

    with admin.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank").id
        ids = [store.add_subscriber(conn, f"r{i:02}@example.com", crank).subscriber_id for i in range(55)]
        store.unsubscribe(conn, ids[3], crank, source="admin")
    first = admin.admin.get("/admin/lists/crank")
    assert first.text.count("/admin/subscribers/") == 50 and "Next page" in first.text
    assert "all (55)" in first.text and "unsubscribed (1)" in first.text
    after = first.text.split("after=")[1].split('"')[0]
    second = admin.admin.get(f"/admin/lists/crank?after={after}")
    assert second.text.count("/admin/subscribers/") == 5 and "Previous page" in second.text
    only = admin.admin.get("/admin/lists/crank?status=unsubscribed")
    assert only.text.count("/admin/subscribers/") == 1 and "r03@example.com" in only.text
    assert admin.admin.get("/admin/lists/crank?status=nonsense").status_code == 400
    # the counts are cached, but an admin's own action shows at once
    post(admin, f"/admin/subscribers/{ids[4]}/unsubscribe", {"list": "crank"})
    assert "unsubscribed (2)" in admin.admin.get("/admin/lists/crank").text


def test_subscriber_search_page_and_actions(admin):
    added = post(admin, "/admin/subscribers", {"email": " Ann@Example.com ", "name": "Ann Lee", "list": "crank"})
    assert added.status_code == 303
    person = added.headers["location"].split("?")[0]
    page = admin.admin.get(added.headers["location"])
    assert "ann@example.com" in page.text and "Subscribed." in page.text and "admin" in page.text
    found = admin.admin.get("/admin/subscribers", params={"q": "ANN"})
    assert "1 match for" in found.text and person in found.text
    assert "0 matches" in admin.admin.get("/admin/subscribers", params={"q": "zed"}).text

    out = post(admin, f"{person}/unsubscribe", {"list": "crank"})
    assert out.headers["location"].endswith("did=unsubscribed")
    assert members(admin) == {"ann@example.com": "unsubscribed"}
    again = post(admin, "/admin/subscribers", {"email": "ann@example.com", "list": "crank"})
    assert again.status_code == 400 and "unsubscribed" in again.text      # nothing comes back by accident
    asked = post(admin, f"{person}/resubscribe", {"list": "crank"})     # it needs their consent: said first
    assert asked.status_code == 200 and "This needs their consent." in asked.text
    assert members(admin) == {"ann@example.com": "unsubscribed"}
    back = post(admin, f"{person}/resubscribe", {"list": "crank", "consent": "yes"})
    assert back.headers["location"].endswith("did=resubscribed")
    assert members(admin) == {"ann@example.com": "active"}
    history = admin.admin.get(person).text
    assert history.count("→ unsubscribed") == 1 and "→ active" in history

    assert "cannot be undone" in admin.admin.get(f"{person}/forget").text
    forgotten = post(admin, f"{person}/forget")
    assert "Forgot ann@example.com" in forgotten.text
    assert admin.admin.get(person).status_code == 404 and members(admin) == {}
    refused = post(admin, "/admin/subscribers", {"email": "ann@example.com", "list": "crank"})
    assert refused.status_code == 400 and "forgotten" in refused.text


def test_issue_preview_lint_text_and_proof(admin, repo):
    import shutil

    shutil.copy(repo / "issues" / "2024-11.md", admin.settings.compose.issues_dir / "2024-11.md")
    listing = admin.admin.get("/admin/issues")
    assert "/admin/issues/2024-11" in listing.text and "November 2024" in listing.text
    page = admin.admin.get("/admin/issues/2024-11")
    assert "Lint report for" in page.text and "error(s)" in page.text
    assert page.text.count('src="/admin/issues/2024-11/email.html"') == 2
    framed = admin.admin.get("/admin/issues/2024-11/email.html")
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in framed.headers["content-security-policy"]
    assert "script-src" not in framed.headers["content-security-policy"]
    assert "CRANK Call" in admin.admin.get("/admin/issues/2024-11/email.txt").text
    assert admin.admin.get("/admin/issues/2025-01").status_code == 404
    assert admin.admin.get("/admin/issues/..%2Fconfig").status_code == 404

    asked = post(admin, "/admin/issues/2024-11/proof", {"to": "editor@example.org, second@example.org"})
    assert "Send a proof of 2024-11?" in asked.text and "error(s)" in asked.text
    assert not list(admin.settings.delivery.outbox_dir.rglob("*.eml"))
    sent = post(admin, "/admin/issues/2024-11/proof", {"to": "editor@example.org, second@example.org",
                                                       "confirm": "yes"})
    assert sent.status_code == 200 and "Proof to editor@example.org: " in sent.text
    proofs = sorted(admin.settings.delivery.outbox_dir.rglob("*.eml"))
    assert len(proofs) == 2 and all(b"[PROOF]" in p.read_bytes() for p in proofs)
    assert all(f"written to {p}" in sent.text for p in proofs)          # where each proof went
    post(admin, "/admin/issues/2024-11/proof", {"to": "editor@example.org", "confirm": "yes"})
    assert len(list(admin.settings.delivery.outbox_dir.rglob("*.eml"))) == 3   # its own file: none overwritten
    for to in ("nobody", "editor@example.org, ann@localhost", "jöhn@example.org"):   # the CLI's rule
        bad = post(admin, "/admin/issues/2024-11/proof", {"to": to})
        assert bad.status_code == 400 and "email addresses" in bad.text
    incomplete = post(admin, "/admin/issues/2024-11/proof", {"to": "b@example"})    # named, with what to write
    assert incomplete.status_code == 400
    assert "&#39;b@example&#39; is incomplete: &#39;example&#39; is not a whole domain (write e.g. b@example.org)" \
        in incomplete.text


def test_report_and_dashboard_figures(admin, repo, signer):
    from subscribers import store

    with admin.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank").id
        for i in range(4):
            store.add_subscriber(conn, f"r{i}@example.com", crank)
    assert send_issue(admin, repo).sent == 4
    post_events(admin, signer, [("r0@example.com", "delivered"), ("r1@example.com", "delivered"),
                                ("r2@example.com", "bounce"), ("r3@example.com", "spamreport"),
                                ("r1@example.com", "open")])
    one_click = next(mail["List-Unsubscribe"].strip("<>") for mail in outbox_mails(admin) if "r1@" in mail["To"])
    assert admin.http.post(one_click, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    report = admin.admin.get("/admin/issues/2024-11/report")
    assert report.status_code == 200
    assert figures_of(report.text) == {"readers": "4", "sent": "4", "failed": "0", "skipped": "0", "bounces": "1",
                                       "complaints": "1", "unsubscribes": "1", "opens": "1", "clicks": "0"}
    assert "<svg" in report.text and "<polyline" in report.text
    board = admin.admin.get("/admin").text
    assert "2024-11" in board and "<polyline" in board and "Nothing is scheduled" in board
    assert admin.admin.get("/admin/issues/2025-01/report").status_code == 404


def test_a_proof_stays_outside_the_send_ledger(admin, repo):
    import shutil

    from sqlalchemy import func, select

    from mailer.send.ledger import sends

    shutil.copy(repo / "issues" / "2024-11.md", admin.settings.compose.issues_dir / "2024-11.md")
    assert post(admin, "/admin/issues/2024-11/proof", {"to": "editor@example.org", "confirm": "yes"}).status_code == 200
    with admin.web.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sends)).scalar() == 0
    assert "Not sent yet." in admin.admin.get("/admin/issues/2024-11").text


def test_uploads_above_the_form_limit_are_fine_up_to_64_mb(admin):
    import http.client
    from urllib.parse import urlsplit

    big = "email,name\n" + "".join(f"r{i}@example.com,Reader {i}\n" for i in range(5000))   # ~150 KB
    assert len(big) > 64 * 1024
    reply = post(admin, "/admin/lists/crank/import", files={"file": ("big.csv", big.encode(), "text/csv")})
    assert reply.status_code == 200 and "5,000 new" in reply.text
    where = urlsplit(admin.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    conn.putrequest("POST", "/admin/lists/crank/import")
    conn.putheader("Content-Length", str(64 * 1024 * 1024 + 1))
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.endheaders()
    assert conn.getresponse().status == 413


def test_stale_uploads_are_deleted_after_a_day(tmp_path, monkeypatch):
    import os
    import tempfile
    import time

    from mailer.web.admin import lists

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    folder = lists.uploads()
    old, new = folder / ("a" * 32), folder / ("b" * 32)
    for upload in (old, new):
        upload.mkdir(mode=0o700)
        (upload / "audience.csv").write_text("email\n")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    lists.uploads()
    assert not old.exists() and lists._upload_file("b" * 32).name == "audience.csv"
    assert lists._upload_file("../etc") is None


def test_schedule_and_unschedule_from_the_issue_page(admin, repo):
    import shutil

    shutil.copy(repo / "issues" / "2024-11.md", admin.settings.compose.issues_dir / "2024-11.md")
    done = post(admin, "/admin/issues/2024-11/schedule", {"at": "2099-12-01 09:00", "confirm": "yes"})
    assert done.status_code == 200 and "Scheduled for 2099-12-01 09:00" in done.text
    assert "2024-11" in admin.admin.get("/admin").text.split('id="next-send"')[1].split("</section>")[0]
    assert "2099-12-01" in admin.admin.get("/admin/issues").text
    again = post(admin, "/admin/issues/2024-11/unschedule")
    assert again.status_code == 200 and "a draft again" in again.text
    assert "Nothing is scheduled." in admin.admin.get("/admin").text
    past = post(admin, "/admin/issues/2024-11/schedule", {"at": "2020-01-01 09:00", "confirm": "yes"})
    assert past.status_code == 400 and "Not scheduled:" in past.text and "in the past" in past.text


def test_an_issue_with_lint_errors_is_neither_proofed_nor_scheduled(admin, repo):
    path = admin.settings.compose.issues_dir / "2024-12.md"
    path.write_text((repo / "issues" / "2024-11.md").read_text(encoding="utf-8").replace(
        "## Links", "Dear {{ nmae }},\n\n## Links", 1), encoding="utf-8")
    proof = post(admin, "/admin/issues/2024-12/proof", {"to": "editor@example.org"})
    assert proof.status_code == 400 and "The lint report has errors" in proof.text and "Yes, send" not in proof.text
    proof = post(admin, "/admin/issues/2024-12/proof", {"to": "editor@example.org", "confirm": "yes"})
    assert proof.status_code == 400 and "lint error" in proof.text
    assert not list(admin.settings.delivery.outbox_dir.rglob("*.eml"))
    scheduled = post(admin, "/admin/issues/2024-12/schedule", {"at": "2099-12-01 09:00", "confirm": "yes"})
    assert scheduled.status_code == 400 and "lint error" in scheduled.text
