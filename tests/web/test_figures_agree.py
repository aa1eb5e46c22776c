"""One set of figures (mailer/reports/figures.py): a real SMTP send with refusals at RCPT, a one-click
unsubscribe through our own header, a complaint and opens from the provider's webhook; `mailer report`
(table and --json), `mailer issues` (and --json), the admin report, /admin/issues and the dashboard
all show the same numbers, and the failed readers are named with their reasons."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import re

import pytest

from tests.servers.smtp_sink import SmtpSink
from tests.web.admin_helpers import add_user, login, post_events

HTML = {"accept": "text/html"}
SLUG = "2024-11"
REFUSED = {"r4@example.com": "550 5.1.1 No such user here", "r5@example.com": "550 5.7.1 Refused by local policy"}

# figure: (what the table says, the JSON value)
EXPECTED = {
    "readers": ("6", 6),
    "accepted": ("4", 4),
    "failed": ("2", 2),
    "skipped": ("0", 0),
    "in_doubt": ("0", 0),
    "hard_bounces": ("1", 1),          # the 5.1.1 refusal at RCPT, counted for the issue
    "complaints": ("1", 1),
    "unsubscribes": ("1", 1),          # our own List-Unsubscribe one-click, with SMTP
    "opens": ("1", 1),                 # two open events of one reader: one reader
    "delivered": ("not reported", None),   # SMTP reports no deliveries
}


@pytest.fixture
def sent(live, repo, tmp_path, monkeypatch):
    """Issue 2024-11 sent through a real SMTP relay to r0..r5@example.com, r4 and r5 refused at RCPT."""
    import shutil

    from mailer.compose.render import compose_issue
    from mailer.send import dispatch
    from subscribers import store

    with live.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank").id
        for i in range(6):
            store.add_subscriber(conn, f"r{i}@example.com", crank, name=f"Reader {i}")
    path = live.settings.compose.issues_dir / f"{SLUG}.md"
    shutil.copy(repo / "issues" / f"{SLUG}.md", path)
    with SmtpSink(replies=REFUSED) as sink:
        d = live.settings.delivery
        relay = dataclasses.replace(d.smtp, host="127.0.0.1", port=sink.port, starttls=False, tls=False, username="",
                                    connect_retry_seconds=0, dkim_domain="", dkim_processes=-1)
        smtp = dataclasses.replace(live.settings, delivery=dataclasses.replace(d, backend="smtp", smtp=relay))
        summary = dispatch.run_send(smtp, dispatch.plan_send(smtp, compose_issue(path, smtp), "crank"))
        mails = [email.message_from_bytes(m.data, policy=email.policy.default) for m in sink.messages]
    assert (summary.sent, summary.failed) == (4, 2)
    one_click = next(m["List-Unsubscribe"].split(",")[0].strip(" <>") for m in mails if "r1@" in m["To"])
    assert live.http.post(one_click, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    config = tmp_path / "config.toml"
    config.write_text((repo / "config.toml").read_text(encoding="utf-8").replace(
        'url = "sqlite:///mailer.db"', f'url = "{live.settings.database.url}"'), encoding="utf-8")
    return config


def dl(html: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", html))


def test_every_surface_shows_the_same_figures(live, signer, sent, cli):
    from mailer.reports.figures import LABELS

    post_events(live, signer, [("r3@example.com", "spamreport"), ("r0@example.com", "open"),
                               ("r0@example.com", "open")])
    report = json.loads(cli("--config", sent, "report", SLUG, "--json").out)
    table = cli("--config", sent, "report", SLUG).out
    listed = json.loads(cli("--config", sent, "issues", "--json").out)
    issues_text = cli("--config", sent, "issues").out
    add_user(live)
    admin = login(live)
    page = dl(admin.get(f"/admin/issues/{SLUG}/report", headers=HTML).text)
    [mine] = [i for i in listed["issues"] if i["issue"] == SLUG]
    for name, (shown, value) in EXPECTED.items():
        assert report["figures"][name] == value, name
        assert mine["figures"]["figures"][name] == value, name
        assert page[LABELS[name]] == shown, name
        assert re.search(rf"^{re.escape(LABELS[name])}\s+{re.escape(shown)}\b", table, re.M), name
    assert report["delivered_reported"] is False and "SMTP" in " ".join(report["notes"])

    row = re.compile(r"<td class=\"num\">([^<]+)</td>")
    for path in ("/admin", "/admin/issues"):
        html = admin.get(path, headers=HTML).text
        cells = row.findall(html[html.index(f'/admin/issues/{SLUG}"'):])[:6]
        assert cells == ["6", "4", "2", "1", "1", "1"], path   # readers, accepted, failed, hard, complaints, unsub.
    assert re.search(rf"^{SLUG}\s+\S+\s+.*crank: 4 sent, 2 failed, 0 skipped$", issues_text, re.M), issues_text
    assert "6 readers; delivered not reported; 1 hard bounces, 0 soft bounces, 0 blocks, 1 complaints, " \
           "1 unsubscribes, 1 opens, 0 clicks" in issues_text


def test_failed_readers_are_named_with_reason_and_time(live, sent, cli):
    report = json.loads(cli("--config", sent, "report", SLUG, "--json").out)
    failures = sorted(report["failures"], key=lambda f: f["address"])
    assert [(f["address"], f["reason"]) for f in failures] == [
        ("r4@example.com", "550 5.1.1 No such user here"), ("r5@example.com", "550 5.7.1 Refused by local policy")]
    assert all(f["time"] and f["list"] == "crank" for f in failures)
    table = cli("--config", sent, "report", SLUG).out
    assert "Failed readers (2)" in table and "r5@example.com" in table and "5.7.1 Refused by local policy" in table
    status = cli("--config", sent, "send", SLUG, "--list", "crank", "--status").out
    assert "r4@example.com" in status and "550 5.1.1 No such user here" in status
    add_user(live)
    page = login(live).get(f"/admin/issues/{SLUG}", headers=HTML).text
    assert "r4@example.com" in page and "550 5.7.1 Refused by local policy" in page


def test_a_segment_send_is_shown_with_its_tags(live, repo, tmp_path, cli):
    """`--tag press` then the whole list: two sends, each its own line, the segment named."""
    import shutil

    from mailer.compose.render import compose_issue
    from mailer.send import dispatch
    from subscribers import store, tags

    with live.web.engine.begin() as conn:
        crank = store.get_list(conn, "crank").id
        for i in range(3):
            sid = store.add_subscriber(conn, f"p{i}@example.com", crank).subscriber_id
            if i == 0:
                tags.add_tags(conn, sid, ["press"])
    path = live.settings.compose.issues_dir / f"{SLUG}.md"
    shutil.copy(repo / "issues" / f"{SLUG}.md", path)
    composed = compose_issue(path, live.settings)
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank", tags=("press",)))
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank"))
    config = tmp_path / "config.toml"
    config.write_text((repo / "config.toml").read_text(encoding="utf-8").replace(
        'url = "sqlite:///mailer.db"', f'url = "{live.settings.database.url}"'), encoding="utf-8")
    listed = cli("--config", config, "issues").out
    assert "crank (tags: press): 1 sent, 0 failed, 0 skipped" in listed
    assert "crank: 2 sent, 0 failed, 0 skipped" in listed
    data = json.loads(cli("--config", config, "issues", "--json").out)
    [mine] = [i for i in data["issues"] if i["issue"] == SLUG]
    assert [(s["name"], s["accepted"]) for s in mine["figures"]["sends"]] == [("crank (tags: press)", 1), ("crank", 2)]
    assert mine["figures"]["figures"]["readers"] == 3
