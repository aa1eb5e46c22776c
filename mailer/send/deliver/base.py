"""Stage 6: outgoing batch -> [Result]; the one base class every delivery backend fills in.

Shaped after django-anymail's base backend, but batch-shaped because SendGrid takes 1,000
recipients per request (docs/mail-facts.md):

    with create_backend("sendgrid", settings) as backend:      # open() ... close()
        results = backend.send_batch(batch)                    # len(batch) <= backend.max_batch

`send_batch` returns one Result per message, in order. A per-message failure is a Result
(REJECTED: do not retry; RETRY_LATER: the same message may go later; IN_DOUBT: the server may
have taken it, so only the operator's [delivery] on_interrupted may send it again). A failure of the whole
backend (bad credentials, server gone after bounded retries) raises PermanentDelivery or
TemporaryDelivery (the batch provably did not go), or AmbiguousDelivery (the batch may have gone:
a timeout or a dropped connection after the request left), translated from the library's errors
at one place per backend, `from exc`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Self, TypeVar

if TYPE_CHECKING:
    from mailer.compose.personalize import Outgoing
    from mailer.config import Settings


class ResultStatus(enum.StrEnum):
    ACCEPTED = "accepted"          # the provider or server took it (not yet delivered)
    REJECTED = "rejected"          # refused for good: bad address, SMTP 5xx, SendGrid 400 naming it
    RETRY_LATER = "retry_later"    # SMTP 4xx for this recipient: may succeed later
    IN_DOUBT = "in_doubt"          # may or may not have been taken (connection lost after DATA)


@dataclass(frozen=True)
class Result:
    ref: str                       # the Outgoing's opaque ref
    status: ResultStatus
    provider_id: str | None = None # SendGrid X-Message-Id, our Message-ID for SMTP and outbox
    detail: str | None = None      # the server's or provider's own words
    raw: object = None             # the raw response, always kept

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.ACCEPTED


Encoded = TypeVar("Encoded")   # what a backend's `encode` makes of a batch, for its `_send`


class Backend(ABC, Generic[Encoded]):
    """Open once, send batches of at most `max_batch` messages, close."""

    name: ClassVar[str]
    max_batch: int                 # a constant, or the backend's [delivery.*] batch_size

    def open(self) -> None:
        """Connect or build the client; the default has nothing to do."""

    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def send_batch(self, batch: Sequence[Outgoing], encoded: Encoded | None = None) -> list[Result]:
        """Deliver `batch`; `encoded` is what `encode(batch)` returned, if the caller ran it ahead."""
        if len(batch) > self.max_batch:
            raise ValueError(f"{self.name}: a batch holds at most {self.max_batch} messages, got {len(batch)}")
        if not batch:
            return []
        results = self._send(batch, self.encode(batch) if encoded is None else encoded)
        if len(results) != len(batch):  # a backend bug, never a provider's doing
            raise AssertionError(f"{self.name}: {len(results)} results for {len(batch)} messages")
        return results

    @abstractmethod
    def encode(self, batch: Sequence[Outgoing]) -> Encoded:
        """The CPU-only part (message bytes, DKIM signatures, a request body), kept apart from the
        network so dispatch can run it for the next batch while this one is on the wire."""

    @abstractmethod
    def _send(self, batch: Sequence[Outgoing], encoded: Encoded) -> list[Result]:
        """The only hook that touches the network or disk."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings, **options) -> Backend:
        """The backend as `[delivery]` configures it; `options` go to the constructor."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
