"""Web service: the HTTP side of the pipeline (subscribe, confirm, unsubscribe, webhooks, archive).

    from mailer.web.app import create_app      # Settings -> FastAPI
"""

from __future__ import annotations


def create_app(settings):
    """Settings -> the FastAPI app (imported lazily: the CLI must start fast)."""
    from mailer.web.app import create_app as build

    return build(settings)
