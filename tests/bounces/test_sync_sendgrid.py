"""`mailer bounces sync-sendgrid` against the local SendGrid-compatible server, on SQLite and
PostgreSQL: each list through the one policy, pages followed, nothing stored twice."""

from __future__ import annotations

import json

import pytest

from tests.bounces.conftest import with_database
from tests.bounces.test_apply import events, statuses

LATER = 4_102_444_800          # 2100-01-01: after every test reader's consent


@pytest.fixture
def synced(bounce_config, db_url, sendgrid_server, monkeypatch):
    from mailer.migrate import connect
    from subscribers import store

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    text = with_database(bounce_config, db_url).read_text().replace(
        'host = "https://api.sendgrid.com"', f'host = "{sendgrid_server.url}"')
    bounce_config.write_text(text)
    engine = connect(db_url)
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        for i in range(8):
            store.add_subscriber(conn, f"r{i}@example.org", crank)
    s = sendgrid_server.suppressions
    s["bounces"] = ([{"created": LATER, "email": "R0@example.org", "reason": "550 5.1.1 user unknown",
                      "status": "5.1.1"},
                     {"created": LATER, "email": "r1@example.org", "reason": "452 4.2.2 mailbox full",
                      "status": "4.2.2"}]
                    + [{"created": LATER - i, "email": f"stranger{i}@example.net", "reason": "550 5.1.1",
                        "status": "5.1.1"} for i in range(600)])                        # two pages
    s["blocks"] = [{"created": LATER, "email": "r2@example.org", "reason": "554 5.7.1 blocked by policy",
                    "status": "5.7.1"}]
    s["spam_reports"] = [{"created": LATER, "email": "r3@example.org", "ip": "192.0.2.10"}]
    s["invalid_emails"] = [{"created": LATER, "email": "r4@example.org", "reason": "Mail domain mentioned in email "
                            "address is unknown"}]
    s["unsubscribes"] = [{"created": LATER, "email": "r5@example.org"},
                         {"created": 1_000_000_000, "email": "r6@example.org"}]   # before r6 subscribed
    yield bounce_config, engine
    engine.dispose()


def test_each_list_goes_through_the_policy_once(cli, synced, sendgrid_server):
    config, engine = synced
    result = cli("--config", config, "bounces", "sync-sendgrid", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["lists"] == {"bounces": 602, "blocks": 1, "spam_reports": 1, "invalid_emails": 1,
                                "unsubscribes": 2}
    assert (summary["unknown"], summary["stored"], summary["changed"]) == (600, 7, 4)
    assert any("offset=500" in path for path in sendgrid_server.suppression_requests)
    assert statuses(engine) == {"r0@example.org": "bounced", "r1@example.org": None, "r2@example.org": None,
                                "r3@example.org": "complained", "r4@example.org": "bounced",
                                "r5@example.org": None, "r6@example.org": None,  "r7@example.org": None}
    from subscribers import store

    with engine.connect() as conn:
        r5 = store.memberships_of(conn, 6)
    assert [m.status for m in r5] == ["unsubscribed"]
    assert sorted((t, s) for _, t, s, *_ in events(engine)) == sorted(
        [("bounced", "hard"), ("bounced", "soft"), ("blocked", None), ("complained", None), ("bounced", "hard"),
         ("unsubscribed", None), ("unsubscribed", None)])
    again = json.loads(cli("--config", config, "bounces", "sync-sendgrid", "--json").out)
    assert (again["stored"], again["duplicates"], again["changed"]) == (0, 7, 0)


def test_dry_run_changes_nothing(cli, synced):
    config, engine = synced
    result = cli("--config", config, "bounces", "sync-sendgrid", "--dry-run")
    assert result.code == 0 and "Would apply: bounces 602" in result.out
    assert events(engine) == []


def test_a_refused_api_key_is_one_clear_line(cli, synced, monkeypatch):
    config, _ = synced
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    result = cli("--config", config, "bounces", "sync-sendgrid")
    assert result.code == 1
    assert result.err.startswith("error: sendgrid: refused the API key (status 401)")
