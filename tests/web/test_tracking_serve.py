"""Tracking end to end through `mailer serve` as a real process: `mailer send` writes the copies, a
reader clicks in Chromium, a gateway sweeps another copy, a link checker sends HEAD, someone
tampers with a token, a reader turns tracking off on their preferences page and gets direct links
in the next issue; the server is stopped (it writes what it holds) and `mailer report` tells."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

MAILER = Path(sys.executable).with_name("mailer")
SECRET = "serve-tracking-secret-0123456789"
CONFIG_URL = "http://127.0.0.1:8000"          # config.toml's base_url: what the copies' links say
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
          "Safari/537.36")


def configured(config_file: Path) -> Path:
    text = config_file.read_text(encoding="utf-8")
    for old, new in (('privacy_url = ""', 'privacy_url = "https://example.org/privacy"'),
                     ('clicks = "off"', 'clicks = "reader"'), ("opens = false", "opens = true"),
                     ("after_accept_seconds = 10", "after_accept_seconds = 0")):
        assert old in text
        text = text.replace(old, new)
    config_file.write_text(text, encoding="utf-8")
    return config_file


def serve(config: Path) -> tuple[subprocess.Popen, str]:
    log = config.parent / "serve.log"
    with open(log, "w") as out:   # a file, not a pipe nobody reads
        proc = subprocess.Popen([str(MAILER), "--config", str(config), "serve", "--port", "0"],
                                env={**os.environ, "MAILER_SECRET_KEY": SECRET}, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"running on http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return proc, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"mailer serve did not start: {log.read_text()}")


@contextmanager
def story_site():
    """The site the issue links to: any path answers a page titled by its path."""
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"<!doctype html><title>story</title><h1>{self.path}</h1>".encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def copies(outbox: Path, url: str, seen: set) -> dict[str, tuple[str, str]]:
    """The new copies in the outbox, by reader: (HTML, text), links pointing where the server is."""
    found = {}
    for path in outbox.rglob("*.eml"):
        if path in seen:
            continue
        seen.add(path)
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        parts = (msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content())
        found[msg["To"].addresses[0].username] = tuple(p.replace(CONFIG_URL, url) for p in parts)
    return found


def tracked_links(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"', page)))


def test_clicks_through_mailer_serve(config_file, repo, chromium, tmp_path, cli, monkeypatch):
    """The other commands run in this process (`cli`); the server is its own."""
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)

    def mailer(config: Path, *args: str) -> str:
        done = cli("--config", config, *args)
        assert done.code == 0, done.err
        return done.out

    with story_site() as site:
        run(config_file, repo, chromium, tmp_path, site, mailer)


def run(config_file, repo, chromium, tmp_path, site, mailer):
    config = configured(config_file)
    issues = tmp_path / "issues"
    issues.mkdir()
    issue = (repo / "tests/fixtures/issues/tracked.md").read_text(encoding="utf-8")
    (issues / "tracked.md").write_text(issue.replace("https://example.org", site), encoding="utf-8")
    text = config.read_text(encoding="utf-8").replace('issues_dir = "issues"', f'issues_dir = "{issues}"')
    config.write_text(text.replace('templates_dir = "templates"', f'templates_dir = "{repo / "templates"}"'))
    mailer(config, "lists", "create", "crank", "--title", "CRANK Call")
    for name in ("ann", "bob", "carla"):
        mailer(config, "subscribers", "add", f"{name}@example.com", "--list", "crank", "--name", name.title())
    mailer(config, "send", "tracked", "--list", "crank", "--yes")
    proc, url = serve(config)
    seen: set = set()
    try:
        mails = copies(tmp_path / "outbox", url, seen)
        with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as http:
            # Ann reads her copy in Chromium and clicks "the report"
            context = chromium.new_context(user_agent=CHROME)
            page = context.new_page()
            page.set_content(mails["ann"][0])
            with page.expect_navigation():
                page.get_by_role("link", name="the report").click()
            assert page.url == f"{site}/report" and page.locator("h1").inner_text() == "/report"
            context.close()
            # a gateway follows every link of Carla's copy at once; a link checker sends HEAD on Ann's
            for link in tracked_links(mails["carla"][0]):
                assert http.get(link[len(url):], headers={"user-agent": CHROME}).status_code == 302
            checked = http.head(tracked_links(mails["ann"][0])[2][len(url):], headers={"user-agent": CHROME})
            assert (checked.status_code, checked.headers["location"]) == (302, f"{site}/data.csv")
            # someone changes a character of a token: nothing, and no redirect
            link = tracked_links(mails["ann"][0])[0]
            forged = http.get(link[len(url):-1] + ("a" if link[-1] != "a" else "b"))
            assert forged.status_code == 404 and "location" not in forged.headers
            # Bob turns tracking off from his copy's preferences link
            preferences = re.search(r'href="(http://[^"]+/preferences/[^"]+)"', mails["bob"][0]).group(1)
            page_text = http.get(preferences[len(url):]).text
            assert "Turn off click counting" in page_text
            done = http.post(preferences[len(url):] + "/tracking", data={"tracking": "off"})
            assert "click counting turned off" in done.text
            bobs_old_link = tracked_links(mails["bob"][0])[0]
            assert http.get(bobs_old_link[len(url):], headers={"user-agent": CHROME}).status_code == 302
        # the next issue: Bob's links are direct, the others' tracked
        (issues / "tracked-2.md").write_text((issues / "tracked.md").read_text(encoding="utf-8"))
        mailer(config, "send", "tracked-2", "--list", "crank", "--yes")
        later = copies(tmp_path / "outbox", url, seen)
        assert tracked_links(later["bob"][0]) == [] and "/o/" not in later["bob"][0]
        assert f'href="{site}/report"' in later["bob"][0] and "/c/" not in later["bob"][1]
        assert len(tracked_links(later["ann"][0])) == 3
    finally:
        proc.send_signal(signal.SIGTERM)   # a clean stop writes what the recorder still holds
        proc.wait(20)
    report = json.loads(mailer(config, "report", "tracked", "--json"))
    assert {k: report["figures"][k] for k in ("clicks", "machine_clicks", "opens", "machine_opens")} == {
        "clicks": 1, "machine_clicks": 4, "opens": 1, "machine_opens": 0}
    assert [(link["url"], link["people"], link["machine"]) for link in report["links"]] == [
        (f"{site}/report", 1, 1), (f"{site}/data.csv", 0, 2), (f"{site}/story?id=1&src=mail", 0, 1)]
    table = mailer(config, "report", "tracked")
    assert "Links, most people first" in table and "the report / a PDF" in table and "lower bound" in table
