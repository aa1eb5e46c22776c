"""What an accessibility checker (axe-core) would flag in a built email, read off its HTML.

- contrast: every piece of visible text with a letter or digit in it (axe-core leaves out
  punctuation and symbols alone, such as the title's "|"), and each picture's alt text, which
  Outlook shows until pictures are allowed, against the background it sits on, in the light and
  the dark colour scheme, by the WCAG 2 formula: 4.5:1, or 3:1 for large text (24px, or 18.66px
  bold). The colours come from the email's own CSS: its inline styles (premailer wrote them from
  templates/partials/style.css.j2 and the MJML attributes) and its <style> rules, with
  `@media (prefers-color-scheme: dark)` applied in the dark scheme, cascaded the way a browser
  does (important over normal, inline over sheet, then specificity, then order); a default
  colour is the browser's (black on white; white on #121212 where the email declares
  `color-scheme: light dark` and the reader prefers dark). Rules for narrow screens are left
  out: they only make the title smaller, which stays large text.
- alt: a picture whose alt text is empty, its file name or a word like "image" (WCAG 1.1.1);
- link text: a link without words (WCAG 2.4.4, an error), one whose words say nothing ("click
  here", "more") or are a bare address (warnings);
- headings: the first is not an <h1>, or a level is skipped (warnings: axe's best practice);
- lang: the <html> element names no language, or not a well-formed one (WCAG 3.1.1).

Each check returns `Problem`s (severity, rule, message, what to look for in the sources); the
lint report (mailer/compose/lint.py) turns them into findings with a file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from posixpath import basename
from urllib.parse import urlsplit

from cssselect import SelectorError
from lxml.cssselect import CSSSelector

from mailer.compose.findings import Problem, Severity

AA_NORMAL, AA_LARGE = 4.5, 3.0
LARGE_PX, LARGE_BOLD_PX = 24.0, 18.66


class Scheme(StrEnum):
    LIGHT = "light"
    DARK = "dark"


# --- colours ---------------------------------------------------------------------------------

RGB = tuple[float, float, float]
_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "gray": (128, 128, 128),
          "grey": (128, 128, 128), "silver": (192, 192, 192), "blue": (0, 0, 255), "navy": (0, 0, 128)}
_HEX = re.compile(r"#([0-9a-f]{8}|[0-9a-f]{6}|[0-9a-f]{3,4})\b", re.I)
_FUNC = re.compile(r"rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)", re.I)


def parse_colour(value: str) -> tuple[RGB, float] | None:
    """A CSS colour -> (r, g, b) 0-255 and alpha; None for none, transparent or unknown."""
    value = value.strip().lower()
    found = _HEX.search(value)
    if found:
        digits = found.group(1)
        if len(digits) in (3, 4):
            digits = "".join(d * 2 for d in digits)
        alpha = int(digits[6:8], 16) / 255 if len(digits) == 8 else 1.0
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)), alpha
    found = _FUNC.search(value)
    if found:
        a = found.group(4)
        alpha = 1.0 if a is None else float(a[:-1]) / 100 if a.endswith("%") else float(a)
        return (float(found.group(1)), float(found.group(2)), float(found.group(3))), alpha
    for word in re.findall(r"[a-z]+", value):
        if word in _NAMED:
            return _NAMED[word], 1.0
    return None


def _over(top: tuple[RGB, float], below: RGB) -> RGB:
    colour, alpha = top
    r, g, b = (c * alpha + d * (1 - alpha) for c, d in zip(colour, below, strict=True))
    return (r, g, b)


def luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = map(channel, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def hex_of(rgb: RGB) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


# --- the cascade -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    selector: str
    declarations: dict[str, tuple[str, bool]]     # property -> (value, important)
    scheme: Scheme | None                         # a prefers-color-scheme rule, or None (always)
    order: int


_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_SCHEME = re.compile(r"prefers-color-scheme\s*:\s*(dark|light)", re.I)


def style_rules(tree) -> list[Rule]:
    """Every rule of the email's <style> blocks that applies to a wide screen in some scheme."""
    rules: list[Rule] = []
    for style in tree.iter("style"):
        media = (style.get("media") or "").strip()
        if media and not _media_applies(media):
            continue
        _parse_sheet(_COMMENT.sub("", style.text or ""), _scheme_of(media), rules)
    return rules


