"""Debian's dovecot (dovecot-imapd) on loopback, for `mailer bounces fetch` tests: its own
generated config in a temporary folder, one passwd-file user, Maildir storage, run in the
foreground by the test and stopped by it. Nothing system-wide is touched.

Dovecot cannot bind port 0 (`port = 0` disables a listener), and tests never pick a fixed port,
so dovecot listens on a unix socket and `port` is a byte relay (tests/servers/relay.py) on 127.0.0.1:0 that
hands each TCP connection to that socket. Logins arrive as local connections, so plaintext LOGIN
is allowed without TLS, as on any loopback. With `tls_files` it offers STARTTLS with that
certificate; a unix listener cannot do implicit TLS, so with `implicit_tls` the relay does the
server's half of it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.servers.relay import Relay

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "bounces", "imap-secret"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
  unix_listener {root}/imap.sock {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""


def missing() -> str | None:
    """Why dovecot cannot run here, or None."""
    if not os.access(DOVECOT, os.X_OK):
        return f"Debian's dovecot is not installed ({DOVECOT}; apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "dovecot needs root to switch to its mail user"
    return None


class Dovecot:
    """A running dovecot in its own folder under the system temp dir (pytest's own temp folders
    are private to root, and dovecot's auth and mail processes run as other users)."""

    def __init__(self, tls_files: tuple[Path, Path] | None = None, *, implicit_tls: bool = False):
        """`tls_files`: (certificate, key) PEM files; then dovecot offers STARTTLS with them, or,
        with `implicit_tls`, the port speaks TLS from the first byte (as port 993 does)."""
        import tempfile

        self.tls_files, self.implicit_tls = tls_files, implicit_tls

        self.root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        self.root.chmod(0o755)
        self.proc: subprocess.Popen | None = None
        self.relay: Relay | None = None
        self.port = 0

    def __enter__(self) -> Dovecot:
        nobody = pwd.getpwnam("nobody")
        for sub in ("run", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", nobody.pw_uid, nobody.pw_gid)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        conf = self.root / "dovecot.conf"
        conf.write_text(CONFIG.format(root=self.root, uid=nobody.pw_uid, gid=nobody.pw_gid, ssl=self._ssl()))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        sock = self.root / "imap.sock"
        deadline = time.monotonic() + 20
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not start: {self.proc.stderr.read().decode()} "
                                   f"{self.log()}")
            time.sleep(0.05)
        self.relay = Relay(connect=self._connect, wrap=self._tls_wrap()).__enter__()
        self.relay.up.wait(10)             # it listens from its own thread: not before that
        self.port = self.relay.port
        return self

    def __exit__(self, *exc) -> None:
        if self.relay is not None:
            self.relay.__exit__(None, None, None)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def _tls_wrap(self):
        if not (self.implicit_tls and self.tls_files):
            return None
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.tls_files)
        return lambda client: context.wrap_socket(client, server_side=True)

    def _ssl(self) -> str:
        if self.tls_files is None or self.implicit_tls:
            return "ssl = no"
        cert, key = self.root / "cert.pem", self.root / "key.pem"
        shutil.copyfile(self.tls_files[0], cert)
        shutil.copyfile(self.tls_files[1], key)
        return f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _connect(self) -> socket.socket:
        server = socket.socket(socket.AF_UNIX)
        server.connect(str(self.root / "imap.sock"))
        return server

    def client(self):
        import imaplib

        if self._tls_wrap() is not None:
            import ssl

            trusting = ssl.create_default_context(cafile=str(self.tls_files[0]))
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=trusting, timeout=20)
        else:
            conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=20)
        conn.login(USER, PASSWORD)
        return conn

    def append(self, folder: str, messages: list[bytes]) -> None:
        conn = self.client()
        try:
            conn.create(f'"{folder}"')
            for data in messages:
                status, detail = conn.append(f'"{folder}"', None, None, data)
                assert status == "OK", detail
        finally:
            conn.logout()

    def count(self, folder: str) -> int:
        conn = self.client()
        try:
            status, data = conn.select(f'"{folder}"', readonly=True)
            return int(data[0]) if status == "OK" else -1
        finally:
            conn.logout()

