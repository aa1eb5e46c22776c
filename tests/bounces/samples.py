"""Returned mail made to order, in the exact shape Postfix writes a DSN (see
tests/fixtures/bounces/own/postfix_unknown_user.eml): for the end-to-end test and the bench."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

STATUS = {"hard": ("failed", "5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
          "soft": ("failed", "4.2.2", "452 4.2.2 <{rcpt}>: Mailbox full"),
          "blocked": ("failed", "5.7.1", "550 5.7.1 Message rejected as spam by content filter"),
          "delayed": ("delayed", "4.4.1", "connect to mx.example.net[192.0.2.25]:25: Connection timed out")}


def dsn(recipient: str, return_path: str, kind: str = "hard", *, ref: str | None = None, n: int = 0,
        at: datetime | None = None, original: str | None = None, message_id: str | None = None,
        more: tuple[str, ...] = ()) -> bytes:
    """A Postfix DSN for `recipient`, delivered to the VERP `return_path`; `ref` goes into the
    returned headers' X-Mailer-Ref, `message_id` is their Message-ID; `original` is the
    Original-Recipient (else `recipient`); `more` adds a recipient group for each address."""
    action, status, diagnostic = STATUS[kind]
    diagnostic = diagnostic.format(rcpt=recipient)
    quoted = (f"Message-ID: {message_id}\n" if message_id else "") + (f"X-Mailer-Ref: {ref}\n" if ref else "")
    groups = "".join(f"\nFinal-Recipient: rfc822; {a}\nAction: {action}\nStatus: {status}\n" for a in more)
    date = format_datetime(at or datetime.now(UTC))
    queue = f"4Q{n:011X}"
    boundary = f"{queue}.1730815331/mx.news.example.org"
    return f"""Return-Path: <>
Delivered-To: {return_path}
Date: {date}
From: MAILER-DAEMON@mx.news.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {return_path}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: <{queue}.{n}@mx.news.example.org>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx.news.example.org.

<{recipient}>: host mx.example.net[192.0.2.25] said: {diagnostic}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.news.example.org
X-Postfix-Queue-ID: {queue}

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{original or recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}
{groups}
--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{return_path}>
From: CRANK Call <crankcall@example.org>
To: {recipient}
Subject: CRANK Call | November 2024
{quoted}
--{boundary}--
""".replace("\n", "\r\n").encode()


def complaint(ref: str, *, n: int = 1) -> bytes:
    """An ARF abuse report from a feedback loop about ann@example.org, quoting our X-Mailer-Ref."""
    return f"""From: feedback@arf.example.net
To: fbl@news.example.org
Subject: complaint
Message-ID: <fbl-{n}@arf.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b"

--b
Content-Type: text/plain

An abuse report.
--b
Content-Type: message/feedback-report

Feedback-Type: abuse
Version: 1
Original-Rcpt-To: <ann@example.org>

--b
Content-Type: text/rfc822-headers

From: CRANK Call <crankcall@example.org>
To: ann@example.org
X-Mailer-Ref: {ref}

--b--
""".encode()


def nested_multipart(depth: int = 1000) -> bytes:
    """A message of `depth` multipart/mixed parts, each inside the last: the stdlib parser recurses
    once per level and raises RecursionError."""
    head = "From: x@example.net\r\nTo: bounces@news.example.org\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    closing = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    return (head + opening + "Content-Type: text/plain\r\n\r\nhello\r\n" + closing).encode()


def write_maildir(folder: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(folder, create=True)
    for data in messages:
        box.add(data)
    return folder


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    with path.open("wb") as f:
        for data in messages:
            f.write(b"From MAILER-DAEMON Tue Nov  5 14:02:11 2024\n")
            body = data.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ")
            f.write(body if body.endswith(b"\n") else body + b"\n")
            f.write(b"\n")
    return path
