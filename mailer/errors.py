"""The whole exception tree of the pipeline, in one place.

    MailerError                 anything the person running `mailer` caused or must act on
      IssueSourceError          a malformed issue file: file, line, what is wrong
      ComposeError              template / MJML / inlining failure: template and line
      DeliveryError             backend, status code, provider's words
        TemporaryDelivery       network, timeout, 429, 5xx, SMTP 4xx: retry later
        PermanentDelivery       4xx, SMTP 5xx: do not retry
        AmbiguousDelivery       sent, answer lost (timeout, dropped): maybe taken; never retried as is
      SignatureError            a webhook or token that does not verify
      SendError                 a send run that cannot start or go on (empty list, already sent...)
        SendTakenOver           another runner took this send over (mailer send --take-over)
        SendBusy                another live process runs this send now (a runner, or workers)
        DatabaseUnavailable     the database failed every try for [delivery] database_retry_seconds
      ListIsPrivate             a public form asked for a private list (`mailer lists embed`)
      LintFailed                an issue whose lint report has errors: nothing may be delivered
      ScheduleError             an issue that cannot be (un)scheduled: a bad --at, its state
      BounceSourceError         a bounce mailbox that cannot be read (path, IMAP server, folder)
      ReportError               a report that cannot be made (unknown issue or list)
      AdminUserError            `mailer admin` users: a bad name, a short password, unknown or taken
    ConfigError                 at start-up; deliberately outside MailerError

    subscribers.errors.SubscriberError   the list store's own tree (subscribers never imports mailer);
                                          the CLI reports it exactly like a MailerError.

The CLI turns any of these into one clear line and a non-zero exit code; a traceback is a bug.
Library errors are translated at one boundary per stage or backend, chained with `from exc`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from subscribers.errors import where

if TYPE_CHECKING:
    from mailer.compose.lint import LintReport


class MailerError(Exception):
    """Base of every error the pipeline reports to the person who caused it."""

    exit_code = 1


class IssueSourceError(MailerError):
    """A malformed issue file; `path` and `line` say where."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{where(path, line)}{message}")
        self.problems = [self]

    @classmethod
    def combine(cls, problems: list[IssueSourceError]) -> IssueSourceError:
        """One error for several problems of one file: the first, then one `error:` line each."""
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(first.message, path=first.path, line=first.line)
        combined.args = ("\n".join([str(first), *(f"error: {p}" for p in problems[1:])]),)
        combined.problems = list(problems)
        return combined


class ComposeError(MailerError):
    """A template, MJML or inlining failure; `template` and `line` say where."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        self.template, self.line, self.message = template, line, message
        super().__init__(f"{where(template, line)}{message}")


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


class AmbiguousDelivery(DeliveryError):
    """The request left and no answer came (timeout, connection dropped): the provider may have
    taken it. Never retried automatically; its batch stays in flight for on_interrupted."""


class SignatureError(MailerError):
    """A webhook post or a token that does not verify."""


class SendError(MailerError):
    """A send run that cannot start or go on; `summary` (a dispatch.SendSummary) holds the send's
    counts when it stopped, for `mailer send --json`."""

    summary: object | None = None

    def told(self, summary: object) -> SendError:
        self.summary = summary
        return self


class ListIsPrivate(MailerError):
    """A private list has no public form: readers cannot subscribe to it themselves."""


class LintFailed(MailerError):
    """An issue whose lint report has errors: nothing may be delivered. `report` is that report."""

    def __init__(self, message: str, report: LintReport):
        super().__init__(message)
        self.report = report


class ScheduleError(MailerError):
    """An issue that cannot be scheduled or unscheduled as asked (mailer/schedule/scheduler.py)."""


class BounceSourceError(MailerError):
    """Returned mail that cannot be read: a missing path, an IMAP login or folder that fails."""


class ReportError(MailerError):
    """A report that cannot be made: an issue or list with no send."""


class AdminUserError(MailerError):
    """An admin user that cannot be added or removed as asked (mailer/admin_users.py)."""


class ConfigError(Exception):
    """A missing or wrong setting; the message names the TOML path (e.g. `[delivery] backend`)."""

    exit_code = 2


class SendTakenOver(SendError):
    """Another runner took this send over; this one stops without touching the send's row."""


class SendBusy(SendError):
    """Another live process runs this send now (its runner's heartbeat is fresh, or live workers hold
    batches of it): nothing was changed; wait for it, or join it."""


class DatabaseUnavailable(SendError):
    """A send's statement failed (connection lost, SQLite locked, disk full) on every try for
    [delivery] database_retry_seconds (mailer/send/stall.py); what the provider said is kept."""


class ApiTokenError(MailerError):
    """An API token that cannot be made, found or used as asked (`mailer admin token ...`)."""
