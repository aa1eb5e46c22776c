"""Stage 1: issues/YYYY-MM.md -> Issue (front matter checked, Markdown body split into sections).

An issue file is TOML front matter between two `+++` lines (the Hugo convention; TOML because
config.toml is TOML too, tomllib is in the standard library and its errors carry line numbers),
then a Markdown body (CommonMark, raw HTML off):

    # Title                      exactly one, first
    intro paragraphs             optional
    ## Section                   one heading per section
    ### Story                    stories inside a section
    - Item text (Source)         list items; a trailing "(...)" is the item's source
    ***                          what follows is the masthead (colophon), still in ## sections
    <!-- editor's note -->       dropped

HTML fragments in the model come from markdown-it with raw HTML disabled, so they are escaped
already; every problem is an IssueSourceError naming the file and line.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mailer.errors import IssueSourceError

FENCE = "+++"
REQUIRED = {"subject": str, "preheader": str, "date": dt.date}
# The one rule for an issue's name (its file name without .md): it names the ledger's row
# (sends.issue, 64 characters), the archive URL /archive/NAME, the outbox files, the X-Mailer-Issue
# header and SendGrid's custom_args. Everything that takes a name calls `issue_name_problem`.
ISSUE_NAME_MAX = 64
SLUG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*$")
COMMENT = re.compile(r"<!--.*?-->", re.S)
# "Item text (Source)": the last parenthesis, unless it is a Markdown link's "](url)".
SOURCE = re.compile(r"^(?P<text>.*?\S)\s*(?<!\])\((?P<source>[^()]+)\)\s*$", re.S)


@dataclass(frozen=True)
class Paragraph:
    html: str
    line: int


@dataclass(frozen=True)
class Item:
    html: str                  # the item without its source
    source_html: str | None    # "Reuters" for "... (Reuters)"
    line: int


@dataclass(frozen=True)
class ItemList:
    items: tuple[Item, ...]
    ordered: bool
    line: int


@dataclass(frozen=True)
class Story:
    title_html: str
    blocks: tuple[Paragraph | ItemList, ...]
    line: int


@dataclass(frozen=True)
class Section:
    title_html: str
    blocks: tuple[Paragraph | ItemList | Story, ...]
    line: int
    colophon: bool = False     # after the `***` line: masthead, credits


@dataclass(frozen=True)
class Issue:
    path: Path
    slug: str                  # the file name without .md: "2024-11"
    subject: str
    preheader: str
    date: dt.date
    title_html: str
    intro: tuple[Paragraph, ...]
    sections: tuple[Section, ...]
    meta: dict = field(default_factory=dict)   # the whole front matter, for later stages

    @property
    def body_sections(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if not s.colophon)

    @property
    def colophon(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.colophon)


def issue_name_problem(name: str) -> str | None:
    """What is wrong with `name` as an issue's name, or None when it is a good one."""
    if not SLUG.match(name) or name.endswith("."):
        return "must be letters, digits, '-', '_' or '.' (no '..'), starting with a letter or digit"
    if len(name) > ISSUE_NAME_MAX:
        return f"must be at most {ISSUE_NAME_MAX} characters (it has {len(name)})"
    return None


def valid_issue_name(name: str) -> bool:
    return issue_name_problem(name) is None


