"""The whole exception tree of the pipeline, in one place.

    MailerError                 anything the person running `mailer` caused or must act on
      IssueSourceError          a malformed issue file: file, line, what is wrong
      ComposeError              template / MJML / inlining failure: template and line
      DeliveryError             backend, status code, provider's words
        TemporaryDelivery       network, timeout, 429, 5xx, SMTP 4xx: retry later
        PermanentDelivery       4xx, SMTP 5xx: do not retry
      SignatureError            a webhook or token that does not verify
      SendError                 a send run that cannot start or go on (empty list, already sent...)
      AdminUserError            `mailer admin` users: a bad name, a short password, unknown or taken
    ConfigError                 at start-up; deliberately outside MailerError

    subscribers.errors.SubscriberError   the list store's own tree (subscribers never imports mailer);
                                          the CLI reports it exactly like a MailerError.

The CLI turns any of these into one clear line and a non-zero exit code; a traceback is a bug.
Library errors are translated at one boundary per stage or backend, chained with `from exc`.
"""

from __future__ import annotations


class MailerError(Exception):
    """Base of every error the pipeline reports to the person who caused it."""

    exit_code = 1


class IssueSourceError(MailerError):
    """A malformed issue file; `path` and `line` say where."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class ComposeError(MailerError):
    """A template, MJML or inlining failure; `template` and `line` say where."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        self.template, self.line, self.message = template, line, message
        where = f"{template}:{line}: " if template and line else (f"{template}: " if template else "")
        super().__init__(f"{where}{message}")


class DeliveryError(MailerError):
    """A backend could not deliver; `backend`, `status` and the provider's own `detail`."""

    def __init__(self, message: str, *, backend: str, status: int | str | None = None,
                 detail: str | None = None):
        self.backend, self.status, self.detail, self.message = backend, status, detail, message
        parts = [f"{backend}: {message}"]
        if status is not None:
            parts.append(f"(status {status})")
        if detail:
            parts.append(f"- {detail}")
        super().__init__(" ".join(parts))


class TemporaryDelivery(DeliveryError):
    """Network, timeout, 429, 5xx, SMTP 4xx: the same request may succeed later."""


class PermanentDelivery(DeliveryError):
    """4xx, SMTP 5xx, bad credentials: do not retry unchanged."""


class SignatureError(MailerError):
    """A webhook post or a token that does not verify."""


class SendError(MailerError):
    """A send run that cannot start or go on."""


class AdminUserError(MailerError):
    """An admin user that cannot be added or removed as asked (mailer/admin_users.py)."""


class ConfigError(Exception):
    """A missing or wrong setting; the message names the TOML path (e.g. `[delivery] backend`)."""

    exit_code = 2
