"""Every `mailer ...` command shown in the README and docs/ names a command and options that exist,
so a renamed command or option fails here rather than in a reader's terminal.

The commands are the lines of the ```sh blocks of README.md and docs/*.md (up to their `#`
comment) and the inline code that starts with `mailer `; `.venv/bin/mailer` counts as `mailer`,
`[--option]` as `--option`, and `...` ends a command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from mailer.cli import app

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
_MAILER = re.compile(r"(?:^|[|&;]\s*|\$\(\s*)(?:\S*/)?mailer\s+(.*)$")
_INLINE = re.compile(r"(?<!`)`(?:\.venv/bin/)?mailer ([^`]+)`")


def _words(text: str) -> list[str]:
    words = [w.strip("[]") for w in shlex.split(text)]
    return words[: words.index("...")] if "..." in words else words


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, the words after `mailer`) for each `mailer` command in the docs' shell blocks."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in _BLOCK.finditer(text):
            start = text[: block.start()].count("\n") + 2
            joined = block[1].replace("\\\n", " ")
            for offset, line in enumerate(joined.splitlines()):
                code = line.split(" #", 1)[0].strip()
                for part in re.split(r"&&|\|", code):
                    match = _MAILER.search(part.strip())
                    if match and not part.strip().startswith("#"):
                        found.append((f"{path.relative_to(REPO)}:{start + offset}", _words(match[1])))
        outside = _BLOCK.sub(lambda m: "\n" * m[0].count("\n"), text)
        for match in _INLINE.finditer(outside):
            found.append((f"{path.relative_to(REPO)}:{outside[: match.start()].count(chr(10)) + 1}", _words(match[1])))
    return found


LINES = command_lines()


def test_the_docs_show_commands_of_every_role():
    shown = {" ".join(words[:2]) for _, words in LINES}
    for command in ("send issues/2024-11.md", "issue build", "subscribers import", "schedule run", "serve",
                    "worker --forever", "bounces fetch", "admin add-user"):
        assert any(s.startswith(command) for s in shown), command


@pytest.mark.parametrize(("where", "words"), LINES, ids=[where for where, _ in LINES])
def test_each_command_shown_exists_with_its_options(where, words):
    shown = f"{where}: `mailer {' '.join(words)}`"
    words = words[2:] if words[:1] == ["--config"] else words   # the one option before a command
    command = typer.main.get_command(app)
    for word in words:
        commands = getattr(command, "commands", None)
        if commands is None or word.startswith("-"):
            break
        assert word in commands, f"{shown}: no command {word!r} (there are {sorted(commands)})"
        command = commands[word]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    for word in words:
        name = word.split("=", 1)[0]
        if name.startswith("--"):
            assert name in options, f"{shown}: {command.name} has no option {name}"