def read_issue(path: str | Path) -> Issue:
    """Read and check one issue file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IssueSourceError("no such issue file", path=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IssueSourceError("this line is not UTF-8 text (save the file as UTF-8)", path=str(path),
                               line=data.count(b"\n", 0, exc.start) + 1) from exc
    return parse_issue(text, path)


def parse_issue(text: str, path: str | Path) -> Issue:
    path = Path(path)
    slug = path.stem
    problem = issue_name_problem(slug)
    if problem:
        raise IssueSourceError(f"the file name {path.name!r} {problem}: it names the issue in the ledger and "
                               "the archive, e.g. 2024-11.md", path=str(path))
    meta, body_start = _front_matter(text, str(path))
    lines = text.splitlines()
    body = "\n".join(lines[body_start:])
    title, intro, sections = _Body(str(path), body_start).parse(body)
    return Issue(path=path, slug=slug, subject=meta["subject"], preheader=meta["preheader"],
                 date=meta["date"], title_html=title, intro=intro, sections=sections, meta=meta)


# --- front matter ---------------------------------------------------------------------------

def _front_matter(text: str, where: str) -> tuple[dict, int]:
    """The TOML between the `+++` lines, checked; and the index of the body's first line."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise IssueSourceError(f"the file must start with a '{FENCE}' line, then the settings "
                               f"(subject, preheader, date), then another '{FENCE}' line",
                               path=where, line=1)
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == FENCE)
    except StopIteration:
        raise IssueSourceError(f"the settings opened here are never closed by a '{FENCE}' line",
                               path=where, line=1) from None
    source = "\n".join(lines[1:end])
    try:
        meta = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(exc, where) from exc
    _check_meta(meta, lines[1:end], where, end)
    return meta, end + 1


def _toml_error(exc: Exception, where: str) -> IssueSourceError:
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
    line = int(found.group(1)) + 1 if found else None      # + 1 for the opening +++ line
    message = message[: found.start()] if found else message
    if "'\\n'" in message:    # tomllib's words for an unterminated string
        message = 'a closing " is missing'
    hint = ' (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'
    return IssueSourceError(f"settings: {message[0].lower()}{message[1:]}{hint}", path=where, line=line)


def _check_meta(meta: dict, lines: list[str], where: str, end: int) -> None:
    def line_of(key: str) -> int:
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        return next((i + 2 for i, text in enumerate(lines) if pattern.match(text)), end + 1)

    for key, kind in REQUIRED.items():
        if key not in meta:
            raise IssueSourceError(f"settings: missing {key} = ... before this '{FENCE}' line",
                                   path=where, line=end + 1)
        value = meta[key]
        if kind is dt.date and (not isinstance(value, dt.date) or isinstance(value, dt.datetime)):
            raise IssueSourceError(f"settings: {key} must be a date like 2024-11-01 (no quotes), "
                                   f"not {value!r}", path=where, line=line_of(key))
        if kind is str and (not isinstance(value, str) or not value.strip()):
            raise IssueSourceError(f'settings: {key} must be non-empty text in "double quotes", '
                                   f"not {value!r}", path=where, line=line_of(key))
    unknown = sorted(set(meta) - set(REQUIRED))
    if unknown:
        raise IssueSourceError(f"settings: unknown key {unknown[0]!r} (known: {', '.join(REQUIRED)})",
                               path=where, line=line_of(unknown[0]))


# --- body ------------------------------------------------------------------------------------

def _markdown():
    from markdown_it import MarkdownIt   # imported here: only stage 1 needs it

    return MarkdownIt("commonmark", {"html": False})


def _blank_comments(body: str) -> str:
    """Drop <!-- notes -->, keeping their line breaks so line numbers stay right."""
    return COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), body)


