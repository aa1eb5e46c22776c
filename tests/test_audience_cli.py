"""Tags, segmented sends, Mailchimp consent, private lists, the embed form and Unicode search, from
the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

SECRET = "test-secret-key-0123456789abcdef"
CSV = Path(__file__).resolve().parent / "fixtures" / "csv"


@pytest.fixture
def mailer(cli, config_file, db_url, repo, monkeypatch):
    """`mailer ARGS` against this test's database, with the repo's templates and issues."""
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)
    for folder in ("templates", "issues"):
        (config_file.parent / folder).symlink_to(repo / folder)
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(re.sub(r'(?m)^url = .*$', f'url = "{db_url}"', text, count=1), encoding="utf-8")

    def run(*args, input=None):
        return cli("--config", str(config_file), *args, input=input)

    run.outbox = config_file.parent / "outbox"
    run.url = db_url
    return run


@pytest.fixture
def crank(mailer):
    assert mailer("lists", "create", "crank", "--title", "CRANK Call").code == 0
    return mailer


# One story, in order: each row sees the state the rows before it left.
TAG_STORY = [
    (["tag", "ann@example.com", "Press", " donor "], 0, "Tagged ann@example.com donor, press."),
    (["tag", "ANN@example.com", "press", "vip"], 0, "Tagged ann@example.com vip; already had press."),
    (["untag", "ann@example.com", "VIP", "ghost"], 0,
     "Removed vip from ann@example.com; ann@example.com had no ghost."),
    (["tag", "ann@example.com", "a,b"], 1, "error: tag 'a,b' may not contain a comma"),
    (["tag", "ann@example.com", "x" * 65], 1, f"error: tag '{'x' * 65}' is longer than 64 characters"),
    (["tag", "nobody@example.com", "press"], 1, "error: no subscriber nobody@example.com"),
]


def test_tag_and_untag(crank):
    assert crank("subscribers", "add", "ann@example.com", "--list", "crank").code == 0
    for args, code, said in TAG_STORY:
        result = crank("subscribers", *args)
        assert (result.code, (result.out or result.err).strip()) == (code, said), args
    shown = json.loads(crank("subscribers", "show", "ann@example.com", "--json").out)
    assert shown["tags"] == ["donor", "press"]
    assert "tags: donor, press" in crank("subscribers", "show", "ann@example.com").out


def _seed_tagged(mailer):
    """r0 press, r1 donor, r2 press+donor, r3 no tag: four active readers of crank."""
    for i, tags in enumerate([["press"], ["donor"], ["press", "donor"], []]):
        assert mailer("subscribers", "add", f"r{i}@example.org", "--list", "crank").code == 0
        if tags:
            assert mailer("subscribers", "tag", f"r{i}@example.org", *tags).code == 0


def _copies(outbox: Path) -> Counter:
    """How many messages each reader got (the outbox names files ISSUE.SEND.SUBSCRIBER.eml)."""
    return Counter(p.name.split(".")[2] for p in outbox.glob("2024-11.*.eml"))


def test_segmented_sends_are_exactly_once_per_segment_and_never_twice_per_reader(crank):
    _seed_tagged(crank)
    dry = crank("send", "2024-11", "--list", "crank", "--tag", "press", "--dry-run")
    assert "Dry run: would send 'CRANK Call | November 2024' to 2 subscribers of crank (tags: press)" in dry.out
    asked = crank("send", "2024-11", "--list", "crank", "--tag", "press", "--tag", "DONOR", input="y\n")
    assert "to 3 active subscribers of crank (tags: donor, press) via outbox?" in asked.err
    assert asked.code == 0
    assert "Sent 'CRANK Call | November 2024' to crank (tags: donor, press) via outbox: 3 sent" in asked.out

    again = crank("send", "2024-11", "--list", "crank", "--tag", "donor", "--tag", "press", "--yes", "--json")
    data = json.loads(again.out)
    assert (data["already_sent"], data["sent"], data["segment"]) == (True, 3, "tag:donor,press")

    rest = json.loads(crank("send", "2024-11", "--list", "crank", "--yes", "--json").out)
    assert (rest["sent"], rest["segment"]) == (1, "")              # only r3: the others had it
    press = crank("send", "2024-11", "--list", "crank", "--tag", "press", "--yes")
    assert press.code == 1 and "has no active subscribers (who have not had this issue)" in press.err

    assert sorted(_copies(crank.outbox).values()) == [1, 1, 1, 1]  # four readers, one copy each
    from mailer.migrate import connect
    from mailer.send.ledger import sends

    with connect(crank.url).connect() as conn:
        rows = conn.execute(select(sends.c.segment, sends.c.total).order_by(sends.c.id)).all()
    assert [tuple(r) for r in rows] == [("tag:donor,press", 3), ("", 1)]


def test_a_tag_nobody_has_sends_nothing(crank):
    _seed_tagged(crank)
    result = crank("send", "2024-11", "--list", "crank", "--tag", "ghost", "--yes")
    assert result.code == 1
    assert result.err.strip().endswith("crank (tags: ghost) has no active subscribers (who have not had this issue): "
                                       "nothing to send")
    assert not crank.outbox.exists() or not list(crank.outbox.glob("*.eml"))


def test_mailchimp_consent_and_tags_import_and_export(crank, tmp_path):
    result = crank("subscribers", "import", str(CSV / "mailchimp_consent.csv"), "--list", "crank")
    assert result.code == 0 and "4 new" in result.out, result.err
    ann = json.loads(crank("subscribers", "show", "ann@example.com", "--json").out)
    assert ann["tags"] == ["press", "vip"]
    assert ann["attributes"] == {}              # consent is not an attribute, nor Mailchimp's MEMBER_RATING
    [m] = ann["memberships"]
    assert (m["consent_source"], m["consent_ip"], m["optin_ip"]) == ("import", "203.0.113.8", "203.0.113.7")
    assert m["consent_at"].startswith("2023-03-05 10:25:02") and m["optin_at"].startswith("2023-03-05 10:22:31")
    [bob] = json.loads(crank("subscribers", "show", "bob@example.com", "--json").out)["memberships"]
    assert bob["consent_at"].startswith("2022-01-10 08:00:00") and bob["consent_ip"] == "198.51.100.4"
    dan = json.loads(crank("subscribers", "show", "dan@example.com", "--json").out)   # unreadable: kept aside
    assert dan["attributes"] == {"OPTIN_TIME (as given)": "last tuesday"}
    assert (dan["memberships"][0]["optin_at"], dan["memberships"][0]["optin_ip"]) == (None, None)

    out = tmp_path / "crank.csv"
    assert crank("subscribers", "export", "--list", "crank", "--out", str(out)).code == 0
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    assert (rows["ann@example.com"]["tags"], rows["bob@example.com"]["tags"], rows["cy@example.com"]["tags"]) == (
        "press,vip", "", "donor")
    again = crank("subscribers", "import", str(out), "--list", "crank")
    assert "0 new, 0 updated, 4 unchanged" in again.out, again.out

    more = tmp_path / "more.csv"
    more.write_text("email,tags\nbob@example.com,\"Press, new one\"\n", encoding="utf-8")
    assert "1 updated" in crank("subscribers", "import", str(more), "--list", "crank").out
    assert json.loads(crank("subscribers", "show", "bob@example.com", "--json").out)["tags"] == ["new one", "press"]


def test_private_lists_edit_and_embed(mailer):
    made = mailer("lists", "create", "staff", "--title", "Staff notes", "--description", "Internal", "--private")
    assert made.out.strip() == "Created private list staff (Staff notes)."
    assert json.loads(mailer("lists", "--json").out)[0]["private"] is True
    refused = mailer("lists", "embed", "staff")
    assert refused.code == 1 and refused.err.strip().startswith("error: list staff is private")
    edited = mailer("lists", "edit", "staff", "--public", "--description", "Notes from the desk")
    assert edited.out.strip() == "Updated list staff: description, private."
    assert mailer("lists", "edit", "staff", "--public").out.strip() == "List staff unchanged."
    form = mailer("lists", "embed", "staff")
    assert form.code == 0
    assert re.search(r'<form class="crank-subscribe" method="post" action="[^"]+/subscribe"', form.out)
    assert '<input type="hidden" name="list" value="staff">' in form.out
    assert 'name="email" type="email" required' in form.out and 'name="website"' in form.out
    assert "Notes from the desk" in form.out


@pytest.mark.parametrize("typed", ["bücher", "BÜCHER.example", "jöhn@bücher", "xn--bcher", "jöhn"])
def test_search_finds_unicode_addresses_in_either_form(crank, typed):
    assert crank("subscribers", "add", "Jöhn@Bücher.example", "--list", "crank").code == 0
    assert crank("subscribers", "add", "ann@example.com", "--list", "crank").code == 0
    found = json.loads(crank("subscribers", "search", typed, "--json").out)
    assert found["total"] == 1
    assert (found["results"][0]["email"], found["results"][0]["unicode"]) == ("jöhn@xn--bcher-kva.example",
                                                                          "jöhn@bücher.example")
    assert "jöhn@bücher.example" in crank("subscribers", "search", typed).out
