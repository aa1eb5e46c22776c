"""Outgoing webhooks: the outbox's events (subscribers/outbox.py) -> signed POSTs to the
`[[webhooks.out]]` endpoints, retried for 24 hours (docs/api.md, "Outgoing webhooks").

`signing.py`: the Standard Webhooks signature; `delivery.py`: one delivery row per endpoint and
event, the tries and their backoff, and the loop `mailer serve` and `mailer worker` run.
"""
