"""Stage 2: Issue + templates/ -> MJML (Jinja2, autoescaped) -> HTML (mjml-python).

`compose_issue(path, settings)` runs stages 1-3 once per issue and returns the ComposedIssue that
personalize and dispatch use: per-recipient fields are markers (mailer.model.marker), never
re-rendered per recipient.

mjml-python validates nothing (docs/mail-facts.md, Libraries): a misspelt tag is copied raw into the HTML and a
broken structure raises a bare ValueError without position. So tag names are checked in each
template's source as it loads (exact template and line), and the generated MJML is checked for
balance and nesting before compiling, the error mapped back to the template line that made it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import traceback
from pathlib import Path

import jinja2
import mjml as mrml
from jinja2 import meta

from mailer.compose.inline import html_to_text, inline_css
from mailer.compose.source import read_issue
from mailer.errors import ComposeError, IssueSourceError, MailerError
from mailer.i18n import install
from mailer.locale import LANGUAGES
from mailer.model import FIELDS, ComposedIssue, marker

TEMPLATE = "email.mjml.j2"
HTML_MARKERS = {field: marker(field, "html") for field in FIELDS}

# Which MJML tags may hold which (MJML 4 documentation); tags absent here hold no mj-* children.
_CONTENT = frozenset({"mj-text", "mj-image", "mj-button", "mj-divider", "mj-spacer", "mj-social",
                      "mj-navbar", "mj-table", "mj-accordion", "mj-carousel", "mj-raw"})
CHILDREN: dict[str, frozenset[str]] = {
    "mjml": frozenset({"mj-head", "mj-body", "mj-raw"}),
    "mj-head": frozenset({"mj-attributes", "mj-breakpoint", "mj-font", "mj-html-attributes",
                          "mj-preview", "mj-style", "mj-title", "mj-raw"}),
    "mj-body": frozenset({"mj-section", "mj-wrapper", "mj-hero", "mj-raw"}),
    "mj-wrapper": frozenset({"mj-section", "mj-hero", "mj-raw"}),
    "mj-section": frozenset({"mj-column", "mj-group", "mj-raw"}),
    "mj-group": frozenset({"mj-column", "mj-raw"}),
    "mj-column": _CONTENT,
    "mj-hero": _CONTENT,
    "mj-social": frozenset({"mj-social-element", "mj-raw"}),
    "mj-navbar": frozenset({"mj-navbar-link", "mj-raw"}),
    "mj-accordion": frozenset({"mj-accordion-element", "mj-raw"}),
    "mj-accordion-element": frozenset({"mj-accordion-title", "mj-accordion-text", "mj-raw"}),
    "mj-carousel": frozenset({"mj-carousel-image"}),
    "mj-html-attributes": frozenset({"mj-selector"}),
    "mj-selector": frozenset({"mj-html-attribute"}),
}
MJML_TAGS = frozenset(CHILDREN) | frozenset().union(*CHILDREN.values()) | {"mj-all", "mj-class"}
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"})
_TAG_NAME = re.compile(r"</?\s*(mj[a-z0-9-]*)", re.I)
_BARE_ZERO = re.compile(r'\bpadding="(?:[^"]*\s)?0(?:\s[^"]*)?"')
_MARKUP = re.compile(r"<!--.*?-->|<(/?)([A-Za-z][\w:-]*)((?:\"[^\"]*\"|'[^']*'|[^'\">])*?)(/?)>", re.S)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")


def compose_issue(path: str | Path, settings, *, proof: bool = False, language: str | None = None) -> ComposedIssue:
    """Stages 1-3 for one issue file: read, render MJML, compile, inline CSS, make the text part."""
    return compose(read_issue(path), settings, proof=proof, language=language)


def compose(issue, settings, *, proof: bool = False, language: str | None = None) -> ComposedIssue:
    """An Issue (stage 1's output) through templates, MJML and premailer to a ComposedIssue;
    `proof`: the copy `mailer issue proof` sends (a banner on top; see templates/email.mjml.j2);
    `language`: the list's, which the footer speaks (None: [newsletter] language).

    A template that fails on one block of the issue is reported at that block's line in the issue
    (an IssueSourceError), not as the template's own error: the editor can act on that."""
    language = language or settings.newsletter.language
    try:
        mjml, html, text = render(TEMPLATE, issue_context(issue, settings, proof=proof), settings, language)
    except ComposeError as exc:
        raise _blame(issue, settings, proof, exc, language) from exc
    return ComposedIssue(slug=issue.slug, subject=issue.subject, preheader=issue.preheader,
                         mjml=mjml, html=html, text=text, date=issue.date, language=language,
                         archive=issue.meta.get("archive", True) is not False)


_KIND = {"Paragraph": "paragraph", "Image": "picture", "ItemList": "list", "Table": "table",
         "Quote": "quote", "Section": "section", "Story": "story"}


def _blame(issue, settings, proof: bool, exc: ComposeError, language: str) -> MailerError:
    """The issue's part that makes the templates fail on its own, as an IssueSourceError at its
    line; `exc` itself when none does (then the templates fail whatever the issue says)."""
    def builds(variant) -> bool:
        try:
            mjml_to_html(render_mjml(TEMPLATE, issue_context(variant, settings, proof=proof), folder, language), folder)
        except ComposeError:
            return False
        return True

    folder = templates_dir(settings)
    bare = dataclasses.replace(issue, intro=(), sections=(), image=None)
    if not builds(bare):
        return exc
    for line, kind, variant in _one_part_at_a_time(issue, bare):
        if not builds(variant):
            return IssueSourceError(f"the email cannot be built with this {kind} ({exc}): write it "
                                    "another way, and tell whoever keeps the templates",
                                    path=str(issue.path), line=line)
    return exc


def _one_part_at_a_time(issue, bare):
    """(line, kind, an issue holding that part alone) for each part of `issue`, in file order."""
    if issue.image is not None:
        yield issue.image.line, "lead picture", dataclasses.replace(bare, image=issue.image)
    for block in issue.intro:
        yield block.line, _KIND.get(type(block).__name__, "block"), dataclasses.replace(bare, intro=(block,))
    for section in issue.sections:
        empty = dataclasses.replace(section, blocks=())
        yield section.line, "section heading", dataclasses.replace(bare, sections=(empty,))
        for block in section.blocks:
            inner = getattr(block, "blocks", None)
            if inner is None:
                yield block.line, _KIND.get(type(block).__name__, "block"), \
                    dataclasses.replace(bare, sections=(dataclasses.replace(empty, blocks=(block,)),))
                continue
            story = dataclasses.replace(block, blocks=())
            yield block.line, "story heading", \
                dataclasses.replace(bare, sections=(dataclasses.replace(empty, blocks=(story,)),))
            for part in inner:
                one = dataclasses.replace(empty, blocks=(dataclasses.replace(story, blocks=(part,)),))
                yield part.line, _KIND.get(type(part).__name__, "block"), dataclasses.replace(bare, sections=(one,))


def render(template: str, context: dict, settings, language: str | None = None) -> tuple[str, str, str]:
    """Stages 2-3 for any template (the issue's, or a service mail's such as the confirmation), in
    `language` (None: [newsletter] language): (MJML, inlined HTML, text part)."""
    folder = templates_dir(settings)
    mjml = render_mjml(template, context, folder, language or settings.newsletter.language)
    html = inline_css(mjml_to_html(mjml, folder, template))
    return mjml, html, html_to_text(html)


def templates_dir(settings) -> Path:
    """[compose] templates_dir (config.py has resolved it against the config file's folder)."""
    return settings.compose.templates_dir


def issue_context(issue, settings, *, proof: bool = False) -> dict:
    return {"issue": issue, "newsletter": settings.newsletter, "markers": HTML_MARKERS, "proof": proof}


# --- templates -> MJML ----------------------------------------------------------------------

class _CheckedLoader(jinja2.FileSystemLoader):
    """Loads templates and checks every MJML tag name in them, so a typo names its line."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        if ".mjml" in template:
            check_tag_names(source, shown_path(Path(filename)))
        return source, filename, uptodate


@functools.lru_cache(maxsize=16)
def environment(templates_dir: Path, language: str = LANGUAGES[0]) -> jinja2.Environment:
    """The templates' environment in one language (its catalog and globals: mailer/i18n.py)."""
    # The bytecode cache (Jinja's own, in a private folder under the system temp dir, keyed by
    # each template's source checksum) saves compiling the templates on every `issue build`; the
    # compiled code holds no words of any language, so every language's environment shares it.
    return install(jinja2.Environment(loader=_CheckedLoader(str(templates_dir)), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True,
                                      lstrip_blocks=True, keep_trailing_newline=True,
                                      bytecode_cache=jinja2.FileSystemBytecodeCache(),
                                      extensions=["jinja2.ext.i18n"]), language)


def render_mjml(name: str, context: dict, templates_dir: str | Path, language: str = LANGUAGES[0]) -> str:
    """Render one template; any Jinja failure becomes a ComposeError naming template and line."""
    templates_dir = Path(templates_dir).resolve()
    try:
        return environment(templates_dir, language).get_template(name).render(context)
    except ComposeError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        shown = shown_path(Path(exc.filename)) if exc.filename else shown_path(templates_dir / name)
        raise ComposeError(f"template syntax: {exc.message}", template=shown, line=exc.lineno) from exc
    except jinja2.TemplateNotFound as exc:
        template, line = _template_frame(exc, templates_dir) or (None, None)
        raise ComposeError(f"no template {exc.name!r} in {shown_path(templates_dir)} "
                           "(the folder [compose] templates_dir names in the config file)",
                           template=template, line=line) from exc
    except Exception as exc:   # UndefinedError, TypeError...: a bug in a template
        template, line = _template_frame(exc, templates_dir) or (shown_path(templates_dir / name), None)
        raise ComposeError(f"{type(exc).__name__}: {exc}", template=template, line=line) from exc


def _template_frame(exc: Exception, templates_dir: Path) -> tuple[str, int | None] | None:
    """Jinja rewrites tracebacks so template frames carry the template file and line."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if path.is_relative_to(templates_dir):
            return shown_path(path), frame.lineno
    return None


def shown_path(path: Path) -> str:
    """A template's path as the editor would type it: relative to the working folder if inside."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def check_tag_names(source: str, template: str) -> None:
    """Every mj-* tag must be MJML's; padding zeros need a unit (docs/mail-facts.md: MRML drops a
    unitless zero from the shorthand when it computes Outlook's column widths)."""
    zero = _BARE_ZERO.search(source)
    if zero:
        raise ComposeError(f'write 0px, not 0, in {zero.group(0)}: MRML misreads a unitless zero',
                           template=template, line=source.count("\n", 0, zero.start()) + 1)
    for found in _TAG_NAME.finditer(source):
        tag = found.group(1).lower()
        if tag in MJML_TAGS:
            continue
        if tag == "mj-include":
            problem = "<mj-include> is not used here: include partials with Jinja's {% include %}"
        else:
            near = difflib.get_close_matches(tag, MJML_TAGS, n=1)
            problem = f"unknown MJML tag <{tag}>" + (f" (did you mean <{near[0]}>?)" if near else "")
        raise ComposeError(problem, template=template, line=source.count("\n", 0, found.start()) + 1)


# --- MJML -> HTML ---------------------------------------------------------------------------

def mjml_to_html(mjml: str, templates_dir: str | Path | None = None, template: str = TEMPLATE) -> str:
    """Check the generated MJML's structure, then compile it with mjml-python (MRML).

    `templates_dir` and `template` say where the MJML came from, to name the line at fault.
    """
    problem = check_structure(mjml)
    if problem:
        line, message = problem
        raise _located(message, mjml, line, template, templates_dir)
    try:
        # fonts={}: no Google Fonts <link>, so neither premailer nor a reader fetches anything.
        return mrml.mjml2html(mjml, fonts={})
    except ValueError as exc:
        position = re.search(r"at position (\d+)", str(exc))
        if position:
            line = mjml.count("\n", 0, int(position.group(1))) + 1
            raise _located(f"MRML says {exc}", mjml, line, template, templates_dir) from exc
        raise ComposeError(f"invalid MJML: MRML says {exc}", template="email.mjml (generated)") from exc


def check_structure(mjml: str) -> tuple[int, str] | None:
    """(line, problem) for the first unbalanced or misplaced tag in generated MJML, or None."""
    def line(position: int) -> int:
        return mjml.count("\n", 0, position) + 1

    stack: list[tuple[str, int]] = []        # (tag, position)
    for found in _MARKUP.finditer(mjml):
        closing, tag, _attrs, selfclosing = found.groups()
        if tag is None:                      # a comment
            continue
        tag = tag.lower()
        if closing:
            if not stack or stack[-1][0] != tag:
                opened = f"<{stack[-1][0]}>, opened on line {line(stack[-1][1])}" if stack else "nothing"
                return line(found.start()), f"</{tag}> closes {opened}"
            stack.pop()
            continue
        problem = _misplaced(tag, stack[-1][0] if stack else None)
        if problem:
            return line(found.start()), problem
        if not selfclosing and tag not in _VOID:
            stack.append((tag, found.start()))
    if stack:
        return line(stack[-1][1]), f"<{stack[-1][0]}> is never closed"
    return None


def _misplaced(tag: str, parent: str | None) -> str | None:
    if parent is None:
        return None if tag == "mjml" else f"<{tag}> must be inside <mjml>"
    if not tag.startswith("mj"):
        return (f"<{tag}> cannot go directly in <{parent}>; put HTML inside <mj-text> or <mj-raw>"
                if parent in CHILDREN else None)
    if parent == "mj-attributes":
        return None
    if not parent.startswith("mj"):
        return f"<{tag}> cannot go inside HTML <{parent}>"
    if tag not in CHILDREN.get(parent, ()):
        allowed = ", ".join(f"<{t}>" for t in sorted(CHILDREN.get(parent, ()))) or "no MJML tags"
        return f"<{tag}> cannot go in <{parent}> (it takes {allowed})"
    return None


def _located(message: str, mjml: str, line: int, template: str, templates_dir) -> ComposeError:
    """Point at the template line that produced generated line `line`, when one clearly did."""
    generated = mjml.splitlines()[line - 1].strip()
    where = _template_line(generated, template, Path(templates_dir)) if templates_dir else None
    detail = f"invalid MJML: {message} (generated line {line}: {generated[:80]})"
    return ComposeError(detail, template=where[0], line=where[1]) if where else \
        ComposeError(detail, template="email.mjml (generated)", line=line)


def _template_line(generated: str, template: str, templates_dir: Path) -> tuple[str, int] | None:
    """The line of `template` or its partials whose literal text best explains `generated`."""
    best, best_literal = None, 3          # a line needs some literal text to be a credible source
    for path in template_files(template, templates_dir):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            parts = _JINJA.split(text.strip())
            literal = sum(len(part.strip()) for part in parts)
            if literal > best_literal and re.fullmatch(".*?".join(map(re.escape, parts)), generated, re.S):
                best, best_literal = (shown_path(path), number), literal
    return best


def template_files(name: str, templates_dir: Path) -> list[Path]:
    """`name` and every template it includes or imports, recursively."""
    templates_dir = templates_dir.resolve()
    env, seen, todo = environment(templates_dir), [], [name]
    loader = env.loader
    assert loader is not None   # environment() gives it one
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.append(current)
            source = loader.get_source(env, current)[0]
            todo += [t for t in meta.find_referenced_templates(env.parse(source)) if t]
    return [templates_dir / n for n in seen]
