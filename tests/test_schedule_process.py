"""The real `mailer schedule run` process on a shifted clock: the issue goes out at the slot, once.

Debian's libfaketime starts the process's wall clock 10 seconds before a slot (FAKETIME="@..."),
leaving the monotonic clock alone (FAKETIME_DONT_FAKE_MONOTONIC=1: Python's timed waits run on it,
so faking it would stop APScheduler's wait). The library is preloaded into the Python process
itself, not through the `faketime` wrapper, which forks and would not pass SIGTERM on.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.config import ScheduleSettings
from mailer.schedule.slots import next_slots
from tests.services import missing

SCHEDULE = ScheduleSettings(day="1st tue", time="09:00", timezone="America/New_York", list="sample",
                            misfire_grace_minutes=60, proof_hours_before=0, editors=("editor@example.org",))


def libfaketime() -> Path | None:
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    candidates = [Path("/usr/lib") / multiarch / "faketime/libfaketime.so.1"]
    try:
        listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True, timeout=30,
                                check=False).stdout
        candidates += [Path(p) for p in listed.split() if p.endswith("/libfaketime.so.1")]
    except (OSError, subprocess.SubprocessError):
        pass
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture
def project(repo, tmp_path) -> Path:
    """A copy of the project's config, issues and templates, with the sample list imported."""
    for name in ("issues", "templates"):
        shutil.copytree(repo / name, tmp_path / name)
    config = (repo / "config.toml").read_text(encoding="utf-8")
    config = re.sub(r'(?m)^list = "crank".*$', 'list = "sample"', config)
    config = re.sub(r"(?m)^proof_hours_before = \d+.*$", "proof_hours_before = 0", config)
    config = re.sub(r"(?m)^editors = .*$", 'editors = ["editor@example.org"]', config)
    (tmp_path / "config.toml").write_text(config, encoding="utf-8")
    for args in (["lists", "create", "sample"],
                 ["subscribers", "import", "issues/sample-list.csv", "--list", "sample"]):
        done = subprocess.run(mailer(*args), cwd=tmp_path, env=environment(), capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    return tmp_path


def mailer(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailer", *args]


def environment(fake_at: datetime | None = None, lib: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILER_CONFIG", "LD_PRELOAD", "FAKETIME")}
    env.update(MAILER_SECRET_KEY="test-secret-key-0123456789abcdef", TZ="UTC", PYTHONUNBUFFERED="1")
    if fake_at is not None:
        env.update(LD_PRELOAD=str(lib), FAKETIME=f"@{fake_at:%Y-%m-%d %H:%M:%S}", FAKETIME_DONT_FAKE_MONOTONIC="1",
                   FAKETIME_NO_CACHE="1")
    return env


def readers_got(outbox: Path) -> Counter:
    got = Counter()
    for path in outbox.glob("2024-11.*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["Subject"] == "CRANK Call | November 2024":
            got[msg["To"].addresses[0].addr_spec] += 1
    return got


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_schedule_run_sends_the_issue_at_the_slot_under_faketime(project):
    lib = libfaketime()
    if lib is None:
        missing("Debian's faketime (libfaketime.so.1) is not installed: apt-get install faketime")
    slot = next_slots(SCHEDULE, datetime.now(UTC) + timedelta(days=1), 1)[0].astimezone(UTC)
    scheduled = subprocess.run(mailer("issue", "schedule", "2024-11"), cwd=project, capture_output=True, text=True,
                               env=environment(slot - timedelta(minutes=5), lib), timeout=120, check=False)
    assert scheduled.returncode == 0, scheduled.stderr
    assert f"({slot:%Y-%m-%d %H:%M} UTC)" in scheduled.stdout

    outbox = project / "outbox"
    readers = (project / "issues/sample-list.csv").read_text(encoding="utf-8").count("@")

    def everyone_once() -> bool:
        got = readers_got(outbox)
        return len(got) == readers and set(got.values()) == {1}

    log = project / "scheduler.log"
    with log.open("w") as err:
        proc = subprocess.Popen(mailer("schedule", "run"), cwd=project, stdout=subprocess.DEVNULL, stderr=err,
                                env=environment(slot - timedelta(seconds=10), lib))
        try:
            sent = wait_for(lambda: everyone_once() and " sent (send #" in log.read_text(), 90)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = log.read_text().splitlines()
    assert sent, "\n".join(lines)
    assert code == 0, "\n".join(lines)
    assert everyone_once() and readers == 5
    stamp = f"{slot:%Y-%m-%dT%H:%M}"
    assert any(re.match(rf"{stamp}:0\dZ issue=2024-11 list=sample sending \(slot ", line) for line in lines), lines
    assert any(re.match(rf"{stamp}:\d\dZ issue=2024-11 list=sample sent \(send #1\): 5 sent, 0 failed, 0 skipped$",
                        line) for line in lines), lines
    assert lines[-1].endswith("scheduler stopped")

    listed = subprocess.run(mailer("issues"), cwd=project, env=environment(), capture_output=True, text=True,
                            timeout=120, check=False)
    assert re.search(r"^2024-11\s+sent\s+.*sample: 5 sent, 0 failed, 0 skipped$", listed.stdout, re.M), listed.stdout


def test_a_second_scheduler_on_sqlite_is_refused_while_the_first_runs(project):
    """SQLite has no advisory lock: the first `mailer schedule run` takes the scheduler's lease, a
    second is refused with one line naming it; once the first stops, the lease is free again."""
    log = project / "first.log"
    with log.open("w") as err:
        first = subprocess.Popen(mailer("schedule", "run"), cwd=project, stdout=subprocess.DEVNULL, stderr=err,
                                 env=environment())
        try:
            assert wait_for(lambda: "scheduler started" in log.read_text(), 90), log.read_text()
            second = subprocess.run(mailer("schedule", "run"), cwd=project, capture_output=True, text=True,
                                    env=environment(), timeout=120, check=False)
            first.send_signal(signal.SIGTERM)
            code = first.wait(60)
        finally:
            if first.poll() is None:
                first.kill()
    assert second.returncode == 1
    assert re.fullmatch(rf"error: another scheduler \(\S+:{first.pid}\) runs on this SQLite database: SQLite has no "
                        r"advisory lock, so one `mailer schedule run` at a time there \(use PostgreSQL to run "
                        r"several\)\n", second.stderr), second.stderr
    assert code == 0, log.read_text()
    third = subprocess.Popen(mailer("schedule", "run"), cwd=project, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=environment())
    try:
        time.sleep(3)
        assert third.poll() is None                 # the lease was given back: this one runs
        third.send_signal(signal.SIGTERM)
        _, third_err = third.communicate(timeout=60)
    finally:
        if third.poll() is None:
            third.kill()
    assert "scheduler started" in third_err and third.returncode == 0
