"""Stage 1: issues/YYYY-MM.md -> Issue (front matter checked, Markdown body split into sections).

An issue file is TOML front matter between two `+++` lines (the Hugo convention; TOML because
config.toml is TOML too, tomllib is in the standard library and its errors carry line numbers),
then a Markdown body (CommonMark, raw HTML off):

    # Title                      exactly one, first
    intro blocks                 optional: any block; its first paragraph is the standfirst
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
import difflib
import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from mailer.errors import IssueSourceError
from mailer.model import MARKER, MERGE_FIELDS, Part, marker, with_default

FENCE = "+++"
REQUIRED = {"subject": str, "preheader": str, "date": dt.date}
# The lead image at the top of the issue (optional): its URL, what it shows, credit and caption.
OPTIONAL = {"image": str, "image_alt": str, "image_credit": str, "image_caption": str,
            # `archive = false`: never on /archive (docs/readers.md); `true` cannot publish a
            # private list's or a segment's issue.
            "archive": bool}
# The one rule for an issue's name (its file name without .md): it names the ledger's row
# (sends.issue, 64 characters), the archive URL /archive/NAME, the outbox files, the X-Mailer-Issue
# header and SendGrid's custom_args. Everything that takes a name calls `issue_name_problem`.
ISSUE_NAME_MAX = 64
SLUG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*$")
COMMENT = re.compile(r"<!--.*?-->", re.S)
# Text worth a second look: brackets or an address in <> that Markdown left as they were typed.
STRAY = re.compile(r"\[|\]|<\s*www\.")
# "Item text (Source)": the last parenthesis, unless it is a Markdown link's "](url)"; the source
# may itself be a link, "([Financial Times](https://...))".
SOURCE = re.compile(r"^(?P<text>.*?\S)\s*(?<!\])\((?P<source>(?:\[[^\]]*\]\([^()\s]*\)|[^()])+)\)\s*$", re.S)
# Merge fields: {{ first_name }}, {{ first_name | default("reader") }} (straight or curly quotes).
MERGE = re.compile(r"\{\{\s*(?P<field>" + "|".join(MERGE_FIELDS) + r")\s*(?:\|\s*default\s*\(\s*"
                   r"(?:\"(?P<d1>[^\"]*)\"|“(?P<d2>[^”]*)”|'(?P<d3>[^']*)'|‘(?P<d4>[^’]*)’)\s*\)\s*)?\}\}")


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
class Image:
    """A picture on a line of its own: `![what it shows](https://... "caption")`."""
    src: str
    alt: str
    caption_html: str | None
    line: int
    href: str | None = None    # `[![alt](src)](link)`: the picture is a link
    credit_html: str | None = None


@dataclass(frozen=True)
class Table:
    """A Markdown table: header cells, then rows; `align` per column ("left", "right", "center")."""
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Quote:
    """A `> quoted` passage: its paragraphs."""
    paragraphs: tuple[Paragraph, ...]
    line: int


Block = Paragraph | ItemList | Image | Table | Quote


@dataclass(frozen=True)
class Story:
    title_html: str
    blocks: tuple[Block, ...]
    line: int


@dataclass(frozen=True)
class Section:
    title_html: str
    blocks: tuple[Block | Story, ...]
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
    intro: tuple[Block, ...]                   # every block between the title and the first section
    sections: tuple[Section, ...]
    meta: dict = field(default_factory=dict)   # the whole front matter, for later stages
    image: Image | None = None                 # the lead image (front matter `image = ...`)
    # Text that looks like a link or markup that did not take: (line, the literal text); the lint
    # report says what was meant (mailer/compose/links.py).
    stray: tuple[tuple[int, str], ...] = ()

    @property
    def intro_parts(self) -> tuple[tuple[Block, ...], Paragraph | None, tuple[Block, ...]]:
        """(pictures above the standfirst, the standfirst, the rest of the introduction).

        The standfirst is the introduction's first paragraph, when nothing but pictures stands
        before it and it is not a greeting ("Dear {{ first_name }},"); without one, the whole
        introduction is "the rest", set as body text."""
        for index, block in enumerate(self.intro):
            if isinstance(block, Paragraph):
                if is_greeting(block.html):
                    break
                return self.intro[:index], block, self.intro[index + 1:]
            if not isinstance(block, Image):
                break
        return (), None, self.intro

    @property
    def html_subject(self) -> str:
        """The subject for the HTML part's <title>: merge fields as the HTML part's markers."""
        return MARKER["text"].sub(r"%%\1:html%%", self.subject)

    @property
    def body_sections(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if not s.colophon)

    @property
    def colophon(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.colophon)


# A greeting: one short line ending in a comma ("Dear {{ first_name }},", "Hello all,"), or one
# that opens with a salutation ("Hi Ann!"); it is never set as the standfirst.
GREETING_CHARS = 80
_SALUTATION = re.compile(r"(?i)^(dear|hi|hello|hey|greetings|good (morning|afternoon|evening))\b")


def is_greeting(html: str) -> bool:
    text = " ".join(re.sub(r"<[^>]+>", "", MARKER["html"].sub("Reader", html)).split())
    if "\n" in html.strip() or len(text) > GREETING_CHARS:
        return False
    return text.endswith(",") or bool(_SALUTATION.match(text))


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
    problems: list[IssueSourceError] = []
    meta, body_start = _front_matter(text, str(path), problems)
    lines = text.splitlines()
    body = merge_fields("\n".join(lines[body_start:]), "html")
    reader = _Body(str(path), body_start, problems)
    title, intro, sections = reader.parse(body)
    if problems:       # every problem of the file at once, in file order
        raise IssueSourceError.combine(sorted(problems, key=lambda p: p.line or 0))
    image = _lead_image(meta, reader, lines[1:body_start - 1])
    return Issue(path=path, slug=slug, subject=typographic(merge_fields(meta["subject"], "text")),
                 preheader=typographic(merge_fields(meta["preheader"], "html")), date=meta["date"],
                 title_html=title, intro=intro, sections=sections, meta=meta, image=image,
                 stray=tuple(reader.stray))


def archive_setting(path: str | Path) -> bool | None:
    """The `archive = true/false` setting of the issue file at `path`, read from its settings
    alone (the web archive asks on every listing); None when the file, its settings or the
    setting is missing or unreadable."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        fences = [i for i, line in enumerate(lines) if line.strip() == FENCE][:2]
        value = tomllib.loads("\n".join(lines[1:fences[1]])).get("archive") if fences[:1] == [0] else None
    except (OSError, UnicodeDecodeError, IndexError, tomllib.TOMLDecodeError):
        return None
    return value if isinstance(value, bool) else None


