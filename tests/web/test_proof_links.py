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
    for words in ("Unsubscribe", "Your preferences", "View this issue in your browser"):
        href = links[words]
        assert href.startswith(live.url)
        assert live.http.get(href[len(live.url):]).status_code == 200, (words, href)
    assert links["Unsubscribe"] == f"{live.url}/unsubscribe/proof" == msg["List-Unsubscribe"].strip("<>")
    assert links["Your preferences"] == f"{live.url}/preferences/proof"


EXPLAINED = {"unsubscribe": "this link unsubscribes the reader from the list the issue was sent to",
             "preferences": "this link opens the reader's preferences"}


def _explains(reply, kind: str) -> None:
    assert reply.status_code == 200, reply.text
    text = " ".join(reply.text.replace("&#39;", "'").split())
    assert "A link from a test copy" in text and EXPLAINED[kind] in text
    assert "not to a reader, so nothing was changed" in text


def test_the_links_of_proofs_and_notices_explain_themselves(live, repo, tmp_path):
    """Each link a proof or a scheduler's notice carries answers 200 with what it does for a reader:
    clicked (GET), and the List-Unsubscribe one-click POST (RFC 8058) a mail app makes."""
    settings = dataclasses.replace(live.settings, delivery=dataclasses.replace(
        live.settings.delivery, backend="outbox", outbox_dir=tmp_path / "outbox"))
    proof = compose_issue(repo / "issues" / "2024-11.md", settings, proof=True)
    notice = dataclasses.replace(proof, slug="notice-20261201T140000")
    send_proof(settings, proof, ["editor@example.org"])
    send_proof(settings, notice, ["editor@example.org"], proof=False)
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted((tmp_path / "outbox").glob("*.eml"))]
    unsubscribes = sorted(m["List-Unsubscribe"].strip("<>")[len(live.url):] for m in mails)
    assert unsubscribes == ["/unsubscribe/copy", "/unsubscribe/proof"]
    for path in unsubscribes:
        _explains(live.http.get(path), "unsubscribe")
        _explains(live.http.post(path, data={"List-Unsubscribe": "One-Click"}), "unsubscribe")
    for token in ("proof", "copy"):
        _explains(live.http.get(f"/preferences/{token}"), "preferences")
    assert live.http.get("/unsubscribe/proofs").status_code == 400          # any other word is a bad link
    french = live.http.get("/unsubscribe/proof", headers={"accept-language": "fr"})
    assert french.status_code == 200 and "Un lien d’une copie de test" in french.text
