"""The admin's commands of issue 26: roles, the second factor, the audit log, `mailer tags` and
`subscribers export --tag`, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pyotp
import pytest

GOOD = "a long enough password"


def add(mailer, name, *role):
    return mailer("admin", "add-user", name, *role, "--password-stdin", input=GOOD + "\n")


def test_roles_first_user_owner_then_editor_set_role_and_the_last_owner(mailer):
    assert add(mailer, "ann").out.strip() == "Added admin user ann (owner)."
    assert add(mailer, "bob").out.strip() == "Added admin user bob (editor)."
    assert add(mailer, "cy", "--role", "viewer").out.strip() == "Added admin user cy (viewer)."
    bad = add(mailer, "dee", "--role", "boss")
    assert bad.code == 1 and "role 'boss' must be one of viewer, editor, owner" in bad.err
    listed = mailer("admin", "users").out.splitlines()
    assert [line.split()[:2] for line in listed] == [["ann", "owner"], ["bob", "editor"], ["cy", "viewer"]]
    assert mailer("admin", "set-role", "bob", "owner").out.strip() == "bob is now owner (was editor)."
    assert "already owner; nothing changed" in mailer("admin", "set-role", "bob", "owner").out
    mailer("admin", "set-role", "bob", "viewer")
    last = mailer("admin", "set-role", "ann", "editor")
    assert last.code == 1 and "ann is the last owner" in last.err
    assert "no admin user named 'zed'" in mailer("admin", "set-role", "zed", "owner").err


def test_totp_enrols_prints_uri_qr_and_recovery_codes_and_checks_codes(mailer, db_url):
    from mailer import admin_users
    from mailer.migrate import connect

    add(mailer, "ann")
    shown = mailer("admin", "totp", "ann")
    assert shown.code == 0, shown.err
    uri = next(line for line in shown.out.splitlines() if line.startswith("otpauth://totp/"))
    assert "crank-mailer" in uri and "ann" in uri
    assert "\u2580" in shown.out or "\u2588" in shown.out           # the QR code, in block characters
    codes = [line.strip() for line in shown.out.splitlines() if line.startswith("  ")][-10:]
    assert len(codes) == 10 and all(len(c) == 11 and c[5] == "-" for c in codes)
    assert "second factor" in mailer("admin", "users").out
    totp = pyotp.parse_uri(uri)
    now = datetime.now(UTC)
    with connect(db_url).begin() as conn:
        assert admin_users.check_code(conn, "ann", totp.at(now), at=now)
        assert not admin_users.check_code(conn, "ann", totp.at(now), at=now)      # once only
        assert not admin_users.check_code(conn, "ann", "000000" if totp.at(now) != "000000" else "111111", at=now)
        assert admin_users.check_code(conn, "ann", codes[0].upper())
        assert not admin_users.check_code(conn, "ann", codes[0])                 # used up
        assert admin_users.recovery_left(conn, "ann") == 9
        stored = conn.exec_driver_sql("SELECT code_hash FROM admin_recovery_codes").scalars().all()
        assert codes[1] not in " ".join(stored)
    assert "Removed ann's second factor." in mailer("admin", "totp", "ann", "--off").out
    assert "had no second factor" in mailer("admin", "totp", "ann", "--off").out


def test_admin_commands_write_the_audit_log_and_forget_keeps_entries_without_the_address(mailer, monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "ops")
    mailer("lists", "create", "crank")
    mailer("subscribers", "add", "ann@example.com", "--list", "crank")
    mailer("subscribers", "tag", "ann@example.com", "press", "vip")
    mailer("subscribers", "untag", "ann@example.com", "vip")
    mailer("subscribers", "remove", "ann@example.com", "--list", "crank")
    add(mailer, "bob")
    log = mailer("admin", "log").out.splitlines()
    assert [line.split("  ")[2] for line in log] == [
        "user.add", "subscriber.unsubscribe", "subscriber.untag", "subscriber.tag", "subscriber.add", "list.create"]
    assert all("ops (cli)" in line for line in log)
    assert "ann@example.com crank" in log[1] and "tags: press, vip" in log[3]
    only = mailer("admin", "log", "--subscriber", "ann@example.com", "--action", "subscriber.tag").out
    assert len(only.splitlines()) == 1
    mailer("subscribers", "forget", "ann@example.com", "--yes")
    after = mailer("admin", "log", "--json").out
    assert "ann@example.com" not in after and '"subscriber.forget"' in after
    assert "(forgotten)" in mailer("admin", "log").out
    assert mailer("admin", "log", "--user", "nobody").out.strip() == "No entries."


def test_tags_counts_and_export_by_tag_with_or_without_a_list(mailer, tmp_path):
    mailer("lists", "create", "crank")
    for who, tags in (("ann@example.com", ["press", "vip"]), ("bob@example.org", ["press"]),
                      ("cy@example.net", [])):
        mailer("subscribers", "add", who, "--list", "crank")
        if tags:
            mailer("subscribers", "tag", who, *tags)
    mailer("subscribers", "remove", "bob@example.org", "--list", "crank")
    assert mailer("tags").out.split() == ["tag", "subscribers", "press", "2", "vip", "1"]
    assert mailer("tags", "--json").out.replace(" ", "").replace("\n", "") == '{"press":2,"vip":1}'
    out = tmp_path / "press.csv"
    done = mailer("subscribers", "export", "--tag", "Press", "--out", str(out))
    assert done.out.strip() == f"Exported 2 subscribers with tag press to {out}."
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["email"], r["status"], r["tags"]) for r in rows] == [
        ("ann@example.com", "active", "press,vip"), ("bob@example.org", "unsubscribed", "press")]
    assert rows[0]["subscribed_at"].endswith("Z")
    both = mailer("subscribers", "export", "--list", "crank", "--tag", "press", "--tag", "vip", "--out", "-").out
    assert [r["email"] for r in csv.DictReader(io.StringIO(both))] == ["ann@example.com"]
    active = mailer("subscribers", "export", "--tag", "press", "--status", "active", "--out", "-").out
    assert [r["email"] for r in csv.DictReader(io.StringIO(active))] == ["ann@example.com"]
    assert "may not contain a comma" in mailer("subscribers", "export", "--tag", "a,b", "--out", "-").err


@pytest.mark.parametrize("cell", ["=HYPERLINK(1)", "+1", "@SUM"])
def test_export_without_a_list_is_formula_safe(mailer, db_url, cell):
    from mailer.migrate import connect
    from subscribers import store

    mailer("lists", "create", "crank")
    with connect(db_url).begin() as conn:
        store.add_subscriber(conn, "ann@example.com", store.get_list(conn, "crank").id, name=cell)
    out = mailer("subscribers", "export", "--out", "-").out
    assert f",'{cell}," in out
