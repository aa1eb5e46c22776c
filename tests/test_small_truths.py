"""Issue 24's smaller items, as an editor and an admin type the commands: a bare issue name for
`issue build`, an unknown issue to unschedule, `issue --help`, 80 columns for `lists` and
`subscribers show`, "did you mean" for a list's typo, a dry run's and an import's progress, Mailchimp's
bookkeeping columns, and `serve` on a taken port. (`bounces scan` counting people:
tests/bounces/test_people_changed.py; the admin's proof to an incomplete address:
tests/web/test_admin_pages.py.)"""

from __future__ import annotations

import json
import re
import shutil
import socket

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture
def project(config_file, cli, monkeypatch):
    """config.toml in a temporary folder, issue 2024-12 in its issues/, list crank with one reader."""
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    folder = config_file.parent
    (folder / "issues").mkdir()
    shutil.copy(REPO / "tests/fixtures/issues/minimal.md", folder / "issues/2024-12.md")
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(re.sub(r'(?m)^templates_dir = "templates"', f'templates_dir = "{REPO / "templates"}"', text),
                           encoding="utf-8")
    assert cli("--config", config_file, "lists", "create", "crank").code == 0
    assert cli("--config", config_file, "subscribers", "add", "ann@example.org", "--list", "crank").code == 0
    return config_file


def run(cli, project, *args, **kw):
    return cli("--config", project, *args, **kw)


def test_issue_build_and_preview_take_a_bare_name(cli, project, tmp_path):
    done = run(cli, project, "issue", "build", "2024-12", "--out", tmp_path / "out")
    assert done.code == 0, done.err
    assert (tmp_path / "out" / "email.html").is_file() and "issues/2024-12.md" in done.out
    missing = run(cli, project, "issue", "build", "2099-01")
    assert missing.code == 1 and "2099-01.md: no such issue file" in missing.err


def test_unscheduling_an_unknown_issue_fails(cli, project):
    unknown = run(cli, project, "issue", "unschedule", "2099-01")
    assert unknown.code == 1 and len(unknown.err.strip().splitlines()) == 1
    assert unknown.err.startswith("error: no issue '2099-01': no file ") and "nothing scheduled" in unknown.err
    draft = run(cli, project, "issue", "unschedule", "2024-12")          # a draft: nothing to do, no error
    assert (draft.code, draft.out.strip()) == (0, "2024-12 was not scheduled; nothing changed.")


