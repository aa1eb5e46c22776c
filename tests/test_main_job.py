"""The README's first command (the main job) works as written, in a fresh folder.

The install steps (pip, compileall) are left out (the tests already run installed); every `mailer`
step after them runs exactly as the README says, so a renamed option or a broken stage fails here
first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path


def main_job_command(readme: str) -> str:
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    first = block.split("# 2.", 1)[0]
    lines = [ln for ln in first.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    command = " ".join(ln.rstrip(" \\") for ln in lines)
    return command.split("compileall -q mailer subscribers ", 1)[1].lstrip("& ")


def test_readme_main_job_sends_the_november_issue_to_the_sample_list(repo, tmp_path):
    for name in ("config.toml", "issues", "templates"):
        src = repo / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    command = main_job_command((repo / "README.md").read_text(encoding="utf-8"))
    bin_dir = Path(sys.executable).parent
    command = command.replace(".venv/bin/", f"{bin_dir}/")
    env = {k: v for k, v in os.environ.items() if k not in ("MAILER_SECRET_KEY", "MAILER_CONFIG")}
    for _ in range(2):  # the second run must say "already sent" and send nothing more
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    # each process closed its database: SQLite folded its write-ahead log back (mailer/__main__.py)
    assert sorted(p.name for p in tmp_path.glob("mailer.db*")) == ["mailer.db"]
    emails = sorted((tmp_path / "outbox").rglob("*.eml"))
    readers = (tmp_path / "issues" / "sample-list.csv").read_text(encoding="utf-8").count("@")
    assert len(emails) == readers == 5
    for path in emails:
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert msg["Subject"] == "CRANK Call | November 2024"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(r"<http://127\.0\.0\.1:8000/unsubscribe/\S+>", msg["List-Unsubscribe"])
        html = msg.get_body(("html",)).get_content()
        assert "North Korea and Russia finalize defense pact" in html
    assert "already" in done.stdout + done.stderr
    # the first run kept its secret key next to config.toml, private; the second run used it
    key_file = tmp_path / ".mailer-secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