def _scheme_of(media: str) -> Scheme | None:
    found = _SCHEME.search(media)
    return Scheme(found.group(1).lower()) if found else None


def _media_applies(media: str) -> bool:
    """A media query we model: all, screen, a colour scheme, or a minimum width a desktop has;
    not print, nor maximum widths (phones)."""
    return "max-width" not in media and "print" not in media


def _parse_sheet(css: str, scheme: Scheme | None, rules: list[Rule]) -> None:
    at = 0
    while True:
        opening = css.find("{", at)
        if opening < 0:
            return
        prelude = css[at:opening].strip()
        if prelude.startswith("@"):
            closing = _matching_brace(css, opening)
            if prelude.lower().startswith("@media") and _media_applies(prelude):
                _parse_sheet(css[opening + 1:closing], _scheme_of(prelude) or scheme, rules)
            at = closing + 1
            continue
        closing = css.find("}", opening)
        closing = len(css) if closing < 0 else closing
        declarations = _declarations(css[opening + 1:closing])
        for selector in prelude.split(","):
            if selector.strip():
                rules.append(Rule(selector.strip(), declarations, scheme, len(rules)))
        at = closing + 1


_BRACE = re.compile(r"[{}]")


def _matching_brace(css: str, opening: int) -> int:
    depth = 0
    for brace in _BRACE.finditer(css, opening):
        depth += 1 if brace.group() == "{" else -1
        if depth == 0:
            return brace.start()
    return len(css)


def _declarations(text: str) -> dict[str, tuple[str, bool]]:
    found: dict[str, tuple[str, bool]] = {}
    for part in text.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            value, bang, flag = value.partition("!")
            found[name.strip().lower()] = (value.strip(), bool(bang) and flag.strip().lower() == "important")
    return found


@cache
def _selector(selector: str) -> CSSSelector | None:
    try:
        return CSSSelector(selector)
    except (SelectorError, ValueError, TypeError):   # pseudo-classes and the like: never matched
        return None


def _specificity(selector: str) -> tuple[int, int, int]:
    ids = len(re.findall(r"#[\w-]+", selector))
    classes = len(re.findall(r"\.[\w-]+|\[[^\]]*\]|:(?!:)[\w-]+", selector))
    types = len(re.findall(r"(?:^|[\s>+~])([a-z][\w-]*)", selector, re.I))
    return ids, classes, types


PROPERTIES = ("color", "background-color", "background", "font-size", "font-weight", "display",
              "visibility", "opacity", "max-height")


def declarations(tree) -> list[tuple[object, str, Scheme | None, tuple, str, str]]:
    """Every declaration of a property we read that reaches an element, once for both schemes:
    (element, property, scheme or None, cascade rank, value, origin), `origin` being the rule's
    selector, or "style" for the element's own style attribute."""
    found = []
    for rule in style_rules(tree):
        wanted = {p: v for p, v in rule.declarations.items() if p in PROPERTIES}
        matcher = _selector(rule.selector) if wanted else None
        if matcher is None:
            continue
        rank = _specificity(rule.selector)
        for element in matcher(tree):
            for prop, (value, important) in wanted.items():
                found.append((element, prop, rule.scheme, (important, 0, rank, rule.order), value, rule.selector))
    for element in tree.iter():
        style = element.get("style") if isinstance(element.tag, str) else None
        if style:
            for prop, (value, important) in _declarations(style).items():
                if prop in PROPERTIES:
                    found.append((element, prop, None, (important, 1, (0, 0, 0), 0), value, "style"))
    return found


def computed_declarations(found: list, scheme: Scheme) -> dict:
    """{element: {property: (value, origin)}}: the declaration that wins in `scheme`."""
    best: dict = {}
    for element, prop, rule_scheme, rank, value, origin in found:
        if rule_scheme in (None, scheme):
            props = best.setdefault(element, {})
            if prop not in props or rank >= props[prop][0]:
                props[prop] = (rank, value, origin)
    return {element: {prop: won[1:] for prop, won in props.items()} for element, props in best.items()}


# --- text and its background ---------------------------------------------------------------------

@dataclass(frozen=True)
class Defaults:
    text: RGB
    canvas: RGB
    link: RGB


