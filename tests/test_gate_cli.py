"""The lint gate: `send`, `send --dry-run` and `issue proof` refuse an issue with a lint error.

Each case is a real issue file (or template) with one error; each command must print the report,
exit non-zero, leave the outbox empty and the send ledger without a row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.deliver.helpers import seed

SECRET = "gate-test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch):
    monkeypatch.setenv("MAILER_SECRET_KEY", SECRET)


@pytest.fixture
def newsletter(config_file, repo) -> Path:
    """A folder with config.toml, its own copy of templates/ and issues/, and a list of 3 readers."""
    folder = config_file.parent
    shutil.copytree(repo / "templates", folder / "templates")
    shutil.copytree(repo / "issues", folder / "issues")
    seed(f"sqlite:///{folder / 'mailer.db'}", 3)
    return folder


def november(folder: Path) -> str:
    return (folder / "issues" / "2024-11.md").read_text(encoding="utf-8")


def unresolved(folder: Path) -> str:
    text = november(folder).replace("## Links", "Dear {{ nmae }},\n\n## Links", 1)
    (folder / "issues" / "2024-11.md").write_text(text, encoding="utf-8")
    return "unresolved template variable {{ nmae }}"


def no_unsubscribe_link(folder: Path) -> str:
    footer = folder / "templates" / "partials" / "footer.mjml.j2"
    footer.write_text(footer.read_text(encoding="utf-8").replace("{{ markers.unsubscribe_url }}",
                                                                "https://example.org/"), encoding="utf-8")
    return "the HTML part has no unsubscribe link"


def clipped(folder: Path) -> str:
    words = " ".join(["Long analysis of the week's events, paragraph after paragraph."] * 30)
    text = november(folder) + "".join(f"\n## Part {i}\n\n{words}\n" for i in range(60))
    (folder / "issues" / "2024-11.md").write_text(text, encoding="utf-8")
    return "Gmail clips it"


COMMANDS = {
    "send": ["send", "2024-11", "--list", "crank", "--yes"],
    "dry run": ["send", "2024-11", "--list", "crank", "--dry-run"],
    "proof": ["issue", "proof", "2024-11", "--to", "ed@example.org"],
}


def ledger_rows(folder: Path) -> int:
    from mailer.migrate import connect
    from mailer.send.ledger import sends

    with connect(f"sqlite:///{folder / 'mailer.db'}").connect() as conn:
        return conn.execute(select(func.count()).select_from(sends)).scalar_one()


@pytest.mark.parametrize("problem", [unresolved, no_unsubscribe_link, clipped])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_issue_with_a_lint_error_is_never_delivered(cli, newsletter, problem, command):
    words = problem(newsletter)
    result = cli("--config", newsletter / "config.toml", *COMMANDS[command])
    assert result.code == 1
    assert "Lint report for" in result.err and words in result.err          # the report, then
    assert result.err.rstrip().splitlines()[-1].endswith(                   # one line saying why
        "lint error(s) in the report above; fix them and run the command again (nothing was sent)")
    assert "Traceback" not in result.err
    assert list((newsletter / "outbox").glob("*.eml")) == []
    assert ledger_rows(newsletter) == 0


def test_warnings_are_shown_before_the_question(cli, newsletter):
    text = november(newsletter).replace("## Links", "## Nothing here yet\n\n## Links", 1)
    (newsletter / "issues" / "2024-11.md").write_text(text, encoding="utf-8")
    result = cli("--config", newsletter / "config.toml", "send", "2024-11", "--list", "crank", input="n\n")
    assert result.code == 1                                              # answered no
    warning = result.err.index("warning: ")
    assert "section 'Nothing here yet' is empty" in result.err
    assert warning < result.err.index("Send 'CRANK Call | November 2024' to 3 active subscribers")
    assert list((newsletter / "outbox").glob("*.eml")) == [] and ledger_rows(newsletter) == 0


def test_a_clean_issue_is_composed_once_and_sent(cli, newsletter, monkeypatch):
    import mailer.compose.gate
    import mailer.compose.render

    calls = []
    real = mailer.compose.render.compose
    # the send composes through the lint gate (mailer.compose.gate.gate), which imported `compose` at its top
    monkeypatch.setattr(mailer.compose.gate, "compose", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = cli("--config", newsletter / "config.toml", *COMMANDS["send"])
    assert result.code == 0, result.err
    assert "0 error(s), 0 warning(s)" in result.err
    assert len(list((newsletter / "outbox").rglob("*.eml"))) == 3 and ledger_rows(newsletter) == 1
    assert calls == [1]


@pytest.mark.parametrize("to, words", [
    ("not-an-address", "'not-an-address' is not an email address"),
    ("ed@example.org, ann", "'ann' is not an email address"),
    ("jöhn@example.org", "'jöhn@example.org' is not an email address"),   # no backend speaks SMTPUTF8
    ("b@example", "'b@example' is incomplete: 'example' is not a whole domain (write e.g. b@example.org)"),
    (" , ", "give at least one address"),
])
def test_proof_names_what_is_not_an_address(cli, newsletter, to, words):
    result = cli("--config", newsletter / "config.toml", "issue", "proof", "2024-11", "--to", to)
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert not (newsletter / "outbox").exists()


# Issue 25's broken links, each written into the November issue's Links list, and the
# words that say what was meant.
BROKEN_LINKS = [
    ("[Atlantic Council(https://www.atlanticcouncil.org/x)",
     "is not a link (its ']' is missing): write [Atlantic Council](https://www.atlanticcouncil.org/x)"),
    ("[Brookings]www.brookings.edu", "is not a link (the address needs brackets): write "
                                     "[Brookings](https://www.brookings.edu)"),
    ("[five charts][ref]", "link '[five charts][ref]' has no definition: add a line \"[ref]: https://…\""),
    ("[four](https://exa mple.com)", "the address in [four](https://exa mple.com) has a space in it: write "
                                     "[four](https://example.com)"),
    ("[two](javascript:alert(1))", "link [two](javascript:alert(1)) is a javascript: address, which mail "
                                   "apps refuse"),
]


@pytest.mark.parametrize("link, words", BROKEN_LINKS)
def test_each_broken_link_stops_a_dry_run(cli, newsletter, link, words):
    path = newsletter / "issues" / "2024-11.md"
    text = november(newsletter).replace("## Links\n", f"## Links\n\n- See {link} on this. (Wire)\n", 1)
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index(f"- See {link} on this. (Wire)") + 1
    result = cli("--config", newsletter / "config.toml", *COMMANDS["dry run"])
    assert result.code == 1
    assert f"error: {path}:{line}: " in result.err and words in result.err
    assert list((newsletter / "outbox").glob("*.eml")) == [] and ledger_rows(newsletter) == 0
