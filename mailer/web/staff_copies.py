"""Web service: the unsubscribe and preferences links of copies that went to staff -> a page that
says what the link does in a reader's copy.

A proof (`mailer issue proof`, the admin's, the scheduler's before a slot) and a scheduler's notice
go to editors, who have no membership and so no signed token: their links carry one of
mailer.model.STAFF_TOKENS instead (`/unsubscribe/proof`, `/preferences/copy`). An editor who
clicks one, or whose mail app posts the List-Unsubscribe header (RFC 8058), gets this page (200),
not "this link does not work": it explains what a reader gets there, and changes nothing.
"""

from __future__ import annotations

from starlette.responses import HTMLResponse

from mailer.model import STAFF_TOKENS


def page(web, kind: str, token: str) -> HTMLResponse | None:
    """The page for `kind` ("unsubscribe" or "preferences") when `token` is a staff copy's, else None."""
    if token not in STAFF_TOKENS:
        return None
    return web.pages.render("staff_copy.html.j2", private=True, kind=kind)
