"""Web service: verified SendGrid events -> subscribers.policy.ingest, in one transaction per post.

A post of 1,000 events is one transaction: addresses looked up in chunks, events inserted in bulk
(insert-or-ignore on UNIQUE(event_id, source)), the policy applied to the new ones only. If it
fails, nothing is kept and SendGrid, seeing a 5xx, posts the batch again later.
"""

from __future__ import annotations

from subscribers.policy import ingest


def ingest_events(web, events, limits, list_for=None) -> dict:
    if not events:
        return {"stored": 0, "duplicates": 0, "unknown": 0, "changed": 0}
    return web.write(lambda conn: ingest(conn, events, limits, list_for=list_for).as_dict())