def test_issue_help_names_every_subcommand(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    shown = cli("issue", "--help").out
    commands = ("build", "preview", "proof", "schedule", "unschedule")
    assert all(re.search(rf"│ {name}\s", shown) for name in commands)
    summary = " ".join(shown.split("╭")[0].split())
    assert all(word in summary for word in ("build", "preview", "proof", "schedule or unschedule"))


def _fits(text: str) -> None:
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text


def test_lists_and_subscribers_show_fit_80_columns(cli, project, monkeypatch):
    from subscribers import store
    from subscribers.db import connect
    from subscribers.models import memberships

    monkeypatch.setenv("COLUMNS", "80")
    run(cli, project, "lists", "create", "staff-announcements", "--private", "--language", "fr", "--title",
        "Staff announcements of the Center for the National Interest, weekly")
    run(cli, project, "subscribers", "add", "ann@example.org", "--list", "staff-announcements", "--name",
        "Ann Lee-Featherstonehaugh")
    run(cli, project, "subscribers", "tag", "ann@example.org", "press", "donor", "board-of-directors")
    engine = connect(f"sqlite:///{project.parent / 'mailer.db'}")
    with engine.begin() as conn:     # a web signup's consent: its address and a browser's long user agent
        who = store.get_subscriber(conn, "ann@example.org")
        conn.execute(memberships.update().where(memberships.c.subscriber_id == who.id).values(
            consent_source="web", consent_ip="2001:db8:85a3::8a2e:370:7334", optin_ip="203.0.113.77",
            consent_user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
                               "Gecko) Version/17.1 Safari/605.1.15"))
    engine.dispose()
    lists = run(cli, project, "lists").out
    _fits(lists)
    assert lists.splitlines()[0].split() == ["list", "title", "shown", "lang", "active", "unconf.", "unsub.",
                                             "bounced", "compl.", "total"]
    shown = run(cli, project, "subscribers", "show", "ann@example.org").out
    _fits(shown)
    assert "  crank                active since " in shown and "consent from 2001:db8:85a3::8a2e:370:7334" in shown
    words = " ".join(shown.split())
    assert "subscribe (none) -> active (admin)" in words and '"added": ["board-of-directors", "donor",' in words


@pytest.mark.parametrize("args", [("send", "2024-12", "--list", "crnak", "--dry-run"),
                                  ("subscribers", "add", "bo@example.org", "--list", "Crank"),
                                  ("subscribers", "import", str(REPO / "tests/fixtures/csv/mailchimp.csv"),
                                   "--list", "cranc")])
def test_a_typo_in_a_list_name_gets_did_you_mean(cli, project, args):
    done = run(cli, project, *args)
    assert done.code == 1 and f"no list named '{args[args.index('--list') + 1]}' (did you mean 'crank'?" in done.err
    far = run(cli, project, "send", "2024-12", "--list", "zzzzzz", "--dry-run")
    assert far.code == 1 and "did you mean" not in far.err


def test_a_dry_run_shows_its_progress(cli, project):
    done = run(cli, project, "send", "2024-12", "--list", "crank", "--dry-run")
    assert done.code == 0, done.err
    assert re.search(r"dry run .* 1/1 ", done.err) and "Dry run: would send" in done.out


def test_a_dry_run_reports_every_thousand_readers(project):
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings
    from mailer.send import dispatch
    from tests.deliver.helpers import seed

    settings = load_settings(project)
    seed(f"sqlite:///{project.parent / 'mailer.db'}", 2500)
    plan = dispatch.plan_send(settings, compose_issue(project.parent / "issues/2024-12.md", settings), "crank")
    heard = []
    dispatch.dry_run(settings, plan, on_progress=lambda s: heard.append(s.sent + s.failed))
    assert heard == [1000, 2000, 2501]


def test_the_import_bar_counts_rows(cli, project, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")           # a terminal: the bar is drawn
    monkeypatch.setenv("COLUMNS", "100")
    done = run(cli, project, "subscribers", "import", REPO / "tests/fixtures/csv/mailchimp_consent.csv",
               "--list", "crank")
    assert done.code == 0, done.err
    assert re.search(r"100%\S* \d+ rows", done.err), done.err


def test_mailchimps_bookkeeping_is_not_stored(cli, project, tmp_path):
    csv = tmp_path / "mailchimp.csv"
    csv.write_text("Email Address,First Name,Last Name,Phone Number,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,"
                   "CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS\n"
                   "bo@example.org,Bo,Berg,555-0100,2,2023-03-05 10:22:31,203.0.113.7,2023-03-05 10:25:02,"
                   "203.0.113.8,59.9,10.7,1,2,Europe/Oslo,NO,Oslo,2024-01-01 10:00:00,12345,abc123,VIP,\n",
                   encoding="utf-8")
    assert run(cli, project, "subscribers", "import", csv, "--list", "crank").code == 0
    shown = json.loads(run(cli, project, "subscribers", "show", "bo@example.org", "--json").out)
    assert shown["attributes"] == {"Phone Number": "555-0100"}
    ours = tmp_path / "ours.csv"          # a file of our own keeps a `region` or `notes` column
    ours.write_text("email,region,notes\ncy@example.org,Oslo,met at the fair\n", encoding="utf-8")
    assert run(cli, project, "subscribers", "import", ours, "--list", "crank").code == 0
    shown = json.loads(run(cli, project, "subscribers", "show", "cy@example.org", "--json").out)
    assert shown["attributes"] == {"region": "Oslo", "notes": "met at the fair"}


def test_serve_on_a_taken_port_says_so_in_one_line(cli, project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(cli, project, "serve", "--host", "127.0.0.1", "--port", port)
    assert done.code == 1 and len(done.err.strip().splitlines()) == 1, done.err
    assert done.err.startswith(f"error: cannot serve on 127.0.0.1:{port}: Address already in use")
    assert f"try --port {port + 1}" in done.err