def merge_fields(text: str, part: Part) -> str:
    """`{{ first_name | default("reader") }}` -> the marker personalize fills per reader.
    Anything else in `{{ }}` stays as written, and the lint report names it (an error)."""
    def to_marker(found) -> str:
        default = next((d for d in found.group("d1", "d2", "d3", "d4") if d is not None), None)
        name = found["field"] if default is None else with_default(found["field"], default)
        return marker(name, part)

    return MERGE.sub(to_marker, text) if "{{" in text else text


@functools.cache
def _quotes() -> MarkdownIt:
    """markdown-it with nothing but text and its typographic quotes (made on first use)."""
    return MarkdownIt("zero", {"typographer": True}).enable(["smartquotes"])


def typographic(text: str) -> str:
    """Plain text (a subject, a preheader) with the body's typographic quotes, nothing else: “ ” ’."""
    if "'" not in text and '"' not in text:
        return text
    return "".join(child.content for child in _quotes().parseInline(text)[0].children or [])


def _lead_image(meta: dict, reader: _Body, settings: list[str]) -> Image | None:
    if "image" not in meta:
        return None
    inline = {key: reader.inline(meta[key], setting_line(settings, key) or 1) if meta.get(key) else None
              for key in ("image_caption", "image_credit")}
    return Image(meta["image"].strip(), meta.get("image_alt", "").strip(), inline["image_caption"],
                 setting_line(settings, "image") or 1, credit_html=inline["image_credit"])


# --- front matter ---------------------------------------------------------------------------

def _front_matter(text: str, where: str, problems: list) -> tuple[dict, int]:
    """The TOML between the `+++` lines, checked; and the index of the body's first line.
    Problems with single settings are added to `problems`; a file without settings raises."""
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
    settings = lines[1:end]
    meta, broken = _toml(settings, where, problems)
    problems += _check_meta(meta, settings, where, end, broken)
    return meta, end + 1


def _toml(settings: list[str], where: str, problems: list) -> tuple[dict, set[str]]:
    """tomllib stops at the first mistake: each mistake's line is recorded and blanked, and the
    rest read again, so one run names every broken line. Returns the settings that read and the
    names of those whose lines were broken (not reported again as missing)."""
    settings, broken = list(settings), set[str]()
    while True:
        try:
            return tomllib.loads("\n".join(settings)), broken
        except tomllib.TOMLDecodeError as exc:
            index = _error_index(exc, settings)
            problems.append(_toml_error(exc, where, settings, index))
            if index is None:         # nothing more can be read: no setting is reported missing
                return {}, broken | set(REQUIRED)
            key = re.match(r"\s*[\"']?([\w-]+)[\"']?\s*=", settings[index])
            broken |= {key.group(1)} if key else set()
            settings[index] = ""


