"""The subscriber store's exception tree (mailer's CLI reports it like a MailerError).

    SubscriberError             anything the admin caused or must act on; exit code 1
      ListNotFound              no list of that name (a typo never creates one)
      ListExists                `lists create` of a name already taken
      InvalidListName           list names are short slugs
      InvalidTag                a tag that is empty, too long or has a comma
      InvalidAddress            not an email address; `.address` and `.reason` (email-validator's words)
      SubscriberNotFound        no subscriber with that address, or not on that list
      SuppressedAddress         unsubscribed, bounced, complained or forgotten: needs an explicit override
      TokenError                a confirm/unsubscribe token that is forged, tampered or for another purpose
      CsvImportError            a file that cannot be read as CSV: `.path` and `.line` say where
      ImportInterrupted         an import stopped part-way: says what was saved and that a rerun finishes
      SecretRequired            the operation needs MAILER_SECRET_KEY (forget hashes)
      StoreError                the database cannot be opened or migrated
"""

from __future__ import annotations

from subscribers.status import Status


def where(path: str | None, line: int | None) -> str:
    """The prefix that names a place in a file, as compilers do: "path:line: ", "path: " or ""
    (mailer's errors and lint findings use it too)."""
    return f"{path}:{line}: " if path and line else (f"{path}: " if path else "")


class SubscriberError(Exception):
    """Base of the store's errors; the CLI prints one line and exits with `exit_code`."""

    exit_code = 1


class ListNotFound(SubscriberError):
    def __init__(self, name: str, near: str | None = None):
        self.name = name
        hint = f"did you mean {near!r}? " if near else ""
        super().__init__(f"no list named {name!r} ({hint}see `mailer lists`; `mailer lists create {name}` makes it)")


class ListExists(SubscriberError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"a list named {name!r} already exists")


class InvalidListName(SubscriberError):
    pass


class InvalidLanguage(SubscriberError):
    """A list's language that is not a language tag."""


class InvalidTag(SubscriberError):
    pass


class InvalidAddress(SubscriberError):
    """`address` as given (whitespace kept) and the `reason`, in email-validator's words."""

    def __init__(self, address: str, reason: str):
        self.address, self.reason = address, reason
        super().__init__(f"invalid address {address!r}: {reason}")


class SubscriberNotFound(SubscriberError):
    pass


class SuppressedAddress(SubscriberError):
    """The address may not be (re)subscribed without an explicit override; `status` says why."""

    def __init__(self, address: str, status: str, list_name: str | None = None, hint: str = ""):
        self.address, self.status, self.list_name = address, status, list_name
        where = f" from list {list_name!r}" if status == Status.UNSUBSCRIBED and list_name else ""
        text = f"{address} is {status}{where}; left as it is"
        super().__init__(f"{text}{'; ' + hint if hint else ''}")


class TokenError(SubscriberError):
    pass


class CsvImportError(SubscriberError):
    """A file that cannot be read as CSV; `path` and `line` (1-based, physical) say where."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{where(path, line)}{message}")


class ImportInterrupted(CsvImportError):
    """An import that failed part-way; `.cause` is the original error and `.summary` the counts of
    what was committed before it (a CsvImportError cause keeps its `.path` and `.line`)."""

    def __init__(self, cause: BaseException, summary):
        self.cause, self.summary = cause, summary
        line = getattr(cause, "line", None)
        again = (f"fix line {line:,} of the file first, then run the same import again"    # (it would stop there again)
                 if isinstance(cause, CsvImportError) and line else "run the same import again")
        saved = (f"the first {summary.rows:,} rows are saved ({summary.imported:,} new, {summary.updated:,} "
                 f"updated, {summary.unchanged:,} unchanged, {summary.suppressed:,} suppressed); {again} "
                 "to finish the job (rows already saved are not added twice)")
        message = cause.message if isinstance(cause, CsvImportError) else str(cause).splitlines()[0]
        super().__init__(f"{message}; {saved}", path=getattr(cause, "path", None), line=getattr(cause, "line", None))
        self.message = f"{message}; {saved}"


class SecretRequired(SubscriberError):
    pass


class StoreError(SubscriberError):
    pass
