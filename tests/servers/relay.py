"""A relay that is down for a while, then comes back: a TCP forwarder to a real server (the sink).

It binds its port at once (port 0: the OS picks) but listens only after `down` seconds, so until
then a client's connection is refused, as when Postfix restarts; after, every connection is piped
to `target_port` on 127.0.0.1. `relay.up.wait()` waits for the moment it came back.

    with Relay(sink.port, down=2.0) as relay:   # relay.port refuses for 2 s, then forwards

`connect` replaces the target port with any way of reaching the server (tests/servers/dovecot.py
relays to a unix socket); `wrap` is applied to each accepted connection first (dovecot.py: implicit
TLS in front of it).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class Relay:
    def __init__(self, target_port: int | None = None, *, down: float = 0.0,
                 connect: Callable[[], socket.socket] | None = None,
                 wrap: Callable[[socket.socket], socket.socket] | None = None):
        self.down = down
        self.wrap = wrap          # e.g. a server-side TLS handshake (implicit TLS in front of the server)
        self.connect = connect or (lambda: socket.create_connection(("127.0.0.1", target_port)))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = threading.Event()
        self.accepted = 0
        self._closing = threading.Event()

    def _serve(self) -> None:
        if self._closing.wait(self.down):
            return
        self.sock.listen(16)
        self.up.set()
        while not self._closing.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.wrap is not None:
                try:
                    client = self.wrap(client)
                except OSError:               # a client that refused our certificate
                    client.close()
                    continue
            server = self.connect()
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def __enter__(self) -> Relay:
        threading.Thread(target=self._serve, name="relay", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
