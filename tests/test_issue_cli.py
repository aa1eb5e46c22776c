"""`mailer issue build` and `mailer issue preview` as an editor runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailer.compose.preview import PreviewServer, fill_preview

BROKEN = "tests/fixtures/issues/broken_front_matter.md"
BROKEN_MESSAGE = (f'error: {BROKEN}:3: settings: a closing " is missing (text needs "double quotes"; '
                  "dates are YYYY-MM-DD without quotes)\n")


@pytest.fixture
def in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)
    return repo


def test_build_writes_the_three_files_for_a_preview_recipient(cli, in_repo, tmp_path):
    result = cli("issue", "build", "issues/2024-11.md", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    html, text, mjml = (tmp_path / "out" / n for n in ("email.html", "email.txt", "email.mjml"))
    assert mjml.read_text().startswith('<mjml lang="en"')
    for part in (html.read_text(), text.read_text()):
        assert "%%" not in part
        assert "preview@example.org" in part
        assert "http://127.0.0.1:8000/unsubscribe/preview" in part
        assert "http://127.0.0.1:8000/archive/2024-11" in part
    assert result.out.splitlines()[0] == (f"Wrote {tmp_path / 'out'}/email.mjml, email.html and "
                                          "email.txt (for preview@example.org).")
    assert result.out.splitlines()[-1] == "  0 error(s), 0 warning(s)"


def test_build_defaults_to_build_slug(cli, repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("--config", repo / "config.toml", "issue", "build", repo / "issues/2024-11.md")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "build/2024-11").iterdir()) == [
        "email.html", "email.mjml", "email.txt"]


@pytest.mark.parametrize("body, code, last_line", [
    ("## Empty\n\n## S\n\nText.\n", 0, "  0 error(s), 1 warning(s)"),          # warnings pass
    ("## S\n\nDear {{ nmae }}.\n", 1, "  1 error(s), 0 warning(s)"),            # errors fail
])
def test_lint_errors_fail_the_build_and_warnings_do_not(cli, in_repo, tmp_path, body, code, last_line):
    issue = tmp_path / "2025-01.md"
    issue.write_text('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n\n' + body)
    result = cli("issue", "build", issue, "--out", tmp_path / "out")
    assert (result.code, result.out.splitlines()[-1]) == (code, last_line)
    assert (tmp_path / "out/email.html").exists()      # written anyway, to look at


def test_a_broken_issue_file_is_one_line_naming_file_and_line(cli, in_repo, tmp_path):
    result = cli("issue", "build", BROKEN, "--out", tmp_path / "out")
    assert (result.code, result.out, result.err) == (1, "", BROKEN_MESSAGE)
    assert not (tmp_path / "out").exists()


def test_a_template_error_names_template_and_line(cli, repo, config_file, tmp_path, monkeypatch):
    """The config's folder holds its own templates/ (as [compose] templates_dir says)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(repo / "templates", tmp_path / "templates")
    footer = tmp_path / "templates/partials/footer.mjml.j2"
    footer.write_text(footer.read_text().replace("{{ newsletter.postal_address }}", "{{ postal_address }}"))
    result = cli("--config", config_file, "issue", "build", repo / "issues/2024-11.md")
    assert (result.code, result.err) == (1, "error: templates/partials/footer.mjml.j2:9: "
                                            "UndefinedError: 'postal_address' is undefined\n")


