"""`mailer issue build --check-links`: each web address asked once, HEAD then GET; failures,
unreachable pages and redirects to another host are warnings with the issue's line. The links
are served on loopback (tests/servers/link_server.py)."""

from __future__ import annotations

import socket

import pytest

from mailer.compose import linkcheck
from mailer.compose.lint import lint
from mailer.compose.render import compose, templates_dir
from mailer.compose.source import read_issue
from tests.servers.link_server import LinkServer

W = "warning"


@pytest.fixture
def links():
    with LinkServer() as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_failure_is_a_warning_with_its_line(tmp_path, settings, links, monkeypatch):
    monkeypatch.setattr(linkcheck, "TIMEOUT", 0.5)
    gone = f"http://127.0.0.1:{closed_port()}/x"
    u = links.url
    body = (f"## S\n\n[A page]({u}/ok) and [the same page]({u}/ok) again.\n\n"   # line 10
            f"- [Missing]({u}/missing). ([Broken]({u}/broken))\n"                # line 12
            f"- [Fussy]({u}/head-refused), [moved]({u}/moved), [away]({u}/away).\n"
            f"- [Slow]({u}/slow) and [gone]({gone}).\n\n"
            "Write to <editor@example.org>.\n")
    path = tmp_path / "2025-01.md"
    path.write_text('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n\n' + body, encoding="utf-8")
    issue = read_issue(path)
    report = lint(issue, compose(issue, settings), templates_dir(settings), online=True)
    checked = [(f.severity.value, f.line, f.message) for f in report.findings if f.rule == "link check"]
    assert [(s, n, m.split(" (", 1)[0] if "could not" in m else m) for s, n, m in checked] == [
        (W, 12, f"{u}/missing answers 404 (not found): check the address"),
        (W, 12, f"{u}/broken answers 500 (server error): check the address"),
        (W, 13, f"{u}/away redirects to another host (http://localhost:{links.port}/ok): link to where it "
                "leads, if that is the page you mean"),
        (W, 14, f"{u}/slow could not be reached"),
        (W, 14, f"{gone} could not be reached"),
    ]
    asked = sorted(links.requests)
    assert asked.count(("HEAD", "/ok")) == 3       # once, and after each of two redirects to it
    assert ("GET", "/ok") not in asked             # HEAD was enough, redirected or not
    assert ("HEAD", "/head-refused") in asked and ("GET", "/head-refused") in asked
    assert [r for r in asked if r[1] == "/missing"] == [("GET", "/missing"), ("HEAD", "/missing")]
    assert [r for r in asked if r[1] == "/slow"] == [("HEAD", "/slow")]    # no answer: not asked again
    assert report.errors == ()                     # the network never makes an error


def test_build_without_the_option_never_touches_the_network(cli, repo, tmp_path, links, monkeypatch):
    monkeypatch.chdir(repo)
    path = tmp_path / "2025-01.md"
    path.write_text('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n\n'
                    f"## S\n\n[Missing]({links.url}/missing).\n", encoding="utf-8")
    quiet = cli("issue", "build", path, "--out", tmp_path / "out")
    assert quiet.code == 0 and links.requests == []
    checked = cli("issue", "build", path, "--out", tmp_path / "out", "--check-links")
    assert checked.code == 0, checked.err             # warnings do not fail the build
    assert f"warning: {path}:10: {links.url}/missing answers 404 (not found): check the address" in checked.out
    assert links.requests == [("HEAD", "/missing"), ("GET", "/missing")]
