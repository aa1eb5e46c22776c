"""Everywhere an operator reads a subject, it is shown as the editor wrote it: merge fields with
their fallbacks (`Dear {{ first_name | default("reader") }}: …`), never the compiled markers
(`%%first_name~cmVhZGVy%%`) nor a reader's values ("Dear reader"). Each surface, for real:
`issue schedule`, `schedule show`, `send` (question, dry run, result), the scheduler's notices,
/admin, /admin/issues and the admin report."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest

from mailer.model import as_written, marker, with_default
from tests.conftest import REPO
from tests.deliver.helpers import seed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WRITTEN = 'Dear {{ first_name | default("reader") }}: Test Review | January 2025'
SETTING = "subject = 'Dear {{ first_name | default(\"reader\") }}: Test Review | January 2025'"
SECRET = "test-secret-key-0123456789abcdef"


def _issue(folder, slug: str = "2024-12") -> None:
    """tests/fixtures/issues/minimal.md with a subject that has a merge field and its fallback."""
    text = (REPO / "tests/fixtures/issues/minimal.md").read_text()
    (folder / f"{slug}.md").write_text(re.sub(r"(?m)^subject = .*$", lambda _: SETTING, text, count=1))


def _compiled_anywhere(text: str) -> bool:
    return "%%" in text or "Dear reader" in text or "cmVhZGVy" in text


@pytest.mark.parametrize(("compiled", "written"), [
    (f"Dear {marker(with_default('first_name', 'reader'), 'text')}: x", 'Dear {{ first_name | default("reader") }}: x'),
    (f"Hi {marker(with_default('name', 'friend'), 'html')}", 'Hi {{ name | default("friend") }}'),
    (f"For {marker('email', 'text')}", "For {{ email }}"),
    (f"{marker(with_default('first_name', 'the “best” reader'), 'text')}",
     '{{ first_name | default("the “best” reader") }}'),
    (marker(with_default("first_name", 'a "quoted" one'), "text"), """{{ first_name | default('a "quoted" one') }}"""),
    ("No fields, 100% plain", "No fields, 100% plain"),
])
def test_markers_read_back_as_written(compiled, written):
    assert as_written(compiled) == written


# --- the command line -----------------------------------------------------------------------------

@pytest.fixture
def project(config_file, cli, monkeypatch):
    """config.toml in a temporary folder, issue 2024-12 with a merge-field subject, list crank."""
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    folder = config_file.parent
    (folder / "issues").mkdir()
    _issue(folder / "issues")
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(re.sub(r'(?m)^templates_dir = "templates"', f'templates_dir = "{REPO / "templates"}"', text),
                           encoding="utf-8")
    assert cli("--config", config_file, "lists", "create", "crank").code == 0
    assert cli("--config", config_file, "subscribers", "add", "ann@example.org", "--list", "crank").code == 0
    return config_file


def test_the_commands_show_the_subject_as_written(cli, project):
    def run(*args, **kw):
        done = cli("--config", project, *args, **kw)
        assert done.code == 0, done.err
        assert not _compiled_anywhere(done.out + done.err), done.out + done.err
        return done.out + done.err

    assert f"Scheduled 2024-12 '{WRITTEN}' for " in run("issue", "schedule", "2024-12")
    assert f"2024-12 '{WRITTEN}'" in run("schedule", "show")
    assert run("issue", "unschedule", "2024-12")
    assert f"Dry run: would send '{WRITTEN}' to 1 subscribers" in run("send", "2024-12", "--list", "crank",
                                                                      "--dry-run")
    sent = run("send", "2024-12", "--list", "crank", input="y\n")
    assert f"Send '{WRITTEN}' to 1 active subscribers of crank" in sent and f"Sent '{WRITTEN}' to crank" in sent
    assert f"'{WRITTEN}' was already sent to crank" in run("send", "2024-12", "--list", "crank", "--yes")


# --- the scheduler's notices ----------------------------------------------------------------------

def test_the_schedulers_notices_show_the_subject_as_written(settings, tmp_path, monkeypatch, db_url):
    from mailer.schedule.scheduler import Scheduler, schedule_issue

    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    issues = tmp_path / "issues"
    issues.mkdir()
    _issue(issues)
    s = dataclasses.replace(
        settings, database=dataclasses.replace(settings.database, url=db_url),
        compose=dataclasses.replace(settings.compose, issues_dir=issues),
        schedule=dataclasses.replace(settings.schedule, list="crank", editors=("editor@example.org",),
                                     proof_hours_before=0))
    seed(db_url, 1)
    slot = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    schedule_issue(s, "2024-12", None, datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    Scheduler(s).slot(slot + timedelta(hours=3))          # beyond the grace time: missed, the editors told
    notices = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
               for p in s.delivery.outbox_dir.glob("*.eml")]
    [notice] = [m for m in notices if "missed its slot" in m["Subject"]]
    body = notice.get_body(("plain",)).get_content()
    assert f"{WRITTEN} (2024-12) was not sent to crank" in body and not _compiled_anywhere(body)


# --- the admin ------------------------------------------------------------------------------------

def test_the_admin_shows_the_subject_as_written(live):
    from mailer.compose.render import compose_issue
    from mailer.schedule.scheduler import schedule_issue, utcnow
    from mailer.send import dispatch
    from tests.web.admin_helpers import add_user, login

    issues = live.settings.compose.issues_dir
    _issue(issues, "2024-12")
    _issue(issues, "2025-01")   # a draft
    _issue(issues, "2025-02")   # scheduled
    seed(live.web.engine.url.render_as_string(hide_password=False), 2)
    composed = compose_issue(issues / "2024-12.md", live.settings)
    assert dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank")).sent == 2
    schedule_issue(dataclasses.replace(live.settings, schedule=dataclasses.replace(live.settings.schedule,
                                                                                   list="crank")),
                   "2025-02", "2099-06-01 10:00", utcnow())
    add_user(live)
    admin = login(live, headers={"accept": "text/html"})
    shown = re.escape("Dear {{ first_name | default(&#34;reader&#34;) }}: Test Review | January 2025")
    for path, times in (("/admin", 2), ("/admin/issues", 3), ("/admin/issues/2024-12/report", 1)):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert len(re.findall(shown, page.text)) >= times, (path, page.text)
        assert not _compiled_anywhere(page.text), path
