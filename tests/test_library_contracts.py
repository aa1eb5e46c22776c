"""Contract tests: what the code relies on in libraries beyond their public API, each behind one
adapter. If a library changes the private thing, its test fails here, naming the installed
version, instead of a send or a scan going wrong somewhere later. One test per private use:

- flufl.bounce: `flufl.bounce._scan._DETECTORS`, the detector list
  (adapter: mailer.events.bounce_mail.flufl_failures);
- typer: `typer._click.exceptions.ClickException`, as typer >= 0.20 vendors click (mailer.cli);
- premailer and cssutils: premailer imports `requests` only for a session; cssutils takes its
  default fetcher from `cssutils._fetch._defaultFetcher` while it imports
  (mailer.compose.inline._premailer);
- python-http-client: with a content type of ours it calls `request_body.encode("utf-8")`, and
  formats the bytes into its `PAYLOAD:` debug line with `format`
  (mailer.send.deliver.sendgrid._Json, _Bytes).

(The Maildir reader uses the Maildir format itself, not `mailbox.Maildir._lookup`, and has a test
of its own below.)
"""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from email import message_from_bytes
from importlib.metadata import version
from pathlib import Path

import pytest

from mailer.events.mailsource import read_path

REPO = Path(__file__).resolve().parent.parent
FLUFL_SAMPLES = sorted(p for p in (REPO / "tests/fixtures/bounces/flufl").iterdir() if p.suffix != ".tsv")


def _broke(library: str, what: str) -> str:
    return (f"{library} {version(library)} no longer has {what}; fix its adapter (named in "
            "tests/test_library_contracts.py) or pin the version that has it in pyproject.toml")


def test_flufl_bounce_detector_list():
    from flufl.bounce import _scan

    detectors = getattr(_scan, "_DETECTORS", None)
    assert isinstance(detectors, list) and detectors, _broke("flufl.bounce", "_scan._DETECTORS, a list of detectors")
    assert all(callable(getattr(d(), "process", None)) for d in detectors), \
        _broke("flufl.bounce", "a process(msg) method on each detector in _scan._DETECTORS")


@pytest.mark.parametrize("path", FLUFL_SAMPLES, ids=lambda p: p.name)
def test_flufl_failures_agree_with_flufl_bounces_all_failures(path):
    """Run over the same list, our adapter finds what the public all_failures() finds (it also
    names the detector, and skips one that raises instead of stopping)."""
    from flufl.bounce import all_failures

    from mailer.events.bounce_mail import flufl_failures

    msg = message_from_bytes(path.read_bytes())
    ours = flufl_failures(msg)                    # never raises
    try:
        theirs = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector raised: all_failures stops there, ours goes on
        return
    assert (ours[1:] if ours else (frozenset(), frozenset())) == theirs, \
        _broke("flufl.bounce", f"the same detectors in _scan._DETECTORS as all_failures() runs ({path.name})")


def test_typer_raises_the_usage_errors_the_cli_catches(capsys):
    import typer

    from mailer.cli import ClickException, main

    assert issubclass(typer.BadParameter, ClickException), \
        _broke("typer", "typer._click.exceptions.ClickException as the base of its usage errors")
    assert main(["lists", "--no-such-option"]) == 2
    assert "No such option: --no-such-option" in capsys.readouterr().err


def test_premailer_and_cssutils_load_through_the_stand_ins():
    """In a fresh process: premailer loads without requests, and cssutils took the refusing
    fetcher as its default while it loaded (after which cssutils._fetch is the real module)."""
    script = """
import sys
from mailer.compose import inline
premailer = inline._premailer()
import cssutils.util
print("requests" in sys.modules, cssutils.util._defaultFetcher is inline._refuse_fetch)
import cssutils._fetch
print(callable(getattr(cssutils._fetch, "_defaultFetcher", None)))
"""
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, f"premailer {version('premailer')}, cssutils {version('cssutils')}:\n{run.stderr}"
    loaded_requests, refused = run.stdout.split("\n")[0].split()
    assert loaded_requests == "False", _broke("premailer", "an import of requests that only binds the name")
    assert refused == "True", _broke("cssutils", "util._defaultFetcher taken from cssutils._fetch while importing")
    assert run.stdout.split("\n")[1] == "True", _broke("cssutils", "cssutils._fetch._defaultFetcher")


def test_python_http_client_sends_our_text_as_it_is_and_logs_only_its_size():
    """The SendGrid body (docs/decisions.md, "The SendGrid body is handed over as text")."""
    import logging

    from python_http_client import Client

    from mailer.send.deliver.sendgrid import _CONTENT_TYPE, _Json
    from tests.servers.sendgrid_server import SendGridServer

    body = json.dumps({"personalizations": [{"to": [{"email": "ann@example.org"}]}],
                       "from": {"email": "news@example.org"}, "subject": "S",
                       "content": [{"type": "text/plain", "value": "Zoë"}]}, ensure_ascii=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    library = logging.getLogger("python_http_client.client")
    filters, library.filters = library.filters, []   # an open SendGridBackend's filter rewrites these lines
    library.addHandler(handler)
    level = library.level
    library.setLevel(logging.DEBUG)
    try:
        with SendGridServer() as server:
            client = Client(host=server.url, request_headers={"Authorization": "Bearer SG.test"})
            client.v3.mail.send.post(request_body=_Json(body), request_headers={"Content-Type": _CONTENT_TYPE})
            sent = server.raw_bodies
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
        library.filters = filters
    assert sent == [body.encode("utf-8")], _broke("python-http-client", "request_body.encode('utf-8') for a "
                                                  "body whose content type is not application/json")
    payload = [r.getMessage() for r in records if r.getMessage().startswith("PAYLOAD")]
    assert payload == [f"PAYLOAD: <{len(sent[0]):,} bytes of JSON>"], \
        _broke("python-http-client", "a PAYLOAD debug line made with format() of the bytes it sends")


def test_a_maildir_is_read_in_key_order_with_each_files_path(tmp_path):
    box = mailbox.Maildir(tmp_path / "box", create=True)
    keys = [box.add(f"Subject: {i}\n\nbody {i}\n".encode()) for i in range(5)]
    for key in keys[:2]:                          # read ones move to cur/ with flags
        message = box[key]
        message.set_subdir("cur")
        message.add_flag("S")
        box[key] = message
    read = list(read_path(tmp_path / "box"))
    assert [m.data for m in read] == [box.get_bytes(k) for k in sorted(box.keys())]
    assert sorted(Path(m.label).relative_to(tmp_path / "box").parts[0] for m in read) == ["cur"] * 2 + ["new"] * 3
    assert all(Path(m.label).is_file() for m in read)
