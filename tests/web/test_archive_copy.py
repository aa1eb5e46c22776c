"""/archive/ISSUE serves the copy stored when the send started: during the send, after a crash,
and unchanged when the issue file changes later; the index comes from the ledger's rows."""

from __future__ import annotations

import pytest

from mailer.send import dispatch
from mailer.web.archive_page import web_content
from tests.deliver.helpers import seed
from tests.web.test_archive import mark_sent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def composed(live, repo):
    from mailer.compose.render import compose_issue
    from mailer.config import load_settings

    return compose_issue(repo / "issues" / "2024-11.md", load_settings(repo / "config.toml"))


class Crash(BaseException):
    """The process dies while the first batch is on the wire."""


def test_the_mailed_copy_is_online_from_the_first_message_and_after_a_crash(live, composed):
    from mailer.send.deliver.registry import create_backend

    seed(live.web.engine.url.render_as_string(hide_password=False), 5)
    seen = {}
    outbox = create_backend("outbox", live.settings)

    class Watching(type(outbox)):
        def _send(self, batch, encoded):   # what a reader clicking "view online" gets right now
            seen["page"] = live.http.get("/archive/2024-11")
            seen["index"] = live.http.get("/archive").text
            raise Crash()

    with pytest.raises(Crash):
        dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank"),
                          backend=Watching(live.settings.delivery.outbox_dir))
    html = dispatch.archive_copy(composed, live.settings.newsletter).html
    shown = web_content(html).body            # the page is the site's, around the mailed content
    assert seen["page"].status_code == 200 and shown in seen["page"].text
    assert 'href="/archive/2024-11"' in seen["index"] and "November 2024" in seen["index"]
    after_crash = live.http.get("/archive/2024-11")     # the send is still `sending`: no rerun yet
    assert after_crash.status_code == 200 and shown in after_crash.text
    assert "%%" not in html and "@example.org" not in html and "/unsubscribe/" not in html


def test_the_copy_is_what_was_mailed_even_after_the_issue_file_changes(live, composed):
    seed(live.web.engine.url.render_as_string(hide_password=False), 2)
    dispatch.run_send(live.settings, dispatch.plan_send(live.settings, composed, "crank"))
    (live.settings.compose.issues_dir / "2024-11.md").write_text("+++\nsubject = \"Rewritten\"\n+++\n")
    page = live.http.get("/archive/2024-11")
    assert page.status_code == 200 and "Rewritten" not in page.text
    assert web_content(dispatch.archive_copy(composed, live.settings.newsletter).html).body in page.text


def test_a_send_that_delivered_nothing_and_stopped_is_not_listed(live):
    mark_sent(live, "2024-12", sent=0)
    assert live.http.get("/archive/2024-12").status_code == 404
    assert "2024-12" not in live.http.get("/archive").text
