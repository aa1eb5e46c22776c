"""SendGrid signed event webhook: verify() and parse() as tables of real posts."""

from __future__ import annotations

import json

import pytest

from mailer.errors import SignatureError
from mailer.events.sendgrid_webhook import parse, verify
from subscribers.events import EventType, Severity
from tests.events.signing import Signer, body

# The vector from sendgrid-python's test/unit/test_eventwebhook.py (docs/mail-facts.md).
VECTOR_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62"
              "gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==")
VECTOR_SIG = ("MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15T"
              "luLtEZtM=")
VECTOR_TS = "1600112502"
VECTOR_BODY = json.dumps([{
    "email": "hello@world.com", "event": "dropped", "reason": "Bounced Address",
    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>", "timestamp": 1600112492,
}], sort_keys=True, separators=(",", ":")).encode() + b"\r\n"
WRONG_KEY = ("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REnt"
             "lo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==")


def test_sendgrid_vector_verifies():
    verify(VECTOR_BODY, VECTOR_SIG, VECTOR_TS, public_key=VECTOR_KEY, max_age_seconds=600,
           now=int(VECTOR_TS) + 5)


REFUSED = [
    # (body, signature, timestamp, key, now offset, message)
    (VECTOR_BODY, VECTOR_SIG, VECTOR_TS, WRONG_KEY, 5, "does not match"),
    (VECTOR_BODY.rstrip(), VECTOR_SIG, VECTOR_TS, VECTOR_KEY, 5, "does not match"),  # trailing CRLF lost
    (b"payload", VECTOR_SIG, VECTOR_TS, VECTOR_KEY, 5, "does not match"),
    (VECTOR_BODY, VECTOR_SIG, VECTOR_TS, VECTOR_KEY, 601, "s old"),                    # stale: replay
    (VECTOR_BODY, VECTOR_SIG, "timestamp", VECTOR_KEY, 5, "not a number"),
    (VECTOR_BODY, "not base64!!", VECTOR_TS, VECTOR_KEY, 5, "malformed"),
    (VECTOR_BODY, None, VECTOR_TS, VECTOR_KEY, 5, "missing"),
    (VECTOR_BODY, VECTOR_SIG, None, VECTOR_KEY, 5, "missing"),
    (VECTOR_BODY, VECTOR_SIG, VECTOR_TS, "", 5, "no \\[webhooks.sendgrid\\] public_key"),
    (VECTOR_BODY, VECTOR_SIG, VECTOR_TS, "bm90IGEga2V5", 5, "not a valid"),
    (b"\xff\xfe", VECTOR_SIG, VECTOR_TS, VECTOR_KEY, 5, "malformed"),
]


@pytest.mark.parametrize("raw, sig, ts, key, offset, message", REFUSED)
def test_refused(raw, sig, ts, key, offset, message):
    with pytest.raises(SignatureError, match=message):
        verify(raw, sig, ts, public_key=key, max_age_seconds=600, now=int(VECTOR_TS) + offset)


def test_own_key_pair_and_tampering():
    signer = Signer()
    raw = body([{"email": "a@example.com", "event": "delivered", "timestamp": 1700000000}])
    headers = signer.sign(raw)
    sig, ts = headers.values()
    verify(raw, sig, ts, public_key=signer.public_key, max_age_seconds=600)
    with pytest.raises(SignatureError):
        verify(raw.replace(b"delivered", b"bounce\x20\x20\x20"), sig, ts,
               public_key=signer.public_key, max_age_seconds=600)


EVENTS = [
    # (SendGrid event fields, expected type, severity)
    ({"event": "delivered"}, EventType.DELIVERED, None),
    ({"event": "processed"}, EventType.PROCESSED, None),
    ({"event": "deferred", "response": "450 try later", "attempt": "2"}, EventType.DEFERRED, None),
    ({"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 user unknown"},
     EventType.BOUNCED, Severity.HARD),
    ({"event": "bounce", "type": "bounce", "status": "5.2.2", "reason": "552 5.2.2 mailbox full"},
     EventType.BOUNCED, Severity.SOFT),
    ({"event": "bounce", "type": "bounce", "status": "4.4.7"}, EventType.BOUNCED, Severity.SOFT),
    ({"event": "bounce", "type": "bounce", "bounce_classification": "Technical Failure"},
     EventType.BOUNCED, Severity.SOFT),
    ({"event": "bounce", "type": "bounce"}, EventType.BOUNCED, Severity.HARD),  # no status at all
    ({"event": "bounce", "type": "blocked", "status": "5.7.1", "bounce_classification": "Reputation"},
     EventType.BLOCKED, None),
    ({"event": "dropped", "reason": "Bounced Address"}, EventType.BOUNCED, Severity.HARD),
    ({"event": "dropped", "reason": "Spam Reporting Address"}, EventType.COMPLAINED, None),
    ({"event": "dropped", "reason": "Unsubscribed Address"}, EventType.UNSUBSCRIBED, None),
    ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, EventType.DROPPED, None),
    ({"event": "spamreport"}, EventType.COMPLAINED, None),
    ({"event": "unsubscribe"}, EventType.UNSUBSCRIBED, None),
    ({"event": "group_unsubscribe", "asm_group_id": 1}, EventType.UNSUBSCRIBED, None),
    ({"event": "group_resubscribe", "asm_group_id": 1}, EventType.RESUBSCRIBED, None),
    ({"event": "open"}, EventType.OPENED, None),
    ({"event": "click", "url": "https://example.org/"}, EventType.CLICKED, None),
    ({"event": "account_status_change"}, EventType.UNKNOWN, None),
    ({}, EventType.UNKNOWN, None),
]


@pytest.mark.parametrize("fields, kind, severity", EVENTS)
def test_event_table(fields, kind, severity):
    item = {"email": " Reader@Example.COM ", "timestamp": 1700000000, "sg_event_id": "e1",
            "sg_message_id": "m1.filter", "mailer_issue": "2024-11", "mailer_ref": "r42", **fields}
    [event] = parse(body([item]))
    assert (event.type, event.severity) == (kind, severity)
    assert event.recipient == "reader@example.com"
    assert event.at.isoformat() == "2023-11-14T22:13:20+00:00"
    assert (event.event_id, event.message_id, event.issue, event.send_ref) == ("e1", "m1.filter", "2024-11", "r42")
    assert event.raw == item


@pytest.mark.parametrize("raw", [b"{}", b"not json", b'"x"', b"\xff"])
def test_malformed_bodies(raw):
    with pytest.raises(ValueError):
        parse(raw)


def test_entries_without_address_are_skipped():
    assert parse(body([{"event": "delivered"}, "x", 3, {"email": ""}, {"email": 5}])) == []
