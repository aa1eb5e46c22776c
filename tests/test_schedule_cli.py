"""`mailer issue schedule | unschedule`, `mailer issues`, `mailer schedule show`, as an editor types them."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.config import database_url, load_settings
from mailer.schedule.slots import next_slots, shown
from tests.conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def project(config_file, cli):
    """config.toml in a temporary folder (database there too), issue 2024-12, list crank with one reader."""
    folder = config_file.parent
    (folder / "issues").mkdir()
    shutil.copy(REPO / "tests/fixtures/issues/minimal.md", folder / "issues/2024-12.md")
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(re.sub(r'(?m)^templates_dir = "templates"', f'templates_dir = "{REPO / "templates"}"', text),
                           encoding="utf-8")
    assert cli("--config", config_file, "lists", "create", "crank").code == 0
    assert cli("--config", config_file, "subscribers", "add", "ann@example.org", "--list", "crank").code == 0
    return config_file


def run(cli, project, *args):
    return cli("--config", project, *args)


def next_slot(project) -> str:
    settings = load_settings(project)
    return shown(next_slots(settings.schedule, datetime.now(UTC), 1)[0], settings.schedule)


def test_schedule_show_issues_and_unschedule(cli, project):
    done = run(cli, project, "issue", "schedule", project.parent / "issues/2024-12.md")
    assert done.code == 0, done.err
    slot = next_slot(project)
    assert done.out.splitlines()[0] == (f"Scheduled 2024-12 'Test Review | January 2025' for {slot}, the next free "
                                        "slot, to list crank.")
    assert "A proof goes to gpriddy@cftni.org from " in done.out

    shown_ = run(cli, project, "schedule", "show", "--count", "2")
    lines = shown_.out.splitlines()
    assert lines[0] == 'Slots: day "1st tue" at 09:00 America/New_York, list crank, grace 60 min'
    assert lines[1] == "Scheduler: not running (none has ever run on this database); nothing goes out on its own."
    assert lines[2] == f"  {slot}  2024-12 'Test Review | January 2025'"
    assert lines[3] == "      to crank: 1 readers to reach, 0 already have it"
    assert re.fullmatch(r"  \d{4}-\d\d-\d\d 09:00 E[SD]T \(\d{4}-\d\d-\d\d 1[34]:00 UTC\)  nothing scheduled "
                        r"\(the editors get a notice\)", lines[4])

    listed = run(cli, project, "issues").out.splitlines()
    assert listed[0].startswith("Scheduler: not running")
    assert listed[1].split() == ["ISSUE", "STATE", "SEND", "TIME", "LEDGER"]
    assert re.fullmatch(rf"2024-12\s+scheduled\s+{re.escape(slot)}\s+-", listed[2])
    assert listed[3].strip() == "to crank: 1 readers to reach, 0 already have it"

    moved = run(cli, project, "issue", "schedule", "2024-12", "--at", "2099-06-01 10:30")
    assert "for 2099-06-01 10:30 EDT (2099-06-01 14:30 UTC) (moved), the time given" in moved.out
    assert "2099-06-01 10:30 EDT (2099-06-01 14:30 UTC) --at" in run(cli, project, "issues").out

    gone = run(cli, project, "issue", "unschedule", "2024-12")
    assert (gone.code, gone.out.strip()) == (0, "Unscheduled 2024-12 (was scheduled); it is a draft again.")
    again = run(cli, project, "issue", "unschedule", "2024-12")
    assert (again.code, again.out.strip()) == (0, "2024-12 was not scheduled; nothing changed.")
    assert "No issue is scheduled in these slots" in run(cli, project, "schedule", "show").out


@pytest.mark.parametrize("args, message", [
    (("--at", "2020-01-01 09:00"), r"error: --at '2020-01-01 09:00' is in the past \(2020-01-01 09:00 EST "
                                   r"\(2020-01-01 14:00 UTC\)\)"),
    (("--at", "soon"), r"error: --at 'soon' is not a date and time like"),
    (("--at", "2099-03-08 02:15"), r"error: --at '2099-03-08 02:15': 2099-03-08 02:15 does not exist in "
                                   r"America/New_York"),
])
def test_a_bad_at_is_one_line(cli, project, args, message):
    done = run(cli, project, "issue", "schedule", "2024-12", *args)
    assert done.code == 1 and re.fullmatch(message + r".*\n", done.err) and "Traceback" not in done.err
    assert re.search(r"^2024-12\s+draft", run(cli, project, "issues").out, re.M)


def test_lint_errors_refuse_with_one_line(cli, project):
    path = project.parent / "issues/2024-12.md"
    path.write_text(path.read_text(encoding="utf-8").replace("First story paragraph.", "Hi %%unsubscribe%%"),
                    encoding="utf-8")
    done = run(cli, project, "issue", "schedule", "2024-12")
    assert done.code == 1 and done.out == ""
    assert done.err.startswith("error: 2024-12 has 1 lint error(s), fix them first (`mailer issue build ")
    assert "unresolved unknown or misplaced marker %%unsubscribe%%" in done.err and done.err.count("\n") == 1


def test_a_missing_file_or_list_is_named(cli, project):
    missing = run(cli, project, "issue", "schedule", "2031-01")
    assert missing.code == 1 and "2031-01.md" in missing.err and missing.err.count("\n") == 1
    text = project.read_text(encoding="utf-8").replace('list = "crank"', 'list = "nosuch"')
    project.write_text(text, encoding="utf-8")
    nolist = run(cli, project, "issue", "schedule", "2024-12")
    assert nolist.code == 1 and "nosuch" in nolist.err and nolist.err.count("\n") == 1


@pytest.mark.parametrize("old, new, message", [
    ('timezone = "America/New_York"', 'timezone = "Mars/Olympus"',
     "error: [schedule] timezone must be an IANA time zone such as \"America/New_York\", not 'Mars/Olympus'"),
    ('time = "09:00"', 'time = "9am"', "error: [schedule] time must be HH:MM (24-hour), not '9am'"),
    ('editors = ["gpriddy@cftni.org"]', 'editors = "gpriddy@cftni.org"',
     "error: [schedule] editors must be a list of strings, not 'gpriddy@cftni.org'"),
    ('day = "1st tue"', 'day = "first tue"', "error: [schedule] day 'first tue' is not an APScheduler day expression"),
    ('list = "crank"', 'list = ""', "error: [schedule] list is not set: name the list that gets each scheduled issue"),
])
def test_schedule_config_errors_name_the_key(cli, project, old, new, message):
    project.write_text(project.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    done = run(cli, project, "schedule", "show") if "list" not in old else run(cli, project, "schedule", "run")
    assert done.code == 2 and done.err.startswith(message), done.err


def _put(project, send_at, *, now=None):
    """The issue scheduled for `send_at` as a scheduler would find it (the CLI refuses a past time)."""
    from mailer.migrate import connect
    from mailer.schedule import states

    engine = connect(database_url(load_settings(project)))
    with engine.begin() as conn:
        states.put_scheduled(conn, issue="2024-12", source="issues/2024-12.md", subject="Test Review",
                             list_name="crank", send_at=send_at, pinned=True, now=now or datetime.now(UTC))
    engine.dispose()


def _beat(project, next_run: datetime):
    """The tick job's row in APScheduler's job table, as a running `mailer schedule run` keeps it."""
    from sqlalchemy import delete, insert

    from mailer.migrate import connect
    from mailer.schedule.status import jobs

    engine = connect(database_url(load_settings(project)))
    jobs.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(delete(jobs))
        conn.execute(insert(jobs).values(id="tick", next_run_time=next_run.timestamp(), job_state=b"x"))
    engine.dispose()


@pytest.mark.parametrize("late, state, words", [
    (timedelta(minutes=10), "due", "has come and no scheduler has sent it yet"),
    (timedelta(hours=3), "missed", "passed with no scheduler running; nothing was sent. Schedule it again"),
])
def test_a_passed_slot_is_visible_without_a_scheduler(cli, project, late, state, words):
    _put(project, datetime.now(UTC) - late)
    listed = run(cli, project, "issues").out
    assert re.search(rf"^2024-12\s+{state}\s", listed, re.M), listed
    assert words in listed
    shown_ = run(cli, project, "schedule", "show").out
    assert f"2024-12 is {state}: " in shown_ and words in shown_
    data = json.loads(run(cli, project, "issues", "--json").out)
    [issue] = data["issues"]
    assert (issue["state"], data["scheduler"]["running"]) == (state, False)


@pytest.mark.parametrize("ago, said", [
    (timedelta(seconds=-20), r"Scheduler: running \(`mailer schedule run`; last tick \d+ s ago\)\."),
    (timedelta(hours=2), r"Scheduler: not running \(last seen \d{4}-\d\d-\d\d \d\d:\d\d E[SD]T .*\); nothing goes"),
])
def test_the_scheduler_heartbeat_is_shown(cli, project, ago, said):
    _beat(project, datetime.now(UTC) - ago)
    assert re.match(said, run(cli, project, "schedule", "show").out.splitlines()[1])
    assert re.match(said, run(cli, project, "issues").out.splitlines()[0])


def test_a_proof_time_already_past_is_not_offered_as_upcoming(cli, project):
    soon = (datetime.now(UTC) + timedelta(hours=3)).astimezone(ZoneInfo("America/New_York"))
    done = run(cli, project, "issue", "schedule", "2024-12", "--at", soon.strftime("%Y-%m-%d %H:%M"))
    assert done.code == 0, done.err
    assert "A proof goes to gpriddy@cftni.org at the scheduler's next tick (its time, " in done.out
    assert "has passed)" in done.out
