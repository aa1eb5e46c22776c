"""Write one benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""

from __future__ import annotations

import os
import platform
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nFigures written by `bench/run`; each section names the command that reproduces it.\n"


def machine() -> str:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python}, {os.cpu_count()} cores, {platform.machine()}"


def write_section(name: str, body: str, command: str) -> None:
    """Replace the section between this benchmark's markers (or append it)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- {name}:start -->\n{body.strip()}\n\nReproduce: `{command}` "
               f"({stamp}; {machine()})\n<!-- {name}:end -->")
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    fd, tmp = tempfile.mkstemp(dir=ROOT, prefix=".bench-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, REPORT)
