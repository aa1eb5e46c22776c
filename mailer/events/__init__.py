"""Stage 7: raw inbound signals -> [DeliveryEvent] -> subscriber states (the type lives in
subscribers.events, the policy in subscribers.policy).

Parsers (pure, no I/O): bounce_mail (one returned message), sendgrid_webhook (one signed post).
Sources and drivers: mailsource (mbox, Maildir, .eml), imap ([bounces.imap]), bounces (scan:
read -> parse -> trust -> apply), suppressions (SendGrid's suppression lists).
"""

from subscribers.events import DeliveryEvent, EventType, Severity

__all__ = ["DeliveryEvent", "EventType", "Severity"]