def test_an_unwritable_out_folder_is_one_line(cli, in_repo, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("issue", "build", "issues/2024-11.md", "--out", tmp_path / "file/out")
    assert (result.code, result.err) == (1, f"error: cannot write to {tmp_path}/file/out: Not a directory\n")


def test_preview_on_a_taken_port_is_one_line(cli, in_repo):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("issue", "preview", "issues/2024-11.md", "--port", port)
    assert (result.code, result.err) == (1, f"error: cannot serve on 127.0.0.1:{port}: Address already "
                                            f"in use (try --port {port + 1})\n")


@pytest.mark.parametrize("how", ["mailer", "python -m mailer"])
def test_the_installed_command_builds(repo, tmp_path, how):
    command = [str(Path(sys.executable).with_name("mailer"))] if how == "mailer" else \
        [sys.executable, "-m", "mailer"]
    run = subprocess.run([*command, "issue", "build", "issues/2024-11.md", "--out", str(tmp_path)],
                         cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.endswith("  0 error(s), 0 warning(s)\n")
    assert "North Korea and Russia finalize defense pact" in (tmp_path / "email.txt").read_text()


def test_the_installed_command_exits_non_zero_without_a_traceback(repo, tmp_path):
    mailer = Path(sys.executable).with_name("mailer")
    run = subprocess.run([str(mailer), "issue", "build", BROKEN, "--out", str(tmp_path)],
                         cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", BROKEN_MESSAGE)


@pytest.mark.parametrize("part, value, filled", [
    ("html", "Ann <b> & Co", "<p>Ann &lt;b&gt; &amp; Co</p>"),
    ("text", "Ann <b> & Co", "<p>Ann <b> & Co</p>"),
])
def test_preview_values_are_escaped_only_in_html(part, value, filled):
    marker = "%%name:html%%" if part == "html" else "%%name%%"
    assert fill_preview(f"<p>{marker}</p>", {"name": value}, part) == filled


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode("utf-8")


def edit_until_shown(server: PreviewServer, issue: Path, text: str, page: str, shows: str) -> None:
    """Write `text` into the issue until the preview's `page` shows `shows`. The watcher starts in
    its own thread and may not be watching yet when a write lands, so a write the preview has not
    picked up within a second is made again (each rebuild of the same text shows the same)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        issue.write_text(text)
        again = time.monotonic() + 1
        while time.monotonic() < min(again, deadline):
            if shows in get(server.url + page)[2]:
                return
            time.sleep(0.05)
    raise AssertionError(f"the preview did not rebuild after the file changed: {page} lacks {shows!r}")


def test_preview_serves_and_rebuilds_on_change(repo, settings, tmp_path):
    issue = tmp_path / "2024-11.md"
    shutil.copy(repo / "issues/2024-11.md", issue)
    server = PreviewServer(issue, settings, port=0).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        status, kind, html = get(server.url + "email.html")
        assert (status, kind) == (200, "text/html; charset=utf-8") and "Kursk looms" in html
        status, kind, text = get(server.url + "email.txt")
        assert (status, kind) == (200, "text/plain; charset=utf-8") and "CRANK Perspectives" in text
        page = get(server.url)[2]
        assert "0 error(s), 0 warning(s)" in page and "Stale" not in page
        assert ">Phone width (375 px)</button>" in page and ">Dark mode</button>" in page
        assert '<strong id="subject">CRANK Call | November 2024</strong>' in page      # the inbox's view
        assert '<span id="preheader">North Korea and Russia finalize defense pact' in page
        dark = get(server.url + "email.html?dark=1")[2]
        assert "prefers-color-scheme" not in dark and '<meta name="color-scheme" content="dark">' in dark

        edit_until_shown(server, issue, issue.read_text().replace("Kursk looms", "Kursk nears"),
                         "email.html", "Kursk nears")
        assert int(get(server.url + "version")[2]) > 1

        broken = issue.read_text().replace("+++\n\n# CRANK", "+++\n\n## CRANK", 1)
        edit_until_shown(server, issue, broken, "", "Stale: the email and report below")
        page = get(server.url)[2]
        assert "the body must start with the issue&#x27;s title as &#x27;# Title&#x27;" in page
        assert "Stale: the email and report below are from before this error" in page
        assert '<iframe id="email" class="stale"' in page and '<pre id="report" class="stale">' in page
        assert "Kursk nears" in get(server.url + "email.html")[2]        # the last good email stays
    finally:
        server.close()


def test_preview_answers_404_for_other_paths(repo, settings):
    server = PreviewServer(repo / "issues/2024-11.md", settings, port=0).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            get(server.url + "etc/passwd")
        assert caught.value.code == 404
    finally:
        server.close()


def test_the_preview_shows_the_inbox_line_for_its_reader(settings, tmp_path):
    """Subject and preheader as the preview reader's inbox shows them: merge fields filled in,
    quotes typographic, escaped on the page."""
    from mailer.compose.preview import _index, build_preview

    issue = tmp_path / "2025-01.md"
    issue.write_text("+++\nsubject = 'Dear {{ first_name }}: the \"axis\" <4>'\npreheader = \"It's {{ name }}'s\"\n"
                     "date = 2025-01-07\n+++\n# T\n\n## S\n\nText.\n", encoding="utf-8")
    build = build_preview(issue, settings, 1)
    assert (build.subject, build.preheader) == ("Dear Preview: the “axis” <4>", "It’s Preview Reader's")
    page = _index(build, issue)
    assert '<strong id="subject">Dear Preview: the “axis” &lt;4&gt;</strong>' in page
    assert "subject: Dear {{ first_name }}: the “axis” &lt;4&gt; (31 characters)" in page   # the report's line