LIGHT = Defaults((0, 0, 0), (255, 255, 255), (0, 0, 238))
DARK = Defaults((255, 255, 255), (18, 18, 18), (158, 158, 255))      # Chromium's dark canvas and link
_BOLD_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "th", "strong", "b"})
_HEADING_EM = {"h1": 2.0, "h2": 1.5, "h3": 1.17, "h4": 1.0, "h5": 0.83, "h6": 0.67}
_SKIP = frozenset({"head", "style", "script", "title", "template"})


@dataclass
class _State:
    colour: RGB
    colour_origin: str
    background: RGB
    size: float
    bold: bool


@dataclass(frozen=True)
class Sample:
    """One run of visible text: the element holding it, its colour and background, its size."""
    element: object
    text: str
    colour: RGB
    background: RGB
    size: float
    bold: bool
    colour_origin: str          # the selector whose rule set the colour, "style" or "default"
    alt: bool = False           # a picture's alt text

    @property
    def ratio(self) -> float:
        return contrast(self.colour, self.background)

    @property
    def large(self) -> bool:
        return self.size >= LARGE_PX or (self.bold and self.size >= LARGE_BOLD_PX)

    @property
    def needed(self) -> float:
        return AA_LARGE if self.large else AA_NORMAL


def dark_supported(tree) -> bool:
    """The email asks for the dark scheme's defaults (`<meta name="color-scheme" content="light dark">`)."""
    return any("dark" in (meta.get("content") or "") for meta in tree.iter("meta")
               if (meta.get("name") or "").lower() == "color-scheme")


def text_samples(tree, scheme: Scheme, found: list | None = None) -> list[Sample]:
    """Every run of visible text in the email as a reader in `scheme` sees it; `found`: the
    document's `declarations`, when already read."""
    declared = computed_declarations(declarations(tree) if found is None else found, scheme)
    defaults = DARK if scheme is Scheme.DARK and dark_supported(tree) else LIGHT
    body = tree.find(".//body")
    samples: list[Sample] = []
    if body is not None:
        start = _State(defaults.text, "default", defaults.canvas, 16.0, False)
        _walk(body, start, declared, defaults, samples)
    return samples


def _walk(element, parent: _State, declared: dict, defaults: Defaults, samples: list[Sample]) -> None:
    if not isinstance(element.tag, str) or element.tag in _SKIP:
        return
    own = declared.get(element, {})
    if _hidden(own):
        return
    state = _inherit(element, parent, own, defaults)
    if state.size < 1:      # font-size 0: MJML's layout cells hold no visible text of their own
        state.size = 0
    texts = [element.text] + [child.tail for child in element]
    shown = " ".join(" ".join(t.split()) for t in texts if t and t.strip())
    if _WORDS.search(shown) and state.size:
        samples.append(Sample(element, shown, state.colour, state.background, state.size, state.bold,
                              state.colour_origin))
    if element.tag == "img" and (element.get("alt") or "").strip() and state.size:
        samples.append(Sample(element, element.get("alt").strip(), state.colour, state.background,
                              state.size, state.bold, state.colour_origin, alt=True))
    for child in element:
        _walk(child, state, declared, defaults, samples)


# Text made only of punctuation and symbols ("|", "·", "—") is left out, as axe-core leaves it out.
_WORDS = re.compile(r"[^\W_]")


def _hidden(own: dict) -> bool:
    value = {prop: own[prop][0].lower().replace(" ", "") for prop in ("display", "visibility", "opacity",
                                                                       "max-height") if prop in own}
    return (value.get("display") == "none" or value.get("visibility") == "hidden"
            or value.get("opacity") in ("0", "0.0") or value.get("max-height") in ("0", "0px"))


def _inherit(element, parent: _State, own: dict, defaults: Defaults) -> _State:
    background = parent.background
    for prop in ("background", "background-color"):        # the later wins if both are set
        if prop in own:
            found = parse_colour(own[prop][0])
            if found and found[1] > 0:
                background = _over(found, parent.background)
    if "background" not in own and "background-color" not in own and element.get("bgcolor"):
        found = parse_colour(element.get("bgcolor"))
        background = _over(found, parent.background) if found else background
    colour, origin = parent.colour, parent.colour_origin
    if "color" in own and own["color"][0].lower() not in ("inherit", "currentcolor"):
        found = parse_colour(own["color"][0])
        if found:
            colour, origin = _over(found, background), own["color"][1]
    elif element.tag == "a":
        colour, origin = defaults.link, "default"
    size = _font_size(own.get("font-size", ("", ""))[0], parent.size, element.tag)
    weight = own.get("font-weight", ("", ""))[0].lower()
    bold = (weight in ("bold", "bolder") or (weight.isdigit() and int(weight) >= 700)) if weight else \
        (parent.bold or element.tag in _BOLD_TAGS)
    return _State(colour, origin, background, size, bold)


