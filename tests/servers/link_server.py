"""A web server on a free loopback port whose pages answer the ways real links fail, for
`mailer issue build --check-links` (tests/test_linkcheck.py): nothing reaches the internet.

    /ok            200
    /missing       404
    /broken        500
    /head-refused  405 to HEAD, 200 to GET (servers that mishandle HEAD)
    /moved         301 to /ok on the same host
    /away          302 to /ok on another host name (localhost instead of 127.0.0.1)
    /slow          answers only when the test ends (longer than any timeout a test sets)

Each request is recorded as (method, path), so a test can say each address was asked once.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LinkServer:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LinkServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _handler(server: LinkServer):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.answer("HEAD")

        def do_GET(self):
            self.answer("GET")

        def answer(self, method: str) -> None:
            server.requests.append((method, self.path))
            if self.path == "/slow":
                server.release.wait(timeout=30)
            status, location = {
                "/ok": (200, None), "/missing": (404, None), "/broken": (500, None),
                "/head-refused": (405 if method == "HEAD" else 200, None),
                "/moved": (301, f"{server.url}/ok"),
                "/away": (302, f"http://localhost:{server.port}/ok"),
            }.get(self.path, (200, None))
            body = b"" if method == "HEAD" else b"<p>a page</p>"
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except BrokenPipeError:      # the client gave up waiting (/slow)
                pass

        def log_message(self, *_args):
            pass

    return Handler
