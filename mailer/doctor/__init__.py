"""`mailer doctor`: the settings -> the sender's checks before a first send, each pass / warn / fail.

`checks.py` runs them in order and says what to do about each; `records.py` reads the DNS side
(SPF, DKIM, DMARC, MX) through mailer/resolver.py; `reach.py` knocks on the doors the send and
the readers use (the relay or SendGrid, the one-click route, the bounce mailbox, the key file).
Why each check exists and what the providers ask for: docs/deliverability.md.
"""
