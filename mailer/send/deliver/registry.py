"""The delivery backends, in one place: each name with the import path of its class.

`[delivery] backend`, `mailer send --backend` and `create_backend` all take one of these names.
The table names classes by path and imports one only when it is used, so the CLI can name the
backends without loading any of them, a send loads only its own provider's library (sendgrid's,
or DKIM's cryptography through smtp: start-up costs in BENCHMARKS.md), and no backend module is
imported by the base class it fills in.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TYPE_CHECKING

from mailer.errors import ConfigError

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.send.deliver.base import Backend



class BackendName(StrEnum):
    OUTBOX = "outbox"
    SMTP = "smtp"
    SENDGRID = "sendgrid"


PATHS = {
    BackendName.OUTBOX.value: "mailer.send.deliver.outbox:OutboxBackend",
    BackendName.SMTP.value: "mailer.send.deliver.smtp:SmtpBackend",
    BackendName.SENDGRID.value: "mailer.send.deliver.sendgrid:SendGridBackend",
}
BACKENDS = tuple(PATHS)


def backend_class(name: str) -> type[Backend]:
    """The class registered as `name`, imported now."""
    try:
        module, _, attribute = PATHS[name].partition(":")
    except KeyError:
        raise ConfigError(f"[delivery] backend must be one of {', '.join(BACKENDS)}, not {name!r}") from None
    return getattr(importlib.import_module(module), attribute)


def create_backend(name: str, settings: Settings, **options) -> Backend:
    """The backend called `name`, built from its settings; `options` go to its constructor."""
    return backend_class(name).from_settings(settings, **options)