class _Body:
    """Walks markdown-it's token stream once, building sections; knows file and line offset."""

    def __init__(self, where: str, offset: int):
        self.where, self.offset = where, offset
        self.md = _markdown()

    def error(self, message: str, token) -> IssueSourceError:
        line = self.offset + token.map[0] + 1 if token is not None and token.map else None
        return IssueSourceError(message, path=self.where, line=line)

    def line(self, token) -> int:
        return self.offset + token.map[0] + 1

    def inline(self, markdown: str) -> str:
        env: dict = {}
        return self.md.renderer.renderInline(self.md.parseInline(markdown, env)[0].children,
                                             self.md.options, env).strip()

    def parse(self, body: str):
        tokens = self.md.parse(_blank_comments(body))
        self.tokens, self.i = tokens, 0
        first = tokens[0] if tokens else None
        if first is None or first.type != "heading_open" or first.tag != "h1":
            raise self.error("the body must start with the issue's title as '# Title'", first) \
                if first is not None else IssueSourceError(
                    "the body is empty: it needs at least '# Title'", path=self.where,
                    line=self.offset + 1)
        title = self.heading()
        intro = tuple(self.blocks(allow_story=False, context="the introduction"))
        sections, colophon = [], False
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.type == "hr":
                if colophon:
                    raise self.error("only one '***' line is allowed (it starts the masthead)", tok)
                colophon, self.i = True, self.i + 1
                continue
            if tok.type != "heading_open" or tok.tag != "h2":
                raise self.error(self.misplaced(tok, colophon), tok)
            line, heading = self.line(tok), self.heading()
            blocks = tuple(self.blocks(allow_story=True, context="a section"))
            sections.append(Section(heading, blocks, line, colophon))
        return title, intro, tuple(sections)

    def misplaced(self, tok, colophon: bool) -> str:
        if tok.type == "heading_open" and tok.tag == "h1":
            return "only one '# Title' is allowed; use '## ' for section headings"
        if colophon:
            return "after the '***' line, start the masthead with a '## ' heading"
        return "a '### ' story must be inside a '## ' section"

    def heading(self) -> str:
        """Consume heading_open, inline, heading_close; return the heading's HTML."""
        inline = self.tokens[self.i + 1]
        self.i += 3
        if not inline.content.strip():
            raise self.error("this heading is empty", inline)
        return self.inline(inline.content)

    def blocks(self, *, allow_story: bool, context: str):
        """Paragraphs, lists and (in sections) stories, up to the next ## / # / ***."""
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.type == "hr" or (tok.type == "heading_open" and tok.tag in ("h1", "h2")):
                return
            if tok.type == "heading_open" and tok.tag == "h3" and allow_story:
                line, title = self.line(tok), self.heading()
                yield Story(title, tuple(self.story_blocks()), line)
            elif tok.type == "heading_open" and tok.tag == "h3":
                raise self.error(f"a '### ' story cannot be in {context}; put it under a '## ' section", tok)
            else:
                yield self.block(tok)

    def story_blocks(self):
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.type == "hr" or (tok.type == "heading_open" and tok.tag in ("h1", "h2", "h3")):
                return
            yield self.block(tok)

    def block(self, tok):
        if tok.type == "paragraph_open":
            inline = self.tokens[self.i + 1]
            self.i += 3
            return Paragraph(self.inline(inline.content), self.line(tok))
        if tok.type in ("bullet_list_open", "ordered_list_open"):
            return self.item_list(tok)
        if tok.type == "heading_open":
            raise self.error("headings go down to '### ' (stories); use **bold** below that", tok)
        raise self.error(f"{_KINDS.get(tok.type, tok.type)} cannot be shown in the email; use "
                         "paragraphs, '## ' sections, '### ' stories and '- ' lists", tok)

    def item_list(self, opening) -> ItemList:
        close = opening.type.replace("_open", "_close")
        items, self.i = [], self.i + 1
        while self.tokens[self.i].type != close:
            tok = self.tokens[self.i]                      # list_item_open
            inner = self.tokens[self.i + 1]
            if inner.type != "paragraph_open" or self.tokens[self.i + 4].type != "list_item_close":
                raise self.error("a list item must be one paragraph (no nested lists or blocks)", tok)
            items.append(self.item(self.tokens[self.i + 2].content, self.line(tok)))
            self.i += 5
        self.i += 1
        return ItemList(tuple(items), opening.type == "ordered_list_open", self.line(opening))

    def item(self, markdown: str, line: int) -> Item:
        found = SOURCE.match(markdown)
        if not found:
            return Item(self.inline(markdown), None, line)
        return Item(self.inline(found["text"]), self.inline(found["source"]), line)


_KINDS = {"fence": "a code block", "code_block": "an indented code block (4 spaces)",
          "blockquote_open": "a '>' quote", "html_block": "raw HTML", "table_open": "a table"}
