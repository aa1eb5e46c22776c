"""mailer/reports/figures.py and mailer/schedule/status.py on their own: the edges the surfaces'
tests (tests/web/test_figures_agree.py, tests/test_schedule_cli.py) do not reach."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

T0 = datetime(2024, 11, 5, 14, 0, tzinfo=UTC)


def _store(tmp_path):
    from mailer.migrate import connect
    from mailer.send.ledger import deliveries, sends
    from subscribers import store

    engine = connect(f"sqlite:///{tmp_path / 'f.db'}")
    with engine.begin() as conn:
        crank = store.create_list(conn, "crank").id
        ids = [store.add_subscriber(conn, f"r{i}@example.org", crank).subscriber_id for i in range(5)]
        send_id = conn.execute(insert(sends).values(
            issue="2024-11", list_id=crank, list_name="crank", subject="s", backend="smtp", status="stopped",
            total=5, started_at=T0).returning(sends.c.id)).scalar()
        states = ["failed", "failed", "failed", "sending", "pending"]
        conn.execute(insert(deliveries), [{"send_id": send_id, "subscriber_id": sid, "state": state, "attempts": 1,
                                           "last_error": "550 5.1.1 no such user" if state == "failed" else None,
                                           "updated_at": T0}
                                          for sid, state in zip(ids, states, strict=True)])
    return engine


def test_failure_lines_name_the_newest_and_count_the_rest(tmp_path):
    from mailer.reports import figures

    engine = _store(tmp_path)
    with engine.connect() as conn:
        lines = figures.failure_lines(conn, "2024-11", "crank", limit=2)
        fig = figures.of_issue(conn, "2024-11")
        assert figures.failure_lines(conn, "2024-11", "other") == []
    assert lines[0] == "failed readers (3), newest first:"
    assert lines[1] == "  r2@example.org (crank) 2024-11-05 14:00 UTC: 550 5.1.1 no such user"
    assert lines[-1] == "  ... and 1 more (`mailer report 2024-11 --json` lists them all)"
    assert (fig.failed, fig.in_doubt, fig.pending, fig.delivered, fig.status) == (3, 1, 1, None, "stopped")
    assert fig.shown("delivered") == "not reported" and fig.rates["delivered"] is None
    engine.dispose()


def test_reach_counts_a_started_send_and_knows_a_missing_list(tmp_path):
    from mailer.schedule import status

    engine = _store(tmp_path)
    with engine.connect() as conn:
        started = status.reach(conn, "2024-11", "crank")
        fresh = status.reach(conn, "2024-12", "crank")
        assert status.reach(conn, "2024-11", "nosuch") is None
    assert (started.readers, started.have) == (2, 0)     # in flight and pending; nobody has it yet
    assert (fresh.readers, fresh.have) == (5, 0)
    engine.dispose()
