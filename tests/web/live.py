"""Run the real app with uvicorn on a free loopback port, in a thread (tests) or a process (bench)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(app, *, sock: socket.socket | None = None, timeout: float = 15.0,
                    tls_files: tuple | None = None) -> Iterator[str]:
    """Yield the base URL of `app` served by a real uvicorn on 127.0.0.1:<free port> (or `sock`);
    over https with `tls_files` (certificate file, key file)."""
    import uvicorn

    sock = sock or free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                          server_header=False,
                                          ssl_certfile=tls_files and str(tls_files[0]),
                                          ssl_keyfile=tls_files and str(tls_files[1])))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls_files else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
