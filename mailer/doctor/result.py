"""One check's outcome: what was looked at, pass / warn / fail, what was found and what to do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"                  # works, but a provider will mind, or nobody could tell
    FAIL = "fail"                  # mail will be refused, junked or lost: `mailer doctor` exits 1


@dataclass(frozen=True)
class Check:
    name: str                      # "SPF", "DKIM", "DMARC", ... (the word a failure is known by)
    status: Status
    found: str                     # what the check saw
    fix: str = ""                  # what to do about it (empty when nothing)

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status.value, "found": self.found, "fix": self.fix}


def passed(name: str, found: str) -> Check:
    return Check(name, Status.PASS, found)


def warned(name: str, found: str, fix: str) -> Check:
    return Check(name, Status.WARN, found, fix)


def failed(name: str, found: str, fix: str) -> Check:
    return Check(name, Status.FAIL, found, fix)
