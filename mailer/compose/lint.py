"""The lint report: Issue + ComposedIssue -> findings an editor can act on before sending.

Rules (docs/mail-facts.md, "HTML email" and "Privacy and the law"; docs/editor.md lists them as
the editor reads them):
- size: Gmail clips HTML above ~102 KB, hiding the footer and its unsubscribe link (error);
  above 90 KB is too close, since an ESP's click tracking adds to it (warning);
- subject: longer than 78 characters, which inboxes cut off (warning); preheader: longer than
  ~90 characters (warning);
- link syntax: Markdown link syntax that reached the email as typed (`[words(https://…)`,
  `[words][ref]` without a definition, a space or a script in the address), with what was meant
  (error; mailer/compose/links.py);
- link: an address that opens nothing from an email (relative, an anchor, javascript:, data:, a
  host that cannot exist) (error); http://, a link shortener, the same address under different
  words, a link missing from the text part (warning). The per-recipient markers
  (`%%unsubscribe_url:html%%`...) are expected in hrefs and filled per recipient later;
- image: a data: picture or one without a full address (error); an http:// picture, or one inside a
  line of text, which Outlook shows at its full size (warning);
- accessibility (mailer/compose/accessibility.py): alt text missing or meaningless, text below
  WCAG AA contrast in the light or the dark colour scheme, a link without words, no language on
  the document (errors); link words that say nothing, headings out of order (warnings);
- unresolved: a template variable left in the output (anything in `{{ }}` but the merge fields
  of mailer.model.MERGE_FIELDS), a marker that is misspelt or in the wrong part, or no
  unsubscribe marker at all (error);
- empty: a section or story with nothing under its heading (warning).
Each finding names the issue-file line it comes from when it can find it, else the template's.

The gate that every command that delivers runs first is mailer/compose/gate.py.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from mailer.compose import accessibility, links
from mailer.compose.findings import Finding, Problem, Severity
from mailer.compose.render import (
    TEMPLATE,
    shown_path,
    template_files,
)
from mailer.model import MARKER, MERGE_FIELDS, Part, as_written, fill, marker

__all__ = ["CLIP_BYTES", "Finding", "LintReport", "Severity", "fill_for_sizing", "lint"]

PREHEADER_CHARS = 90         # what inboxes show after the subject, roughly (docs/mail-facts.md)
SUBJECT_CHARS = 78           # what most inboxes show of a subject (docs/mail-facts.md)
MARKER_CHARS = 10            # a merge field's length when counting a subject or preheader
CLIP_BYTES = 102_000          # Gmail's ~102 KB (community-measured, not published by Google)
WARN_BYTES = 90_000           # the margin docs/mail-facts.md explains
# Realistic per-recipient values for measuring: the size that counts is after personalizing.
SIZING_VALUES = {"name": "N" * 40, "first_name": "F" * 20, "email": "e" * 40 + "@example.org",
                 "unsubscribe_url": "https://news.example.org/unsubscribe/" + "t" * 120,
                 "archive_url": "https://news.example.org/archive/2024-11"}
_JINJA_LEFTOVER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_MARKER_LIKE = re.compile(r"%%[A-Za-z_][\w:.-]{0,40}%%")


@dataclass(frozen=True)
class LintReport:
    html_bytes: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    subject: str = ""          # as the editor wrote it (merge fields as {{ }}), quotes made typographic
    preheader: str = ""

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def render(self, source: str) -> str:
        size = (f"size: {self.html_bytes / 1000:.1f} KB of HTML per recipient; Gmail clips above "
                f"~{CLIP_BYTES // 1000} KB")
        lines = [f"Lint report for {source}"]
        lines += [f"  {name}: {text} ({shown_length(text)} characters)"
                  for name, text in (("subject", self.subject), ("preheader", self.preheader)) if text]
        lines.append(f"  {size}")
        lines += [f"  {finding}" for finding in self.findings]
        lines.append(f"  {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def lint(issue, composed, templates_dir: str | Path, *, online: bool = False) -> LintReport:
    """Every rule over one composed issue; `issue` is stage 1's Issue, for lines and sections.
    `online`: also ask each linked web address whether it is there (`issue build --check-links`)."""
    locate = _Locator(issue.path, Path(templates_dir))
    tree = etree.fromstring(composed.html, etree.HTMLParser())
    size = len(fill_for_sizing(composed.html).encode("utf-8"))
    problems = [*check_link_syntax(issue), *check_links(tree), *check_same_address(tree),
                *check_text_part(tree, composed.text), *check_images(tree), *accessibility.audit(tree, is_ours)]
    if online:
        # imported here: urllib.request and its HTTP, TLS and email modules add about 25 ms to
        # every `issue build` and send, which never fetch anything (BENCHMARKS.md, compose)
        from mailer.compose import linkcheck

        problems += linkcheck.check_links(href for href, _words in _anchors(tree))
    findings = [*check_size(size), *check_unresolved(composed, locate), *check_empty(issue),
                *check_lengths(issue), *(locate.finding(p) for p in problems)]
    return LintReport(size, tuple(sorted(findings, key=lambda f: (f.path or "", f.line or 0))),
                      as_written(issue.subject), as_written(issue.preheader))


def shown_length(text: str) -> int:
    """A subject's or preheader's length as readers see it: a merge field counts 10 characters."""
    return len(re.sub(r"\{\{.*?\}\}", "N" * MARKER_CHARS, text))


def is_ours(href: str) -> bool:
    """A link the templates make from a per-recipient marker (unsubscribe, archive...)."""
    return MARKER["html"].fullmatch(href.strip()) is not None


def fill_for_sizing(html: str) -> str:
    """The HTML with sizing values in the markers (mailer.model.fill, as every stage fills them)."""
    return fill(html, SIZING_VALUES, "html")


def check_size(size: int) -> list[Finding]:
    if size > CLIP_BYTES:
        return [Finding(Severity.ERROR, "size", f"the HTML is {size / 1000:.1f} KB: Gmail clips it "
                        f"above ~{CLIP_BYTES // 1000} KB, hiding the footer and unsubscribe link; "
                        "shorten the issue")]
    if size > WARN_BYTES:
        return [Finding(Severity.WARNING, "size", f"the HTML is {size / 1000:.1f} KB, close to "
                        f"Gmail's ~{CLIP_BYTES // 1000} KB clipping limit (tracking links add more)")]
    return []


def check_images(tree) -> list[Problem]:
    problems = []
    for img in tree.iter("img"):
        src = img.get("src", "")
        verdict = links.picture_problem(src)
        if verdict:
            problems.append(Problem(verdict.severity, "image", verdict.message, (src,)))
        if "max-width:100%" in (img.get("style") or "").replace(" ", "") and img.get("width") is None:
            problems.append(Problem(Severity.WARNING, "image", f"image {src} is inside a line of text: "
                                    "Outlook shows it at its full size; put it on a line of its own", (src,)))
    return problems


# What inboxes show of each setting: (the setting, how many characters, the warning's tail).
LENGTHS = (("subject", SUBJECT_CHARS, "most inboxes show about {limit}, so the end will be cut off "
                                      "(put what matters first)"),
           ("preheader", PREHEADER_CHARS, "inboxes show about {limit}, so the end will be cut off"))


def check_lengths(issue) -> list[Finding]:
    """A subject or preheader longer than inboxes show (a warning at the setting's line)."""
    findings = []
    for key, limit, tail in LENGTHS:
        length = shown_length(as_written(getattr(issue, key)))
        if length > limit:
            findings.append(Finding(Severity.WARNING, key, f"the {key} has {length} characters: "
                                    + tail.format(limit=limit), str(issue.path), _setting_line(issue.path, key)))
    return findings


def _setting_line(path: Path, key: str) -> int | None:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return next((n for n, text in enumerate(lines, 1) if re.match(rf"\s*{key}\s*=", text)), None)


_KNOWN = ", ".join("{{ %s }}" % name for name in MERGE_FIELDS)


def check_unresolved(composed, locate) -> list[Finding]:
    findings: list[Finding] = []
    leftovers: dict[tuple[str, str], list[str]] = {}
    parts: list[tuple[Part, str, str]] = [("html", "HTML", composed.html), ("text", "text", composed.text)]
    for part, label, text in parts:
        pattern = MARKER[part]
        for found in _JINJA_LEFTOVER.findall(text):
            leftovers.setdefault(("template variable", found), []).append(label)
        for found in set(_MARKER_LIKE.findall(text)):
            if not pattern.fullmatch(found):
                leftovers.setdefault(("unknown or misplaced marker", found), []).append(label)
        if marker("unsubscribe_url", part) not in text:
            findings.append(Finding(Severity.ERROR, "unresolved", f"the {label} part has no "
                                    f"unsubscribe link ({marker('unsubscribe_url', part)}): "
                                    "CAN-SPAM and Gmail/Yahoo require one", *locate("Unsubscribe")))
    for (kind, found), labels in sorted(leftovers.items()):
        where = " and ".join(dict.fromkeys(labels)) + (" parts" if len(set(labels)) > 1 else " part")
        hint = (f" (the merge fields are {_KNOWN}, with a fallback written "
                '{{ first_name | default("reader") }})') if kind == "template variable" else ""
        findings.append(Finding(Severity.ERROR, "unresolved", f"unresolved {kind} {found} in the "
                                f"{where}{hint}", *locate(found)))
    return findings


def check_empty(issue) -> list[Finding]:
    findings = []
    for section in issue.sections:
        if not section.blocks:
            findings.append(Finding(Severity.WARNING, "empty", f"section {_plain(section.title_html)!r} "
                                    "is empty", str(issue.path), section.line))
        for story in (b for b in section.blocks if hasattr(b, "title_html")):
            if not story.blocks:
                findings.append(Finding(Severity.WARNING, "empty", f"story {_plain(story.title_html)!r}"
                                        " has no text", str(issue.path), story.line))
    return findings


def check_link_syntax(issue) -> list[Problem]:
    """Link syntax left as typed (stage 1 notes it with its line), with what was meant."""
    return [Problem(Severity.ERROR, "link", message, (text,))
            for line, text in issue.stray for message in links.meant(text)
            if line is not None]


def _anchors(tree):
    """(href, words) of every link but the templates' per-recipient ones."""
    for a in tree.iter("a"):
        href = (a.get("href") or "").strip()
        if not is_ours(href):
            words = " ".join("".join(a.itertext()).split()) or \
                " ".join((img.get("alt") or "").strip() for img in a.iter("img"))
            yield href, words


def check_links(tree) -> list[Problem]:
    problems, seen = [], set()
    for href, _words in _anchors(tree):
        verdict = links.address_problem(href)
        if verdict and href not in seen:
            seen.add(href)
            problems.append(Problem(verdict.severity, "link", verdict.message, (f"]({href})", href or "]()")))
    return problems


def check_same_address(tree) -> list[Problem]:
    """The same address under different words: readers (and screen readers, which list the
    links) take different words for different places."""
    words_for: dict[str, list[str]] = {}
    for href, words in _anchors(tree):
        known = words_for.setdefault(href, [])
        if words and words.casefold() not in (w.casefold() for w in known):
            known.append(words)
    return [Problem(Severity.WARNING, "link", f"{href} is linked as {' and as '.join(map(repr, words[:3]))}: "
                    "give the same page the same words, or link each to its own page",
                    (f"]({href})", href))
            for href, words in words_for.items() if len(words) > 1]


def check_text_part(tree, text: str) -> list[Problem]:
    """Every address the HTML links to is in the plain-text part too, for its readers."""
    problems, seen = [], set()
    for a in tree.iter("a"):
        href = (a.get("href") or "").strip()
        shown = MARKER["html"].sub(r"%%\1%%", href)
        if not re.match(r"(?i)(https?|mailto):|%%", shown) or shown in seen:
            continue
        seen.add(shown)
        address = shown[len("mailto:"):] if shown.lower().startswith("mailto:") else shown
        if shown not in text and address not in text:
            problems.append(Problem(Severity.WARNING, "link", f"the text part lacks the link to {href}: "
                                    "readers of the plain-text version cannot follow it",
                                    (f"]({href})", href)))
    return problems


def _plain(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


class _Locator:
    """Finds the first line that contains a piece of output: in the issue file, else a template."""

    def __init__(self, issue_path: Path, templates_dir: Path):
        self.issue_path, self.templates_dir = issue_path, templates_dir.resolve()
        self._lines: dict[Path, list[str]] = {}

    @functools.cached_property
    def files(self) -> list[Path]:
        """The issue, then every template (parsed only when a finding needs a line)."""
        return [self.issue_path, *template_files(TEMPLATE, self.templates_dir)]

    def finding(self, problem: Problem) -> Finding:
        path, line = self(*problem.needles, templates_only=problem.templates_only)
        return Finding(problem.severity, problem.rule, problem.message, path, line)

    def __call__(self, *needles: str, templates_only: bool = False) -> tuple[str | None, int | None]:
        files = self.files[1:] if templates_only else self.files
        for needle in filter(None, needles):
            for path in files:
                for number, text in enumerate(self._read(path), 1):
                    if needle in text:
                        return self._name(path), number
        return None, None

    def _read(self, path: Path) -> list[str]:
        if path not in self._lines:
            self._lines[path] = path.read_text(encoding="utf-8").splitlines()
        return self._lines[path]

    def _name(self, path: Path) -> str:
        return shown_path(path) if path.is_relative_to(self.templates_dir) else str(path)
