"""Returned mail over IMAP ([bounces.imap]): read every message of `folder`, and after each chunk
is committed, move those messages to `processed_folder` and any that could not be read to
`failed_folder` (both created when missing), so the next
`mailer bounces fetch` starts where this one stopped and a crash re-reads at most one chunk (which
counts nothing twice: events are deduplicated per message and recipient).

imaplib, with implicit TLS (`tls = true`, port 993) or STARTTLS whenever the server offers it (the
certificate checked against the system's CAs or `ca_file`'s); with `tls = false` and no STARTTLS,
no login unless `allow_plaintext_login` (the password would cross the network in clear);
MOVE (RFC 6851) when the server has it, else COPY + \\Deleted + EXPUNGE.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator, Sequence

from mailer.config import ImapSettings, secret
from mailer.errors import BounceSourceError
from mailer.events.mailsource import Mail

FETCH_BATCH = 100
TIMEOUT = 60.0
_UID = re.compile(rb"UID (\d+)")


class ImapBounces:
    def __init__(self, settings: ImapSettings, *, password: str | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        if not settings.host:
            raise BounceSourceError("no IMAP server: set [bounces.imap] host (and username, password_env)")
        self.settings = settings
        self.password = password if password is not None else \
            secret(settings.password_env, key="[bounces.imap] password_env")
        self.ssl_context = ssl_context or _context(settings.ca_file)
        self.conn: imaplib.IMAP4 | None = None
        self.where = f"{settings.host}:{settings.port}"

    def __enter__(self) -> ImapBounces:
        s = self.settings
        try:
            if s.tls:
                self.conn = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=self.ssl_context, timeout=TIMEOUT)
            else:
                self.conn = imaplib.IMAP4(s.host, s.port, timeout=TIMEOUT)
                if "STARTTLS" in self.conn.capabilities:
                    self.conn.starttls(ssl_context=self.ssl_context)
                elif not s.allow_plaintext_login:
                    raise BounceSourceError(
                        f"IMAP server {self.where} offers no STARTTLS and tls = false: refusing to send the "
                        "password in clear (use tls = true, or set [bounces.imap] allow_plaintext_login = true "
                        "for a server on this machine)")
            self.conn.login(s.username, self.password)
        except BounceSourceError:
            self._close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self._close()
            raise BounceSourceError(
                f"IMAP server {self.where}: its TLS certificate is not trusted ({exc.verify_message or exc}); "
                "if it is signed by your own CA, set [bounces.imap] ca_file to that CA's PEM file") from exc
        except imaplib.IMAP4.abort as exc:        # the connection broke before or during login
            self._close()
            raise BounceSourceError(f"cannot reach IMAP server {self.where}: {_said(exc)}") from exc
        except imaplib.IMAP4.error as exc:
            self._close()
            raise BounceSourceError(f"IMAP {self.where} refused the login of {s.username!r}: {_said(exc)}") from exc
        except (OSError, ssl.SSLError) as exc:
            self._close()
            raise BounceSourceError(f"cannot reach IMAP server {self.where}: {exc}") from exc
        self._select()
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    @property
    def _open(self) -> imaplib.IMAP4:
        if self.conn is None:
            raise RuntimeError("ImapBounces is used inside `with` only")
        return self.conn

    def _select(self) -> None:
        status, data = self._open.select(_quote(self.settings.folder))
        if status != "OK":
            raise BounceSourceError(f"IMAP {self.where}: cannot open folder {self.settings.folder!r}: "
                                    f"{_said(data)}")
        for folder in (self.settings.processed_folder, self.settings.failed_folder):
            self._open.create(_quote(folder))    # "already exists" is fine

    def messages(self) -> Iterator[Mail]:
        """Every message now in the folder, oldest first (the UIDs are fixed when this starts)."""
        status, data = self._open.uid("SEARCH", "UNDELETED")   # (no CHARSET)
        if status != "OK":
            raise BounceSourceError(f"IMAP {self.where}: SEARCH failed: {_said(data)}")
        uids = (data[0] or b"").split()
        for i in range(0, len(uids), FETCH_BATCH):
            batch = b",".join(uids[i:i + FETCH_BATCH]).decode()
            status, parts = self._open.uid("FETCH", batch, "(UID BODY.PEEK[])")
            if status != "OK":
                raise BounceSourceError(f"IMAP {self.where}: FETCH failed: {_said(parts)}")
            for part in parts:
                if isinstance(part, tuple):
                    uid = _UID.search(part[0])
                    yield Mail(f"imap:{self.settings.folder}:{uid.group(1).decode() if uid else '?'}", part[1])

    def processed(self, mails: Sequence[Mail]) -> None:
        """Move these (committed) messages to processed_folder."""
        self._move(mails, self.settings.processed_folder, "processed mail")

    def failed(self, mails: Sequence[Mail]) -> None:
        """Set aside messages that could not be read in failed_folder, so the next fetch does not
        trip over them again (the scan reported them)."""
        self._move(mails, self.settings.failed_folder, "mail that could not be read")

    def _move(self, mails: Sequence[Mail], folder: str, what: str) -> None:
        uids = ",".join(m.label.rsplit(":", 1)[1] for m in mails if m.label.rsplit(":", 1)[1].isdigit())
        if not uids:
            return
        target = _quote(folder)
        if "MOVE" in self._open.capabilities:
            status, data = self._open.uid("MOVE", uids, target)
        else:
            status, data = self._open.uid("COPY", uids, target)
            if status == "OK":
                self._open.uid("STORE", uids, "+FLAGS.SILENT", r"(\Deleted)")
                self._open.expunge()
        if status != "OK":
            raise BounceSourceError(f"IMAP {self.where}: cannot move {what} to {folder!r}: {_said(data)}")

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if conn.state == "SELECTED":
                conn.close()
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _context(ca_file: str) -> ssl.SSLContext:
    """Certificates checked against the system's CAs, or only `[bounces.imap] ca_file`'s."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise BounceSourceError(f"[bounces.imap] ca_file {ca_file}: not a readable PEM file of CAs: {exc}") from exc


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _said(value) -> str:
    if isinstance(value, imaplib.IMAP4.error):
        value = value.args[0] if value.args else ""
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip() or "no reason given"
