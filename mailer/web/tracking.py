"""Web service: tracked links and open images -> GET/HEAD /c/{token} (a redirect), GET/HEAD /o/{token} (a 1x1 GIF).

/c/{token} redirects only to a link stored with the send the token names (mailer/send/tracking.py),
so it is no open redirect: a token that is not ours, was changed, or names a link the send does
not have answers 404 and redirects nowhere. The request is answered at once; what it counts is
decided and written later, in batches, by mailer.events.clicks.Recorder (people or machines), and
only while `[tracking]` still asks for it. docs/tracking.md.

These are the service's busiest paths (every reader's every click, while a send runs), so
`FastPath`, a pure ASGI middleware, answers them before FastAPI's routing, exception and
dependency layers, which cost several times what the answer itself does (BENCHMARKS.md,
"Tracking"); what it declines (a token that is not ours, a link the send lacks) goes on to the
routes below, which answer the 404 page in the reader's language. Both call the same `Tracking`
methods, so the two ways cannot answer differently.
"""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from mailer.compose.tracking import Signer, Token
from mailer.config import ClickTracking
from mailer.events.clicks import Hit, Recorder, Rules
from mailer.send import tracking
from mailer.send.tracking import Kind
from mailer.web.readers import clean_agent

router = APIRouter()
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")   # 1x1, transparent
NOT_CACHED = {"cache-control": "no-store, private", "x-robots-tag": "noindex, nofollow"}
RELOAD_SECONDS = 5.0      # a link index the cache lacks is looked up again after this long (a resumed send)
PURGE_EVERY = 3600.0      # seconds between deletions of hits older than [tracking] keep_days


class Tracking:
    """What the two routes share: the signer, each send's links (cached), the recorder."""

    def __init__(self, web) -> None:
        self.web = web
        self.settings = web.settings.tracking
        self.signer = Signer.from_secret(web.secret)
        self.links: dict[int, tuple[float, dict[int, str]]] = {}   # send -> (loaded at, index -> URL)
        self.loading: dict[int, asyncio.Task] = {}                 # send -> the one read of its links under way
        self.recorder = Recorder(Rules(self.settings.sweep_seconds, self.settings.after_accept_seconds),
                                 self._write)
        self.purged_at = 0.0
        self.clock = time.time     # the requests' times (tests move it; the recorder has its own)

    async def target(self, token: Token) -> str | None:
        """The URL a click token's link is, if the send has it."""
        assert token.link is not None
        loaded = self.links.get(token.send_id)
        if loaded is None or (token.link not in loaded[1] and time.monotonic() - loaded[0] > RELOAD_SECONDS):
            loaded = await self._load(token.send_id)
        return loaded[1].get(token.link)

    async def _load(self, send_id: int) -> tuple[float, dict[int, str]]:
        """Read the send's links, once however many requests wait for them: the first clicks of
        an issue come in a burst, and each its own read would queue them all behind the threads."""
        task = self.loading.get(send_id)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self.loading[send_id] = asyncio.ensure_future(self._read_links(send_id))
        return await asyncio.shield(task)     # a client that goes away does not cancel the others' read

    async def _read_links(self, send_id: int) -> tuple[float, dict[int, str]]:
        try:
            found = await run_in_threadpool(self.web.read, tracking.links_of, send_id)
            loaded = self.links[send_id] = (time.monotonic(), found)
            return loaded
        finally:
            if self.loading.get(send_id) is asyncio.current_task():
                del self.loading[send_id]

    async def redirect(self, token: str, request: Request) -> Response | None:
        """The redirect a click token names, the click handed to the recorder; None (nothing
        recorded) when the token is not ours or names no link of its send."""
        found = self.signer.read(token)
        if found is None or found.link is None:
            return None
        url = await self.target(found)
        if url is None:
            return None
        self.hit(Kind.CLICK, found, request)
        return RedirectResponse(url, status_code=302, headers=NOT_CACHED)

    def image(self, token: str, request: Request) -> Response | None:
        """The open image of a copy, the open handed to the recorder; None when the token is not
        an open token of ours."""
        found = self.signer.read(token)
        if found is None or found.link is not None:
            return None
        self.hit(Kind.OPEN, found, request)
        return Response(GIF, media_type="image/gif", headers=NOT_CACHED)

    def counted(self, kind: Kind) -> bool:
        return self.settings.opens if kind is Kind.OPEN else self.settings.clicks is not ClickTracking.OFF

    def hit(self, kind: Kind, token: Token, request: Request) -> None:
        if not self.counted(kind):
            return
        named = token.reader and self.settings.clicks is ClickTracking.READER
        agent = request.headers.get("user-agent")
        # The address as it came (no parse here, on the request's path): only an open's is looked
        # at, by the recorder (mailer/events/scanners.py image_proxy), and nothing stores it.
        self.recorder.add(Hit(kind, token.send_id, token.link, f"{'r' if token.reader else 'a'}{token.copy:x}",
                              token.copy if named else None, token.made_at, self.clock(),
                              request.method == "HEAD", clean_agent(agent) if agent else None,
                              request.client.host if request.client else None))

    def _write(self, decided) -> None:
        self.web.write(tracking.record, decided)
        if time.monotonic() - self.purged_at > PURGE_EVERY:
            self.purged_at = time.monotonic()
            self.web.write(tracking.purge, self.settings.keep_days)

    def close(self) -> None:
        self.recorder.stop()


@router.get("/c/{token}", summary="A tracked link: redirects to it (HEAD too)",
            responses={302: {"description": "the link"}, 404: {"description": "not a link of ours"}})
@router.head("/c/{token}", include_in_schema=False)
async def click(token: str, request: Request) -> Response:
    web = request.app.state.web
    return await web.tracking.redirect(token, request) or web.pages.error(
        404, "This link does not work", "This link is not one of ours, or it was changed on the way. Nothing was "
        "recorded.")


@router.get("/o/{token}", summary="The open image of a copy (HEAD too)",
            responses={200: {"description": "a 1x1 transparent GIF"}, 404: {"description": "not ours"}})
@router.head("/o/{token}", include_in_schema=False)
async def opened(token: str, request: Request) -> Response:
    return request.app.state.web.tracking.image(token, request) or Response(status_code=404, headers=NOT_CACHED)


class FastPath:
    """Pure ASGI middleware: GET and HEAD of /c/{token} and /o/{token} answered here when the
    token is good, before FastAPI's layers; anything else goes on to the app (the routes above)."""

    def __init__(self, app, *, tracking: Tracking) -> None:
        self.app, self.tracking = app, tracking

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            response = None
            if path.startswith("/c/"):
                response = await self.tracking.redirect(path[3:], Request(scope))
            elif path.startswith("/o/"):
                response = self.tracking.image(path[3:], Request(scope))
            if response is not None:
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
