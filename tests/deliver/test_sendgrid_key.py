"""The SendGrid API key never reaches a log, DEBUG included (issue 23): python-http-client logs
every request's headers, `Authorization: Bearer <key>` among them. A real request to the local
SendGrid server, accepted and refused (the refusal logs the response too)."""

from __future__ import annotations

import logging

import pytest

from mailer.send.deliver.base import ResultStatus
from tests.deliver.helpers import readers
from tests.deliver.test_sendgrid import make_backend, sleeps  # noqa: F401 - the fixtures


@pytest.mark.parametrize("key, accepted", [("SG.test", True), ("SG.forbidden", False)])
def test_the_api_key_reaches_no_log(make_backend, sendgrid_server, edition, caplog, key, accepted):  # noqa: F811
    caplog.set_level(logging.DEBUG)          # every logger, the library's included
    with make_backend(api_key=key) as backend:
        try:
            results = backend.send_batch(readers(edition, 2))
        except Exception as exc:  # noqa: BLE001 - the refused key: its message is checked below too
            results, error = [], str(exc)
        else:
            error = ""
    assert [r.status for r in results] == ([ResultStatus.ACCEPTED] * 2 if accepted else [])
    logged = "\n".join(r.getMessage() for r in caplog.records) + error
    assert "HEADERS: (withheld" in logged                                   # the library did log them ...
    assert key not in logged and "Bearer" not in logged                     # ... but not the key
