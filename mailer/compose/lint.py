"""The lint report: Issue + ComposedIssue -> findings an editor can act on before sending.

Rules (docs/mail-facts.md, "HTML email" and "Privacy and the law"):
- size: Gmail clips HTML above ~102 KB, hiding the footer and its unsubscribe link (error);
  above 90 KB is too close, since an ESP's click tracking adds to it (warning);
- alt: an image without alt text (WCAG 1.1.1; Outlook blocks images by default) (warning);
- image: an http:// image (mixed content: most clients block it or warn), or an image inside a
  line of text, which Outlook shows at its full size (warning);
- preheader: longer than ~90 characters, which inboxes cut off (warning);
- unresolved: a template variable left in the output (anything in `{{ }}` but the merge fields
  of mailer.model.MERGE_FIELDS), a marker that is misspelt or in the wrong part, or no
  unsubscribe marker at all (error);
- empty: a section or story with nothing under its heading (warning);
- link: a link that is neither http(s) nor mailto (warning). The per-recipient markers
  (`%%unsubscribe_url:html%%`...) are expected in hrefs and filled per recipient later.
Each finding names the issue-file line it comes from when it can find it, else the template's.

The gate that every command that delivers runs first is mailer/compose/gate.py.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lxml import etree

from mailer.compose.render import (
    TEMPLATE,
    shown_path,
    template_files,
)
from mailer.errors import where
from mailer.model import FIELDS, MARKER, MERGE_FIELDS, Part, fill, marker

PREHEADER_CHARS = 90         # what inboxes show after the subject, roughly (docs/mail-facts.md)
CLIP_BYTES = 102_000          # Gmail's ~102 KB (community-measured, not published by Google)
WARN_BYTES = 90_000           # the margin docs/mail-facts.md explains
# Realistic per-recipient values for measuring: the size that counts is after personalizing.
SIZING_VALUES = {"name": "N" * 40, "first_name": "F" * 20, "email": "e" * 40 + "@example.org",
                 "unsubscribe_url": "https://news.example.org/unsubscribe/" + "t" * 120,
                 "archive_url": "https://news.example.org/archive/2024-11"}
_JINJA_LEFTOVER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_MARKER_LIKE = re.compile(r"%%[A-Za-z_][\w:.-]{0,40}%%")


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str                  # "size", "alt", "unresolved", "empty", "link"
    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.severity.value}: {where(self.path, self.line)}{self.message}"


@dataclass(frozen=True)
class LintReport:
    html_bytes: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def render(self, source: str) -> str:
        size = (f"size: {self.html_bytes / 1000:.1f} KB of HTML per recipient; Gmail clips above "
                f"~{CLIP_BYTES // 1000} KB")
        lines = [f"Lint report for {source}", f"  {size}"]
        lines += [f"  {finding}" for finding in self.findings]
        lines.append(f"  {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def lint(issue, composed, templates_dir: str | Path) -> LintReport:
    """Every rule over one composed issue; `issue` is stage 1's Issue, for lines and sections."""
    locate = _Locator(issue.path, Path(templates_dir))
    tree = etree.fromstring(composed.html, etree.HTMLParser())
    size = len(fill_for_sizing(composed.html).encode("utf-8"))
    findings = [*check_size(size), *check_alt(tree, locate), *check_images(tree, locate),
                *check_unresolved(composed, locate), *check_empty(issue), *check_links(tree, locate),
                *check_preheader(issue)]
    return LintReport(size, tuple(sorted(findings, key=lambda f: (f.path or "", f.line or 0))))


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


def check_alt(tree, locate) -> list[Finding]:
    findings = []
    for img in tree.iter("img"):
        if not (img.get("alt") or "").strip():   # Markdown's ![](...) gives alt=""
            src = img.get("src", "")
            findings.append(Finding(Severity.WARNING, "alt", f"image without alt text: {src} "
                                    "(write ![what it shows](...); Outlook hides images by default)",
                                    *locate(src)))
    return findings


def check_images(tree, locate) -> list[Finding]:
    findings = []
    for img in tree.iter("img"):
        src = img.get("src", "")
        if src.lower().startswith("http://"):
            findings.append(Finding(Severity.WARNING, "image", f"image {src} is http://: most email "
                                    "clients block or flag it (mixed content); use https://",
                                    *locate(src)))
        if "max-width:100%" in (img.get("style") or "").replace(" ", "") and img.get("width") is None:
            findings.append(Finding(Severity.WARNING, "image", f"image {src} is inside a line of text: "
                                    "Outlook shows it at its full size; put it on a line of its own",
                                    *locate(src)))
    return findings


def check_preheader(issue) -> list[Finding]:
    shown = MARKER["html"].sub(lambda m: "N" * 10, issue.preheader)
    if len(shown) <= PREHEADER_CHARS:
        return []
    return [Finding(Severity.WARNING, "preheader", f"the preheader has {len(shown)} characters: "
                    f"inboxes show about {PREHEADER_CHARS}, so the end will be cut off",
                    str(issue.path), _setting_line(issue.path, "preheader"))]


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


def check_links(tree, locate) -> list[Finding]:
    markers = {marker(name, "html") for name in FIELDS}
    findings = []
    for a in tree.iter("a"):
        href = (a.get("href") or "").strip()
        if href in markers or re.match(r"(?i)^(https?://[^\s/]+|mailto:[^\s@]+@[^\s@]+)", href):
            continue
        findings.append(Finding(Severity.WARNING, "link", f"link {href!r} is neither http(s) nor "
                                "mailto: readers cannot open it (write https://... in full)",
                                *locate(f"]({href})", href or "]()")))
    return findings


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

    def __call__(self, *needles: str) -> tuple[str | None, int | None]:
        for needle in filter(None, needles):
            for path in self.files:
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
