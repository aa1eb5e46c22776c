"""`mailer admin add-user | remove-user | users`, in-process on each database."""

from __future__ import annotations

import getpass

import pytest

GOOD = "a long enough password"


@pytest.fixture
def typed(monkeypatch):
    """Answers to the hidden password prompts, in order (what a person types at the terminal)."""
    answers: list[str] = []

    def fake(prompt: str = "") -> str:
        return answers.pop(0)

    monkeypatch.setattr(getpass, "getpass", fake)
    return answers


def test_add_user_from_stdin_then_list_and_remove(mailer):
    assert mailer("admin", "users").out.startswith("No admin users yet")
    added = mailer("admin", "add-user", "editor", "--password-stdin", input=GOOD + "\n")
    assert (added.code, added.out.strip()) == (0, "Added admin user editor (owner).")
    listed = mailer("admin", "users").out
    assert listed.startswith("editor  owner  (added ") and "last login never" in listed
    removed = mailer("admin", "remove-user", "editor")
    assert (removed.code, removed.out.strip()) == (0, "Removed admin user editor.")
    assert mailer("admin", "users").out.startswith("No admin users yet")


def test_add_user_asks_twice_until_both_match(mailer, typed):
    typed += [GOOD, "a different password", GOOD, GOOD]
    added = mailer("admin", "add-user", "editor")
    assert added.code == 0, added.err
    assert "do not match" in added.out + added.err
    assert typed == []


def test_the_stored_hash_is_argon2id_and_verifies(mailer, db_url):
    from mailer import admin_users
    from mailer.migrate import connect

    mailer("admin", "add-user", "editor", "--password-stdin", input=GOOD + "\n")
    with connect(db_url).begin() as conn:
        stored = conn.execute(admin_users.admin_users.select()).one().password_hash
        assert stored.startswith("$argon2id$") and GOOD not in stored
        assert admin_users.verify(conn, "editor", GOOD) is not None
        assert admin_users.verify(conn, "editor", GOOD + "!") is None
        assert admin_users.verify(conn, "nobody", GOOD) is None


@pytest.mark.parametrize("args, stdin, message", [
    (["add-user", "editor", "--password-stdin"], "short\n", "error: the password must be at least 12 characters long"),
    (["add-user", "editor", "--password-stdin"], " padded password \n", "error: the password must not start or end"),
    (["add-user", "bad name", "--password-stdin"], GOOD + "\n", "error: user name 'bad name' must be"),
    (["add-user", "taken", "--password-stdin"], GOOD + "\n", "error: an admin user named 'taken' already exists"),
    (["remove-user", "nobody"], None, "error: no admin user named 'nobody'"),
])
def test_bad_input_is_named_in_one_line(mailer, args, stdin, message):
    mailer("admin", "add-user", "taken", "--password-stdin", input=GOOD + "\n")
    result = mailer("admin", *args, input=stdin)
    assert result.code == 1
    assert result.err.startswith(message) and result.err.count("\n") == 1
    assert "Traceback" not in result.err