def _font_size(value: str, parent: float, tag: str) -> float:
    found = re.fullmatch(r"\s*([\d.]+)\s*(px|pt|em|rem|%)?\s*", value or "")
    if not found:
        return parent * _HEADING_EM.get(tag, 1.0)
    number, unit = float(found.group(1)), found.group(2) or "px"
    return {"px": number, "pt": number * 4 / 3, "em": number * parent, "rem": number * 16,
            "%": number * parent / 100}[unit]


# --- the checks ------------------------------------------------------------------------------------

def check_contrast(tree) -> list[Problem]:
    """One problem per text style below WCAG AA: its colours, in which schemes, the elements."""
    failing: dict[tuple, dict[Scheme, list[Sample]]] = {}
    found = declarations(tree)
    for scheme in Scheme:
        for sample in text_samples(tree, scheme, found):
            if sample.ratio + 1e-9 < sample.needed:
                key = (hex_of(sample.colour), hex_of(sample.background), sample.needed, sample.alt)
                failing.setdefault(key, {}).setdefault(scheme, []).append(sample)
    return [_contrast_problem(by_scheme) for by_scheme in failing.values()]


def _contrast_problem(by_scheme: dict[Scheme, list[Sample]]) -> Problem:
    samples = [sample for found in by_scheme.values() for sample in found]
    first = samples[0]
    names = list(dict.fromkeys(_style_name(sample.element) for sample in samples))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    what = f"the alt text of pictures ({shown})" if first.alt else f"text in {shown}"
    size = "large text" if first.large else "text under 24px (18.66px bold)"
    schemes = "both colour schemes" if len(by_scheme) == 2 else f"the {next(iter(by_scheme))} colour scheme"
    message = (f"{what} has contrast {first.ratio:.1f}:1 in {schemes} "
               f"({hex_of(first.colour)} on {hex_of(first.background)}, e.g. {_excerpt(first.text)!r}); "
               f"WCAG AA needs {first.needed:g}:1 for {size}")
    needles = _colour_needles(first, names[0])
    if list(by_scheme) == [Scheme.DARK] and first.colour_origin in ("style", "default"):
        message += "; no dark-mode rule sets its colour"
        needles = ("prefers-color-scheme: dark", *needles)
    return Problem(Severity.ERROR, "contrast", message, needles, templates_only=True)


def _style_name(element) -> str:
    """`p.caption`: the element and its classes, or the nearest ancestor's that has classes."""
    node = element
    while node is not None:
        classes = (node.get("class") or "").split()
        if classes:
            name = node.tag + "".join(f".{c}" for c in classes)
            return name if node is element else f"{element.tag} in {name}"
        node = node.getparent()
    return str(element.tag)


def _colour_needles(sample: Sample, name: str) -> tuple[str, ...]:
    """What to look for in the templates: the rule that set the colour, else the colour itself
    next to the element's class."""
    colour = hex_of(sample.colour)
    classes = re.findall(r"\.([\w-]+)", name)
    if sample.colour_origin not in ("style", "default"):
        return (sample.colour_origin, colour)
    return (*(f".{c} {{" for c in classes), colour, f'color="{colour}"')


def _excerpt(text: str, chars: int = 40) -> str:
    return text if len(text) <= chars else text[:chars - 1].rstrip() + "…"


# The words an alt text, or a link's text, is not allowed to be.
MEANINGLESS_ALT = frozenset({"image", "img", "picture", "pic", "photo", "photograph", "graphic",
                             "icon", "banner", "placeholder", "untitled", "spacer", "alt", "chart"})
_FILE_NAME = re.compile(r"(?i)^[\w.~-]+\.(jpe?g|png|gif|webp|svg|avif|bmp|tiff?|heic)$|^(img|dsc|dscn|pxl)[_-]?\d+$")


