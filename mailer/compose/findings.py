"""What the lint report is made of: a check's `Problem` (what is wrong, and text to find it by in
the issue file or a template) and the report's `Finding` (the same, with the file and line)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailer.errors import where


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    rule: str
    message: str
    needles: tuple[str, ...] = ()      # text to look for, in order: the issue file, then the templates
    templates_only: bool = False       # the needles name CSS or markup of the templates


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str                  # "size", "alt", "unresolved", "empty", "link", "contrast", ...
    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.severity.value}: {where(self.path, self.line)}{self.message}"
