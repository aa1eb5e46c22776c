"""A proof says it is one, never says "you are subscribed", and its footer links open real pages."""

from __future__ import annotations

import dataclasses
import email
import email.policy

from lxml import etree

from mailer.compose.render import compose_issue
from mailer.send.dispatch import send_proof


def test_a_proof_is_marked_and_its_links_lead_to_pages_that_exist(live, repo, tmp_path):
    settings = dataclasses.replace(live.settings, delivery=dataclasses.replace(
        live.settings.delivery, backend="outbox", outbox_dir=tmp_path / "outbox"))
    composed = compose_issue(repo / "issues" / "2024-11.md", settings, proof=True)
    [result] = send_proof(settings, composed, ["editor@example.org"])
    assert result.ok
    [path] = list((tmp_path / "outbox").rglob("*.eml"))
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    page = msg.get_body(("html",)).get_content()
    text = " ".join(msg.get_body(("plain",)).get_content().split())
    assert msg["Subject"] == "[PROOF] CRANK Call | November 2024"
    for part in (page, text):
        assert "PROOF" in part and "a test copy for editors" in part
        assert "is subscribed" not in part
    assert "This proof of CRANK Call went to editor@example.org" in text
    # the banner comes before the content
    assert text.index("a test copy for editors") < text.index("North Korea and Russia finalize")
    tree = etree.fromstring(page, etree.HTMLParser())
    links = {"".join(a.itertext()).strip(): a.get("href") for a in tree.iter("a")}
    for words in ("Unsubscribe", "View this issue in your browser"):
        href = links[words]
        assert href.startswith(live.url)
        assert live.http.get(href[len(live.url):]).status_code == 200, (words, href)
