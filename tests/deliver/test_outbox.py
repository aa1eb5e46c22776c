"""Stage 6a: the outbox writes one complete .eml per message, atomically, and reruns overwrite."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailer.errors import PermanentDelivery
from mailer.send.deliver.base import ResultStatus
from mailer.send.deliver.registry import create_backend
from tests.deliver.helpers import readers


def test_one_eml_per_message_and_a_rerun_overwrites(settings, edition):
    batch = readers(edition, 5)
    with create_backend("outbox", settings) as backend:
        first = backend.send_batch(batch)
        again = backend.send_batch(batch)
    files = sorted(settings.delivery.outbox_dir.iterdir())
    assert [f.name for f in files] == [f"2024-11.1.{i}.eml" for i in range(5)]
    assert [r.status for r in first + again] == [ResultStatus.ACCEPTED] * 10
    assert [r.provider_id for r in first] == [o.message_id for o in batch]
    msg = email.message_from_bytes(files[3].read_bytes(), policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "r3@example.org"
    assert msg["X-Mailer-Ref"] == "1.3"


@pytest.mark.parametrize("size, ok", [(100, True), (101, False)])
def test_batch_size_is_enforced(settings, edition, size, ok):
    with create_backend("outbox", settings) as backend:
        if ok:
            assert len(backend.send_batch(readers(edition, size))) == size
        else:
            with pytest.raises(ValueError, match="at most 100"):
                backend.send_batch(readers(edition, size))


def test_unwritable_outbox_stops_with_a_clear_error(settings, edition, tmp_path):
    import dataclasses

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = dataclasses.replace(settings, delivery=dataclasses.replace(settings.delivery, outbox_dir=blocker / "outbox"))
    with pytest.raises(PermanentDelivery, match="outbox folder"), create_backend("outbox", bad) as backend:
        backend.send_batch(readers(edition, 1))
