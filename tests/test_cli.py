"""`mailer --help` names every command group: each module in mailer/commands/ is wired in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mailer.commands

COMMANDS = Path(mailer.commands.__file__).parent
NOT_COMMANDS = {"__init__", "common"}   # helpers the commands share


def _help_commands() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "mailer", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}, check=True).stdout
    return set(re.findall(r"^\W*([a-z][a-z-]*)\s{2,}\S", out, re.M))


def test_help_lists_every_command_module():
    modules = {p.stem for p in COMMANDS.glob("*.py")} - NOT_COMMANDS
    assert modules == {"admin", "bounces", "db", "doctor", "init", "issue", "issues", "lists", "report", "schedule",
                       "send", "serve", "subscribers", "tags", "webhooks", "worker"}
    assert modules <= _help_commands()
