"""`mailer serve [--host H] [--port P]`: run the web service (uvicorn, one process)."""

from __future__ import annotations

import sys

import typer

from mailer.commands.common import app_context

# The stages are imported inside each command, not here: start-up (mailer/commands/__init__.py).

SWITCH_INTERVAL = 0.001      # seconds a thread may hold the GIL while another waits for it


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: str | None = typer.Option(None, "--host", help="Address to listen on (default: web.host in the config)."),
        port: int | None = typer.Option(None, "--port", help="Port to listen on (default: web.port in the config; "
                                        "0: any free port, printed at start)."),
    ) -> None:
        """Serve subscribe/confirm/unsubscribe pages, the SendGrid webhook, the archive and /admin."""
        import uvicorn

        from mailer.web import create_app

        settings = app_context(ctx).settings
        host, port = host or settings.web.host, settings.web.port if port is None else port
        web = create_app(settings)          # ConfigError (e.g. no MAILER_SECRET_KEY) stops us here
        _check_free(host, port)
        # One process on purpose: the per-IP rate limiter and the archive cache live in memory.
        # proxy_headers: behind a local reverse proxy (127.0.0.1 trusted by default, or
        # FORWARDED_ALLOW_IPS), the client address comes from X-Forwarded-For.
        # No access log: confirm and unsubscribe URLs carry tokens, which a log must not collect.
        # The event loop takes the GIL back from a busy thread (the click recorder's batch, a sync
        # route's work) within 1 ms, not Python's default 5 ms: a request that arrives meanwhile
        # waits that long (BENCHMARKS.md, "Tracking"; docs/tracking.md).
        sys.setswitchinterval(SWITCH_INTERVAL)
        uvicorn.run(web, host=host, port=port, proxy_headers=True, server_header=False, access_log=False,
                    log_level="info")


def _check_free(host: str, port: int) -> None:
    """A taken port is one line naming it, as `mailer issue preview` says it, not uvicorn's start-up
    and shutdown lines around its own error: bind as uvicorn will (SO_REUSEADDR), then let go."""
    import socket

    from mailer.errors import MailerError

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MailerError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (another program listens "
                              f"there? try --port {port + 1})") from exc