def _error_index(exc: tomllib.TOMLDecodeError, settings: list[str]) -> int | None:
    """The index in `settings` of the line tomllib's error is about, if it is a line to blank."""
    found = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
    if found:
        index = int(found.group(1)) - 1
    else:      # "(at end of document)": an unterminated multi-line string opened on some line,
        # else something left open on the last line that says anything
        index = next((i for i, line in enumerate(settings) if '"""' in line or "'''" in line),
                     max((i for i, line in enumerate(settings) if line.strip()[:1] not in ("", "#")),
                         default=-1))
    return index if 0 <= index < len(settings) and settings[index].strip() else None


_DATE_LIKE = re.compile(r"^\s*[\"']?([\w-]+)[\"']?\s*=\s*(\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\S*)\s*(#.*)?$")


def _toml_error(exc: Exception, where: str, settings: list[str], index: int | None) -> IssueSourceError:
    message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)$", "", str(exc))
    line = index + 2 if index is not None else None     # + 2: the opening +++ line, 1-based
    date = _DATE_LIKE.match(settings[index]) if index is not None else None
    if date:
        return IssueSourceError(f"settings: {date.group(1)} = {date.group(2)} is not a date"
                                f"{_why_not_a_date(date.group(2))}: write YYYY-MM-DD without quotes, "
                                "e.g. 2024-12-01", path=where, line=line)
    if "'\\n'" in message or message.startswith("Unterminated string"):
        message = 'a closing " is missing'
    hint = ' (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'
    return IssueSourceError(f"settings: {message[0].lower()}{message[1:]}{hint}", path=where, line=line)


def _why_not_a_date(value: str) -> str:
    """ "(month 13 does not exist)" for 2024-13-01, where the reason is plain; else nothing."""
    parts = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", value)
    if not parts:
        return ""
    year, month, day = map(int, parts.groups())
    if not 1 <= month <= 12:
        return f" (there is no month {month})"
    try:
        dt.date(year, month, day)
    except ValueError:
        return f" ({dt.date(year, month, 1):%B} has no day {day})"
    return " (month and day take two digits each)"


