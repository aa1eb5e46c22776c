"""Stage 6: outgoing batch -> results, through one of three backends (see base.Backend)."""

from mailer.deliver.base import Backend, Result, ResultStatus, create_backend

__all__ = ["Backend", "Result", "ResultStatus", "create_backend"]
