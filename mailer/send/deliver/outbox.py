"""Stage 6a: outgoing batch -> one .eml file per message under [delivery] outbox_dir.

Each file is a complete RFC 5322 message (CRLF line ends), the bytes an SMTP server would get.
The file name comes from the issue and the delivery's opaque ref, and each file is written to a
temporary name and renamed into place (atomic on POSIX), so a rerun overwrites rather than
duplicates and a crash never leaves half a message. That makes a resent batch harmless here,
which is why this backend takes batches of 100 rather than 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import PermanentDelivery
from mailer.send.deliver.base import Backend, Result, ResultStatus

if TYPE_CHECKING:
    from mailer.config import Settings


class OutboxBackend(Backend[list[bytes]]):
    name = "outbox"
    max_batch = 100

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> Backend:
        return cls(settings.delivery.outbox_dir, **options)

    def __init__(self, outbox_dir: Path):
        self.dir = Path(outbox_dir)

    def open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentDelivery(f"cannot create the outbox folder {self.dir}: {exc.strerror}",
                                    backend=self.name) from exc

    def path_for(self, out) -> Path:
        return self.dir / f"{out.edition.slug}.{out.ref}.eml"

    def encode(self, batch: Sequence) -> list[bytes]:
        return [out.as_bytes() for out in batch]

    def _send(self, batch: Sequence, encoded: list[bytes]) -> list[Result]:
        return [self._write(out, data) for out, data in zip(batch, encoded, strict=True)]

    def _write(self, out, data: bytes) -> Result:
        path = self.path_for(out)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # disk full, permissions: the whole backend is unusable
            tmp.unlink(missing_ok=True)
            raise PermanentDelivery(f"cannot write {path}: {exc.strerror}", backend=self.name) from exc
        return Result(out.ref, ResultStatus.ACCEPTED, provider_id=out.message_id, raw=str(path))