def setting_line(settings: list[str], key: str) -> int | None:
    """The file line of `key = ...` among the lines between the +++ lines, or None."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    return next((i + 2 for i, text in enumerate(settings) if pattern.match(text)), None)


def _check_meta(meta: dict, lines: list[str], where: str, end: int,
                broken: set[str]) -> list[IssueSourceError]:
    def line_of(key: str) -> int:
        return setting_line(lines, key) or end + 1

    problems, known = [], {**REQUIRED, **OPTIONAL}
    for key in sorted(set(meta) - set(known), key=line_of):
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}"
        problems.append(IssueSourceError(f"settings: unknown setting {key!r} ({hint})",
                                         path=where, line=line_of(key)))
    for key, kind in known.items():
        if key not in meta:
            if key in REQUIRED and key not in broken:
                problems.append(IssueSourceError(f"settings: missing {key} = ... before this "
                                                 f"'{FENCE}' line", path=where, line=end + 1))
            continue
        value = meta[key]
        if kind is dt.date and (not isinstance(value, dt.date) or isinstance(value, dt.datetime)):
            problems.append(IssueSourceError(f"settings: {key} must be a date like 2024-11-01 (no "
                                             f"quotes), not {value!r}", path=where, line=line_of(key)))
        if kind is bool and not isinstance(value, bool):
            problems.append(IssueSourceError(f"settings: {key} must be true or false (no quotes), not {value!r}",
                                             path=where, line=line_of(key)))
        if kind is str and (not isinstance(value, str) or not value.strip()):
            problems.append(IssueSourceError(f'settings: {key} must be non-empty text in "double '
                                             f'quotes", not {value!r}', path=where, line=line_of(key)))
    for key in ("image_alt", "image_credit", "image_caption"):
        if key in meta and "image" not in meta:
            problems.append(IssueSourceError(f"settings: {key} needs image = \"https://...\" (the "
                                             "lead image's address)", path=where, line=line_of(key)))
    return problems


# --- body ------------------------------------------------------------------------------------

def _markdown():
    # typographer + smartquotes: "straight" quotes and apostrophes become “curly” ones (only
    # those: the other "replacements" would turn (c) and -- into symbols an editor did not write).
    md = MarkdownIt("commonmark", {"html": False, "typographer": True}).enable(["smartquotes", "table"])
    md.add_render_rule("image", _render_inline_image)
    return md


def _render_inline_image(self, tokens, idx, options, env) -> str:
    """An image inside a line of text: never wider than the column, height kept in proportion."""
    token = tokens[idx]
    token.attrs["alt"] = self.renderInlineAsText(token.children or [], options, env)
    token.attrSet("style", "max-width:100%;height:auto;border:0;")
    return self.renderToken(tokens, idx, options, env)


def _blank_comments(body: str) -> str:
    """Drop <!-- notes -->, keeping their line breaks so line numbers stay right."""
    return COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), body)


class _Body:
    """Walks markdown-it's token stream once, building sections; knows file and line offset.

    A problem is recorded in `problems` and its block skipped, so one run names them all."""

    def __init__(self, where: str, offset: int, problems: list):
        self.where, self.offset, self.problems = where, offset, problems
        self.md = _markdown()
        self.env: dict = {}                       # the body's `[ref]: https://...` definitions
        self.stray: list[tuple[int, str]] = []    # (line, text that looks like markup that did not take)

    def error(self, message: str, token) -> IssueSourceError:
        line = self.offset + token.map[0] + 1 if token is not None and token.map else None
        return IssueSourceError(message, path=self.where, line=line)

    def problem(self, message: str, token) -> None:
        """Record a problem and skip the block that `token` opens."""
        self.problems.append(self.error(message, token))
        self.skip()

    def skip(self) -> None:
        tok = self.tokens[self.i]
        self.i += 1
        if tok.nesting == 1:
            while not (self.tokens[self.i].nesting == -1 and self.tokens[self.i].level == tok.level):
                self.i += 1
            self.i += 1

    def line(self, token) -> int:
        return self.offset + token.map[0] + 1

    def inline(self, markdown: str, line: int) -> str:
        """`markdown` (starting on file line `line`) as HTML; text left over from link syntax
        that did not take (`[words](bad address)`, `[words][undefined]`) is noted in `stray`."""
        env = dict(self.env)
        children = self.md.parseInline(markdown, env)[0].children or []
        for child in children:
            if child.type in ("softbreak", "hardbreak"):
                line += 1
            elif child.type == "text" and STRAY.search(child.content):
                self.stray.append((line, child.content))
        return self.md.renderer.renderInline(children, self.md.options, env).strip()

    def parse(self, body: str):
        tokens = self.md.parse(_blank_comments(body), self.env)
        self.tokens, self.i = tokens, 0
        first = tokens[0] if tokens else None
        title = ""
        if first is None:
            self.problems.append(IssueSourceError("the body is empty: it needs at least '# Title'",
                                                  path=self.where, line=self.offset + 1))
        elif first.type != "heading_open" or first.tag != "h1":
            self.problems.append(self.error("the body must start with the issue's title as '# Title'",
                                            first))
        else:
            title = self.heading()
        intro = tuple(self.blocks(allow_story=False, context="the introduction"))
        sections, colophon = [], False
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.type == "hr":
                if colophon:
                    self.problems.append(self.error("only one '***' line is allowed (it starts the "
                                                    "masthead)", tok))
                colophon, self.i = True, self.i + 1
                continue
            if tok.type != "heading_open" or tok.tag != "h2":
                self.problem(self.misplaced(tok, colophon), tok)
                continue
            line, heading = self.line(tok), self.heading()
            blocks = tuple(self.blocks(allow_story=True, context="a section"))
            sections.append(Section(heading, blocks, line, colophon))
        return title, intro, tuple(sections)

    def misplaced(self, tok, colophon: bool) -> str:
        if tok.type == "heading_open" and tok.tag == "h1":
            return "only one '# Title' is allowed; use '## ' for section headings"
        if colophon:
            return "after the '***' line, start the masthead with a '## ' heading"
        if tok.type == "heading_open" and tok.tag == "h3":
            return "a '### ' story must be inside a '## ' section"
        return "this must be inside a '## ' section (the text after the title is the standfirst)"

    def heading(self) -> str:
        """Consume heading_open, inline, heading_close; return the heading's HTML."""
        inline = self.tokens[self.i + 1]
        self.i += 3
        if not inline.content.strip():
            self.problems.append(self.error("this heading is empty", inline))
        return self.inline(inline.content, self.line(inline))

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
                self.problem(f"a '### ' story cannot be in {context}; put it under a '## ' section", tok)
            else:
                yield from self.block(tok)

    def story_blocks(self):
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.type == "hr" or (tok.type == "heading_open" and tok.tag in ("h1", "h2", "h3")):
                return
            yield from self.block(tok)

    def block(self, tok):
        """The block at `tok` (none if it is a problem, which is recorded and skipped)."""
        if tok.type == "paragraph_open":
            inline = self.tokens[self.i + 1]
            self.i += 3
            image = self.image(inline, self.line(tok))
            yield image or Paragraph(self.inline(inline.content, self.line(tok)), self.line(tok))
        elif tok.type in ("bullet_list_open", "ordered_list_open"):
            yield from self.item_list(tok)
        elif tok.type == "table_open":
            yield self.table(tok)
        elif tok.type == "blockquote_open":
            yield from self.quote(tok)
        elif tok.type == "heading_open":
            self.problem("headings go down to '### ' (stories); use **bold** below that", tok)
        else:
            self.problem(f"{_KINDS.get(tok.type, tok.type)} cannot be shown in the email; use "
                         "paragraphs, '## ' sections, '### ' stories, '- ' lists and tables", tok)

    def image(self, inline, line: int) -> Image | None:
        """A paragraph that is one picture (optionally a link) is an Image block."""
        children = [c for c in inline.children or [] if not (c.type == "text" and not c.content.strip())
                    and c.type != "softbreak"]
        kinds = [c.type for c in children]
        if kinds not in (["image"], ["link_open", "image", "link_close"]):
            return None
        picture = children[kinds.index("image")]
        title = picture.attrGet("title")
        href = children[0].attrGet("href") if kinds[0] == "link_open" else None
        alt = self.md.renderer.renderInlineAsText(picture.children or [], self.md.options, {})
        return Image(str(picture.attrGet("src")), alt.strip(), self.inline(str(title), line) if title else None,
                     line, href=str(href) if href else None)

    def quote(self, opening):
        """A `>` quote: one or more paragraphs (a list or a heading inside one is a problem)."""
        paragraphs: list[Paragraph] = []
        self.i += 1
        while self.tokens[self.i].type != "blockquote_close":
            tok = self.tokens[self.i]
            if tok.type != "paragraph_open":
                self.problems.append(self.error("a '>' quote holds paragraphs only (no lists, headings "
                                                "or pictures inside it)", tok))
                while not (self.tokens[self.i].type == "blockquote_close"
                           and self.tokens[self.i].level == opening.level):
                    self.i += 1
                self.i += 1
                return
            paragraphs.append(Paragraph(self.inline(self.tokens[self.i + 1].content, self.line(tok)),
                                        self.line(tok)))
            self.i += 3
        self.i += 1
        yield Quote(tuple(paragraphs), self.line(opening))

    def table(self, opening) -> Table:
        header: tuple[str, ...] = ()
        rows: list[tuple[str, ...]] = []
        align: list[str] = []
        row: list[str] = []
        row_line = self.line(opening)
        self.i += 1
        while self.tokens[self.i].type != "table_close":
            tok = self.tokens[self.i]
            if tok.type == "tr_open":
                row, row_line = [], self.line(tok) if tok.map else self.line(opening)
            elif tok.type in ("th_open", "td_open"):
                if tok.type == "th_open":
                    style = str(tok.attrGet("style") or "")
                    align.append(style.partition("text-align:")[2] or "left")
                row.append(self.inline(self.tokens[self.i + 1].content, row_line))
            elif tok.type == "tr_close":
                if header:
                    rows.append(tuple(row))
                else:
                    header = tuple(row)
            self.i += 1
        self.i += 1
        return Table(header, tuple(rows), tuple(align), self.line(opening))

    def item_list(self, opening):
        close = opening.type.replace("_open", "_close")
        items, start = [], self.i
        self.i += 1
        while self.tokens[self.i].type != close:
            tok = self.tokens[self.i]                      # list_item_open
            inner = self.tokens[self.i + 1]
            if inner.type != "paragraph_open" or self.tokens[self.i + 4].type != "list_item_close":
                self.problems.append(self.error("a list item must be one paragraph (no nested lists "
                                                "or blocks)", tok))
                self.i = start
                self.skip()
                return
            items.append(self.item(self.tokens[self.i + 2].content, self.line(tok)))
            self.i += 5
        self.i += 1
        yield ItemList(tuple(items), opening.type == "ordered_list_open", self.line(opening))

    def item(self, markdown: str, line: int) -> Item:
        found = SOURCE.match(markdown)
        if not found:
            return Item(self.inline(markdown, line), None, line)
        source_line = line + markdown.count("\n", 0, found.start("source"))
        return Item(self.inline(found["text"], line), self.inline(found["source"], source_line), line)


_KINDS = {"fence": "a code block", "code_block": "an indented code block (4 spaces)",
          "html_block": "raw HTML"}
