"""Web service: tracked links and open images -> GET/HEAD /c/{token} (a redirect), GET/HEAD /o/{token} (a 1x1 GIF).

/c/{token} redirects only to a link stored with the send the token names (mailer/send/tracking.py),
so it is no open redirect: a token that is not ours, was changed, or names a link the send does
not have answers 404 and redirects nowhere. The request is answered at once; what it counts is
decided and written later, in batches, by mailer.events.clicks.Recorder (people or machines), and
only while `[tracking]` still asks for it. docs/tracking.md.
"""

from __future__ import annotations

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
from mailer.web.readers import client

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
        self.recorder = Recorder(Rules(self.settings.sweep_seconds, self.settings.after_accept_seconds),
                                 self._write)
        self.purged_at = 0.0
        self.clock = time.time     # the requests' times (tests move it; the recorder has its own)

    async def target(self, token: Token) -> str | None:
        """The URL a click token's link is, if the send has it."""
        assert token.link is not None
        loaded = self.links.get(token.send_id)
        if loaded is None or (token.link not in loaded[1] and time.monotonic() - loaded[0] > RELOAD_SECONDS):
            found = await run_in_threadpool(self.web.read, tracking.links_of, token.send_id)
            loaded = self.links[token.send_id] = (time.monotonic(), found)
        return loaded[1].get(token.link)

    def counted(self, kind: Kind) -> bool:
        return self.settings.opens if kind is Kind.OPEN else self.settings.clicks is not ClickTracking.OFF

    def hit(self, kind: Kind, token: Token, request: Request) -> None:
        if not self.counted(kind):
            return
        who = client(request)
        named = token.reader and self.settings.clicks is ClickTracking.READER
        self.recorder.add(Hit(kind, token.send_id, token.link, f"{'r' if token.reader else 'a'}{token.copy:x}",
                              token.copy if named else None, token.made_at, self.clock(),
                              request.method == "HEAD", who.user_agent, who.ip))

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
    found = web.tracking.signer.read(token)
    url = None if found is None or found.link is None else await web.tracking.target(found)
    if url is None:
        return web.pages.error(404, "This link does not work", "This link is not one of ours, or it was changed "
                               "on the way. Nothing was recorded.")
    web.tracking.hit(Kind.CLICK, found, request)
    return RedirectResponse(url, status_code=302, headers=NOT_CACHED)


@router.get("/o/{token}", summary="The open image of a copy (HEAD too)",
            responses={200: {"description": "a 1x1 transparent GIF"}, 404: {"description": "not ours"}})
@router.head("/o/{token}", include_in_schema=False)
async def opened(token: str, request: Request) -> Response:
    web = request.app.state.web
    found = web.tracking.signer.read(token)
    if found is None or found.link is not None:
        return Response(status_code=404, headers=NOT_CACHED)
    web.tracking.hit(Kind.OPEN, found, request)
    return Response(GIF, media_type="image/gif", headers=NOT_CACHED)
