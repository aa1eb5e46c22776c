"""Web fixtures: settings with a webhook key pair, the real app on loopback, headless Chromium."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.events.signing import Signer
from tests.services import missing
from tests.web.live import free_socket, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}          # an ordinary phone, CSS pixels
SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def web_settings(settings, signer, tmp_path, monkeypatch):
    """The test settings plus: SendGrid's public key from `signer`, an empty issues folder,
    and MAILER_SECRET_KEY set. The signup's proof-of-work and minimum fill time are off here, so
    the tests of what a signup does post the form as a script would; tests/web/test_signup.py
    turns them on (`guarded`)."""
    monkeypatch.setenv(settings.secret_key_env, SECRET)
    issues = tmp_path / "issues"
    issues.mkdir()
    return dataclasses.replace(
        settings,
        webhooks=dataclasses.replace(settings.webhooks, sendgrid=dataclasses.replace(
            settings.webhooks.sendgrid, public_key=signer.public_key)),
        compose=dataclasses.replace(settings.compose, issues_dir=issues),
        web=dataclasses.replace(settings.web, signup_challenge=False, min_fill_seconds=0),
    )


@dataclass
class Live:
    url: str
    app: object
    settings: object
    http: httpx.Client

    @property
    def web(self):
        return self.app.state.web


LIST = "crank"


@pytest.fixture
def live(web_settings):
    """The real app with one list, `crank`, served by uvicorn on a free loopback port, with
    [newsletter] base_url pointing there (so links in mails work); `live.http` talks to it."""
    from mailer.web import create_app
    from subscribers import store

    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = dataclasses.replace(
        web_settings, newsletter=dataclasses.replace(web_settings.newsletter, base_url=url))
    app = create_app(settings)
    with app.state.web.engine.begin() as conn:
        store.create_list(conn, LIST, title="CRANK Call")
    with serve_in_thread(app, sock=sock), httpx.Client(base_url=url, timeout=10,
                                                       follow_redirects=False) as http:
        yield Live(url, app, settings, http)


def pytest_collection_modifyitems(items):
    """Local links are http on purpose; personalize's one-click warning is for production."""
    for item in items:
        if "tests/web/" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("ignore::mailer.compose.personalize.UnsafeUnsubscribeUrl"))


@pytest.fixture(scope="session")
def chromium(request):
    """Debian's Chromium under Playwright (never `playwright install`)."""
    if not CHROMIUM.exists() or not shutil.which(str(CHROMIUM)):
        missing(f"browser tests skipped: {CHROMIUM} is missing (apt-get install chromium)")
    pw = request.getfixturevalue("playwright")   # the process's one Playwright (tests/conftest.py)
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def phone(chromium):
    """A fresh page at phone width; nothing cached or stored between tests."""
    context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    yield page
    context.close()
