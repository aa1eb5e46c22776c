"""The delivery backends' names, in one place: `[delivery] backend`, `mailer send --backend` and
mailer.deliver all take one of these. Kept apart so the CLI can name them without loading the
config module at start-up."""

BACKENDS = ("outbox", "smtp", "sendgrid")
