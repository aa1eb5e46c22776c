"""Web service: the HTTP side of the pipeline (subscribe, confirm, unsubscribe, webhooks, archive).

    from mailer.web.app import create_app      # Settings -> FastAPI
"""

from __future__ import annotations


def create_app(settings):
    """Settings -> the FastAPI app (imported here, not at the top: importing
    any mailer.web module runs this package first, and `mailer lists embed` needs mailer.web.embed
    without FastAPI)."""
    from mailer.web.app import create_app as build

    return build(settings)
