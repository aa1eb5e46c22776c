"""Web service, stage 7a's door: POST /webhooks/sendgrid -> verified events -> stored, policy applied.

The signature is checked on the raw bytes before anything parses them (SendGrid: re-serialised JSON
no longer verifies; docs/mail-facts.md). A bad signature or a stale timestamp gets 403 and changes
nothing; a well-signed body that is not a JSON array gets 400. Anything SendGrid sees as non-2xx it
retries for 24 hours, so a verified post is answered 2xx even when it holds nothing we know.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from mailer.errors import SignatureError
from mailer.events import sendgrid_webhook as sendgrid

log = logging.getLogger("mailer.web")
router = APIRouter()

WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    },
    "parameters": [
        {"name": sendgrid.SIGNATURE_HEADER, "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": sendgrid.TIMESTAMP_HEADER, "in": "header", "required": True, "schema": {"type": "string"}},
    ],
}


@router.post("/webhooks/sendgrid", openapi_extra=WEBHOOK_BODY, summary="SendGrid signed Event Webhook",
             responses={200: {"description": "stored"}, 400: {"description": "not a JSON array"},
                        403: {"description": "signature or timestamp refused"},
                        413: {"description": "body too large"}})
async def sendgrid_events(request: Request) -> JSONResponse:
    web = request.app.state.web
    raw = await request.body()
    config = web.settings.webhooks.sendgrid
    try:
        sendgrid.verify(raw, request.headers.get(sendgrid.SIGNATURE_HEADER),
                        request.headers.get(sendgrid.TIMESTAMP_HEADER),
                        public_key=config.public_key, max_age_seconds=config.max_age_seconds)
    except SignatureError as exc:
        log.warning("sendgrid webhook refused from %s: %s", _client(request), exc)
        return JSONResponse({"detail": f"refused: {exc}"}, status_code=403)
    try:
        events = await run_in_threadpool(sendgrid.parse, raw)
    except ValueError as exc:
        log.warning("sendgrid webhook: malformed body from %s: %s", _client(request), exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    stored = await run_in_threadpool(web.ingest, events)
    return JSONResponse({"received": len(events), **stored})


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
