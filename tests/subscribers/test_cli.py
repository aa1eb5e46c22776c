"""The admins' commands, run in-process against each database: what they print and change."""

from __future__ import annotations

import json

import pytest

from .conftest import CSV


@pytest.fixture
def crank_cli(mailer):
    assert mailer("lists", "create", "crank", "--title", "CRANK Call").code == 0
    return mailer


def test_lists_create_table_and_delete(mailer):
    assert mailer("lists").out.startswith("No lists yet")
    made = mailer("lists", "create", "crank", "--title", "CRANK [bold]Call")
    assert (made.code, made.out.strip()) == (0, "Created list crank (CRANK [bold]Call).")
    assert mailer("subscribers", "add", "ann@example.com", "--list", "crank").code == 0
    table = mailer("lists").out
    assert "CRANK [bold]Call" in table and "active" in table.splitlines()[0]
    assert json.loads(mailer("lists", "--json").out)[0]["counts"]["active"] == 1
    assert mailer("lists", "create", "crank").code == 1
    kept = mailer("lists", "delete", "crank", input="n\n")
    assert kept.code == 1 and "Aborted" in kept.err and "crank" in mailer("lists").out
    gone = mailer("lists", "delete", "crank", input="y\n")
    assert gone.code == 0 and "Deleted list crank and 1 memberships." in gone.out
    assert mailer("lists", "delete", "crank", "--yes").err.startswith("error: no list named 'crank'")


# One story, in order: each row sees the state the rows before it left.
ADD_STORY = [
    (["add", " Ann@Example.com ", "--list", "crank", "--name", "Ann"], 0, "Added ann@example.com to crank (active)."),
    (["add", "ann@example.com", "--list", "crank"], 0,
     "ann@example.com is already on crank (active); nothing changed."),
    (["add", "ann@example.com", "--list", "crank", "--name", "Ann Lee"], 0,
     "Updated ann@example.com on crank: name updated."),
    (["remove", "ann@example.com", "--list", "crank"], 0, "Unsubscribed ann@example.com from crank (was active)."),
    (["remove", "ann@example.com", "--list", "crank"], 0,
     "ann@example.com was already unsubscribed from crank; nothing changed."),
    (["add", "ann@example.com", "--list", "crank"], 1, ""),
    (["add", "ann@example.com", "--list", "crank", "--resubscribe"], 0,
     "Updated ann@example.com on crank: unsubscribed -> active."),
    (["add", "bob@example.com", "--list", "crank", "--unconfirmed"], 0,
     "Added bob@example.com to crank (unconfirmed)."),
    (["add", "not-an-address", "--list", "crank"], 1, ""),
    (["add", "ann@example.com", "--list", "crnak"], 1, ""),
    (["remove", "zed@example.com", "--list", "crank"], 1, ""),
]


def test_add_and_remove_story(crank_cli):
    for args, code, out in ADD_STORY:
        result = crank_cli("subscribers", *args)
        assert (result.code, result.out.strip()) == (code, out), (args, result.err)
        if code:
            assert result.err.startswith("error: ") and len(result.err.strip().splitlines()) == 1


def test_show_search_and_forget(crank_cli):
    crank_cli("subscribers", "add", "dora@Bücher.example", "--list", "crank", "--name", "Dora [red]Müller")
    shown = crank_cli("subscribers", "show", "DORA@xn--bcher-kva.example")
    assert "dora@xn--bcher-kva.example  (dora@bücher.example)" in shown.out and "Dora [red]Müller" in shown.out
    assert "subscribe" in shown.out and "admin" in shown.out
    data = json.loads(crank_cli("subscribers", "show", "dora@bücher.example", "--json").out)
    assert data["memberships"][0]["status"] == "active" and data["history"][0]["action"] == "subscribe"
    assert "1 match." in crank_cli("subscribers", "search", "müller").out
    assert json.loads(crank_cli("subscribers", "search", "nobody", "--json").out) == {"total": 0, "results": []}
    forgot = crank_cli("subscribers", "forget", "dora@bücher.example", "--yes")
    assert forgot.code == 0 and forgot.out.startswith("Forgot dora@xn--bcher-kva.example")
    assert crank_cli("subscribers", "show", "dora@bücher.example").code == 1
    again = crank_cli("subscribers", "add", "dora@bücher.example", "--list", "crank")
    assert again.code == 1 and "forgotten" in again.err


def test_forget_needs_the_secret(crank_cli, monkeypatch):
    monkeypatch.delenv("MAILER_SECRET_KEY")
    result = crank_cli("subscribers", "forget", "ann@example.com", "--yes")
    assert result.code == 2 and "MAILER_SECRET_KEY" in result.err


def test_import_dry_run_json_and_export(crank_cli, tmp_path):
    dry = crank_cli("subscribers", "import", CSV / "mailchimp.csv", "--list", "crank", "--dry-run")
    assert dry.code == 0 and dry.out.startswith("Dry run, nothing was written. Read 12 rows")
    assert "line" in dry.out and "not-an-address" in dry.out
    assert "0 members" in crank_cli("subscribers", "export", "--list", "crank", "--out", tmp_path / "e.csv").out
    real = json.loads(crank_cli("subscribers", "import", CSV / "mailchimp.csv", "--list", "crank", "--json").out)
    assert (real["imported"], real["invalid"], real["invalid_rows"][0]["line"]) == (8, 3, 6)
    again = crank_cli("subscribers", "import", CSV / "mailchimp.csv", "--list", "crank")
    assert "0 new, 0 updated, 8 unchanged, 3 invalid, 0 suppressed, 1 duplicates merged." in again.out
    exported = crank_cli("subscribers", "export", "--list", "crank", "--out", tmp_path / "e.csv", "--status", "active")
    assert exported.out.strip() == f"Exported 8 members of crank with status active to {tmp_path / 'e.csv'}."
    to_stdout = crank_cli("subscribers", "export", "--list", "crank", "--out", "-")
    assert to_stdout.out.startswith("email,name,status,subscribed_at") and len(to_stdout.out.splitlines()) == 9
    bad = crank_cli("subscribers", "import", CSV / "latin1.csv", "--list", "crank")
    assert bad.code == 1 and bad.err.strip().endswith("latin1.csv:2: not UTF-8 (byte 0xeb); save the file as "
                                                      "UTF-8 and import again")


def test_db_commands(mailer):
    upgraded = mailer("db", "upgrade")
    assert upgraded.code == 0 and "subscribers schema: " in upgraded.out
    assert "(up to date)" in mailer("db", "current").out
