"""Read the confirmation mails the app wrote to the outbox, as a reader would."""

from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

CONFIRM_URL = re.compile(r"https?://\S+/confirm/[A-Za-z0-9_.\-]+")


@dataclass
class Mail:
    path: Path
    message: EmailMessage

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()

    @property
    def confirm_url(self) -> str:
        return CONFIRM_URL.search(self.text).group(0)

    @property
    def unsubscribe_url(self) -> str:
        return self.message["List-Unsubscribe"].strip("<>")


def mails(outbox: Path) -> list[Mail]:
    found = sorted(outbox.glob("confirm.*.eml"), key=lambda p: p.stat().st_mtime) if outbox.is_dir() else []
    return [Mail(p, email.message_from_bytes(p.read_bytes(), policy=email.policy.default)) for p in found]


def wait_for_mails(outbox: Path, count: int, timeout: float = 10.0) -> list[Mail]:
    """The mails once `count` exist (sent by a background task after the response)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mails(outbox)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} confirmation mails in {outbox}, found {len(mails(outbox))}")
