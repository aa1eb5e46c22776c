"""The gate before any delivery: an issue's name or file -> composed and linted, or refused.

    path = issue_path("2024-12", settings)              # a name or a file, as every command takes it
    issue, composed, report = gate(path, settings)      # the editors' gate: shows the report
    composed = compose_checked(path, settings)          # the same gate, one line when refused

Every command and process that delivers (send, its dry run, proof, a worker, the scheduler) goes
through here first, before it touches a backend or the send ledger, so a refused issue leaves no
trace anywhere.
"""

from __future__ import annotations

from pathlib import Path

from mailer.compose.lint import LintReport, lint
from mailer.compose.render import compose, templates_dir
from mailer.compose.source import Issue, read_issue
from mailer.config import Settings
from mailer.errors import LintFailed
from mailer.model import ComposedIssue


def issue_path(ref: str, settings: Settings) -> Path:
    """ISSUE as the commands take it: a file (issues/2024-12.md) or a name (2024-12)."""
    path = Path(ref)
    if not path.exists() and not ref.endswith(".md"):
        path = settings.compose.issues_dir / f"{ref}.md"
    return path


def gate(path, settings: Settings, *, proof: bool = False, show=None,
         language: str | None = None) -> tuple[Issue, ComposedIssue, LintReport]:
    """Compose the issue file once (its footer in `language`, the list's: None for [newsletter]
    language), lint it, `show` the report; raise LintFailed on any error.

    Returns (issue, composed, report).
    """
    issue = read_issue(path)
    composed = compose(issue, settings, proof=proof, language=language)
    report = lint(issue, composed, templates_dir(settings))
    if show is not None:
        show(report.render(str(path)))
    if report.errors:
        raise LintFailed(f"{path}: {len(report.errors)} lint error(s) in the report above; fix them "
                         "and run the command again (nothing was sent)", report)
    return issue, composed, report


def compose_checked(path: Path, settings: Settings, language: str | None = None) -> ComposedIssue:
    """The gate for a process nobody watches (a worker, the scheduler): the composed issue, or
    LintFailed whose one line names the first errors."""
    try:
        return gate(path, settings, language=language)[1]
    except LintFailed as exc:
        errors = [str(finding) for finding in exc.report.errors]
        listed = "; ".join(errors[:3]) + ("; ..." if len(errors) > 3 else "")
        raise LintFailed(f"{Path(path).stem} has {len(errors)} lint error(s), fix them first "
                         f"(`mailer issue build {path}` shows them): {listed}", exc.report) from None