def check_alt(tree) -> list[Problem]:
    problems = []
    for img in tree.iter("img"):
        src = img.get("src") or ""
        alt = " ".join((img.get("alt") or "").split())
        if not alt:
            problems.append(Problem(Severity.ERROR, "alt", f"picture {src} has no alt text: write "
                                    "![what it shows](...) (image_alt = \"...\" for the lead picture); "
                                    "screen readers, and Outlook until pictures are allowed, show "
                                    "nothing else", (src,)))
        elif _FILE_NAME.match(alt) or alt.lower() == basename(urlsplit(src).path).lower():
            problems.append(Problem(Severity.ERROR, "alt", f"picture {src} has a file name for alt text "
                                    f"({alt!r}): say what it shows", (f"![{alt}]", src)))
        elif alt.lower().strip(" .") in MEANINGLESS_ALT:
            problems.append(Problem(Severity.ERROR, "alt", f"picture {src} has {alt!r} for alt text: say "
                                    "what it shows (\"Putin and Kim at the signing\")", (f"![{alt}]", src)))
    return problems


VAGUE_LINK_TEXT = frozenset({"click here", "here", "click", "read more", "more", "link", "this link",
                             "this", "go", "learn more", "more info", "details", "continue", "click this"})
_ADDRESS_TEXT = re.compile(r"(?i)^(https?://|www\.)\S+$")


def check_link_text(tree, is_ours) -> list[Problem]:
    """Links whose words say nothing; `is_ours(href)`: a link the templates make (footer)."""
    problems = []
    for a in tree.iter("a"):
        href = (a.get("href") or "").strip()
        words = " ".join("".join(a.itertext()).split())
        alts = " ".join((img.get("alt") or "").strip() for img in a.iter("img"))
        if is_ours(href):
            continue
        if not words and not alts.strip():
            problems.append(Problem(Severity.ERROR, "link text", f"the link to {href} has no words: "
                                    "screen readers read out the address; write [words](...)",
                                    (f"]({href})", href)))
        elif words.lower().strip(" .:!»→") in VAGUE_LINK_TEXT:
            problems.append(Problem(Severity.WARNING, "link text", f"link text {words!r} says nothing out "
                                    f"of context (screen readers list the links): name where {href} "
                                    "leads, e.g. [the CSIS report](...)", (f"[{words}]", f"]({href})")))
        elif _ADDRESS_TEXT.match(words) and not href.lower().startswith("mailto:"):
            problems.append(Problem(Severity.WARNING, "link text", f"link text is a bare address ({words}): "
                                    "words say where it leads, e.g. [the Brookings report](...)",
                                    (f"[{words}]", f"<{words}>", words)))
    return problems


def check_headings(tree) -> list[Problem]:
    problems, previous = [], 0
    for heading in tree.iter("h1", "h2", "h3", "h4", "h5", "h6"):
        level = int(heading.tag[1])
        text = " ".join("".join(heading.itertext()).split())
        if previous == 0 and level != 1:
            problems.append(Problem(Severity.WARNING, "headings", f"the first heading ({text!r}) is an "
                                    f"<h{level}>, not the title's <h1>", (f"<h{level}",), templates_only=True))
        elif level > previous + 1 and previous:
            problems.append(Problem(Severity.WARNING, "headings", f"heading {text!r} (<h{level}>) skips a "
                                    f"level after an <h{previous}>: screen readers navigate by them",
                                    (f"<h{level}",), templates_only=True))
        previous = level
    return problems


_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def check_lang(tree) -> list[Problem]:
    lang = (tree.get("lang") or "").strip() if tree.tag == "html" else ""
    if not lang or lang.lower() == "und":     # MRML writes "und" (undetermined) when <mjml> has none
        return [Problem(Severity.ERROR, "lang", "the email's <html> names no language (lang=\"en\"): "
                        "screen readers then guess the pronunciation", ("<mjml",), templates_only=True)]
    if not _LANG.match(lang):
        return [Problem(Severity.ERROR, "lang", f"the email's language lang={lang!r} is not a language tag "
                        "like \"en\" or \"en-GB\"", (f'lang="{lang}"',), templates_only=True)]
    return []


def audit(tree, is_ours) -> list[Problem]:
    """Every accessibility check over one built email (its lxml tree)."""
    return [*check_lang(tree), *check_alt(tree), *check_link_text(tree, is_ours),
            *check_headings(tree), *check_contrast(tree)]
