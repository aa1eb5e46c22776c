"""Stage 1: issue files -> Issue, and the message an editor sees for each malformed file."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer.compose.source import (
    Image,
    ItemList,
    Paragraph,
    Quote,
    Story,
    Table,
    parse_issue,
    read_issue,
)
from mailer.errors import IssueSourceError

FIXTURES = "tests/fixtures/issues"
FM = '+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\n+++\n'   # body starts on line 6


def test_the_november_issue_reads_completely(repo):
    issue = read_issue(repo / "issues/2024-11.md")
    assert (issue.slug, issue.subject, issue.date) == ("2024-11", "CRANK Call | November 2024",
                                                      dt.date(2024, 11, 1))
    assert issue.preheader == "North Korea and Russia finalize defense pact as offensive against Kursk looms"
    assert issue.title_html == "CRANK Call | November 2024"
    assert [s.title_html for s in issue.body_sections] == [
        "November 2024 Highlights", "Links", "Recent Analysis", "CRANK Perspectives"]
    assert [s.title_html for s in issue.colophon] == ["CRANK Call"]
    highlights, links, analysis, perspectives = issue.body_sections
    assert [type(b) for b in highlights.blocks] == [Story] * 4
    assert [len(s.blocks) for s in highlights.blocks] == [4, 1, 1, 1]
    assert [i.source_html for i in links.blocks[0].items] == [
        "Associated Press", "Reuters", "Reuters", "Newsweek", "BBC", "Middle East Eye", "NK News",
        "Daily NK"]
    assert analysis.blocks[0].items[3].source_html == \
        "Dr. Carla Freeman, Naiyu Kuo, United States Institute of Peace"
    assert perspectives.blocks[0].items[0].html == \
        "BRICS and the Beginning of the End of Western Hegemony"
    editor = issue.colophon[0].blocks[1]
    assert editor.html == 'Editor, Greg Priddy (<a href="mailto:gpriddy@cftni.org">gpriddy@cftni.org</a>)'


def test_lines_point_into_the_file(repo):
    issue = read_issue(repo / FIXTURES / "minimal.md")
    lines = (repo / FIXTURES / "minimal.md").read_text().splitlines()
    section = issue.sections[0]
    assert lines[section.line - 1] == "## Highlights"
    assert lines[section.blocks[0].line - 1] == "### First story"
    assert lines[issue.sections[1].blocks[0].items[1].line - 1].startswith("- An item that")


@pytest.mark.parametrize("markdown, text, source", [
    ("Sentence. (Reuters)", "Sentence.", "Reuters"),
    ("Title: Sub (Dr. A, B, Org)", "Title: Sub", "Dr. A, B, Org"),
    ("No source here", "No source here", None),
    ("A (mid) parenthesis and an end", "A (mid) parenthesis and an end", None),
    ("[Linked](https://example.org/a)", '<a href="https://example.org/a">Linked</a>', None),
    ("[Linked](https://example.org/a) (Wire)", '<a href="https://example.org/a">Linked</a>', "Wire"),
    ("Quote “ally” & co (AP)", "Quote “ally” &amp; co", "AP"),
    ("Item. ([Financial Times](https://ft.com/x))", "Item.", '<a href="https://ft.com/x">Financial Times</a>'),
    ("Item (by [A. Writer](https://a.org/w), [Wire](https://w.org))", "Item",
     'by <a href="https://a.org/w">A. Writer</a>, <a href="https://w.org">Wire</a>'),
    ('Say "hi" (AP)', "Say “hi”", "AP"),
])
def test_list_items_split_off_their_source(markdown, text, source):
    issue = parse_issue(FM + f"# T\n\n## S\n\n- {markdown}\n", "issues/x.md")
    item = issue.sections[0].blocks[0].items[0]
    assert (item.html, item.source_html) == (text, source)


def test_comments_are_dropped_and_lines_kept():
    issue = parse_issue(FM + "# T\n\n<!-- a note\nover two lines -->\n\n## S\n\nText\n", "issues/x.md")
    assert issue.intro == ()
    assert issue.sections[0].line == 11
    assert issue.sections[0].blocks == (Paragraph("Text", 13),)


def test_raw_html_is_shown_as_text_not_markup():
    issue = parse_issue(FM + "# T\n\n## S\n\n<script>alert(1)</script> *x*\n", "issues/x.md")
    assert issue.sections[0].blocks[0].html == "&lt;script&gt;alert(1)&lt;/script&gt; <em>x</em>"


def test_ordered_lists_are_kept_ordered():
    block = parse_issue(FM + "# T\n\n## S\n\n1. one\n2. two\n", "issues/x.md").sections[0].blocks[0]
    assert isinstance(block, ItemList) and block.ordered and len(block.items) == 2


# (what the editor wrote, the line named, the message shown)
BAD = [
    ("# T\n", 1, "the file must start with a '+++' line, then the settings (subject, preheader, "
                 "date), then another '+++' line"),
    ('+++\nsubject = "S"\n# T\n', 1, "the settings opened here are never closed by a '+++' line"),
    ('+++\nsubject = "S\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n', 2,
     'settings: a closing " is missing (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'),
    ('+++\nsubject = S\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n', 2,
     'settings: invalid value (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'),
    ('+++\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n', 4,
     "settings: missing subject = ... before this '+++' line"),
    ('+++\nsubject = "S"\npreheader = "P"\ndate = "2025-01-07"\n+++\n# T\n', 4,
     "settings: date must be a date like 2024-11-01 (no quotes), not '2025-01-07'"),
    ('+++\nsubject = " "\npreheader = "P"\ndate = 2025-01-07\n+++\n# T\n', 2,
     "settings: subject must be non-empty text in \"double quotes\", not ' '"),
    ('+++\nsubject = "S"\npreheader = "P"\ndate = 2025-01-07\nsubjet = "x"\n+++\n# T\n', 5,
     "settings: unknown setting 'subjet' (did you mean 'subject'?)"),
    (FM, 6, "the body is empty: it needs at least '# Title'"),
    (FM + "\nIntro.\n\n## S\n", 7, "the body must start with the issue's title as '# Title'"),
    (FM + "# T\n\n## S\n\n# U\n", 10, "only one '# Title' is allowed; use '## ' for section headings"),
    (FM + "# T\n\nIntro\n\n### Story\n", 10,
     "a '### ' story cannot be in the introduction; put it under a '## ' section"),
    (FM + "# T\n\n## S\n\n### A\n\ntext\n\n#### Deep\n", 14,
     "headings go down to '### ' (stories); use **bold** below that"),
    (FM + "# T\n\n## S\n\n```\ncode\n```\n", 10, "a code block cannot be shown in the email; use "
     "paragraphs, '## ' sections, '### ' stories, '- ' lists and tables"),
    (FM + "# T\n\n## S\n\n> quoted\n>\n> - a list\n", 12, "a '>' quote holds paragraphs only (no lists, "
     "headings or pictures inside it)"),
    (FM + "# T\n\n## S\n\n- a\n  - b\n", 10, "a list item must be one paragraph (no nested lists or blocks)"),
    (FM + "# T\n\n## S\n\ntext\n\n***\n\nEditor\n", 14,
     "after the '***' line, start the masthead with a '## ' heading"),
    (FM + "# T\n\n## S\n\n***\n\n## M\n\n***\n", 14, "only one '***' line is allowed (it starts the masthead)"),
    (FM + "# T\n\n##\n\ntext\n", 8, "this heading is empty"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_a_malformed_issue_names_file_and_line(text, line, message):
    with pytest.raises(IssueSourceError) as caught:
        parse_issue(text, "issues/2025-01.md")
    assert str(caught.value) == f"issues/2025-01.md:{line}: {message}"


@pytest.mark.parametrize("name, message", [
    ("bad name.md", "the file name 'bad name.md' must be letters, digits, '-', '_' or '.' (no '..'), starting "
                    "with a letter or digit: it names the issue in the ledger and the archive, e.g. 2024-11.md"),
    ("a" * 65 + ".md", f"the file name '{'a' * 65}.md' must be at most 64 characters (it has 65): it names the "
                       "issue in the ledger and the archive, e.g. 2024-11.md"),
    ("missing.md", "no such issue file"),
])
def test_file_level_problems(tmp_path, name, message):
    if name != "missing.md":
        (tmp_path / name).write_text(FM + "# T\n", encoding="utf-8")
    with pytest.raises(IssueSourceError) as caught:
        read_issue(tmp_path / name)
    assert str(caught.value) == f"{tmp_path / name}: {message}"


def test_not_utf8(tmp_path):
    (tmp_path / "x.md").write_bytes(FM.encode() + b"# Caf\xe9\n")
    with pytest.raises(IssueSourceError) as caught:
        read_issue(tmp_path / "x.md")
    assert str(caught.value) == f"{tmp_path / 'x.md'}:6: this line is not UTF-8 text (save the file as UTF-8)"


@pytest.mark.parametrize("markdown, html", [
    ('He said "yes" and left.', "He said “yes” and left."),
    ("It's the editors' choice.", "It’s the editors’ choice."),
    ("'Single' quotes", "‘Single’ quotes"),
    ("Curly “already” stays", "Curly “already” stays"),
    ("(c) and -- stay as typed", "(c) and -- stay as typed"),
    ('A [link "title"](https://example.org/"x")', 'A <a href="https://example.org/%22x%22">link “title”</a>'),
])
def test_straight_quotes_become_typographic(markdown, html):
    issue = parse_issue(FM + f"# T\n\n## S\n\n{markdown}\n", "issues/x.md")
    assert issue.sections[0].blocks[0].html == html


def test_an_image_alone_in_a_paragraph_is_a_block_with_its_caption():
    body = ('# T\n\n## S\n\n![A *wide* photo](https://example.org/p.jpg "The caption")\n\n'
            "[![Linked](https://example.org/l.png)](https://example.org/story)\n\n"
            "Text with ![icon](https://example.org/i.png) inside.\n")
    blocks = parse_issue(FM + body, "issues/x.md").sections[0].blocks
    assert blocks[0] == Image("https://example.org/p.jpg", "A wide photo", "The caption", 10)
    assert blocks[1] == Image("https://example.org/l.png", "Linked", None, 12, href="https://example.org/story")
    assert blocks[2] == Paragraph('Text with <img src="https://example.org/i.png" alt="icon" '
                                  'style="max-width:100%;height:auto;border:0;" /> inside.', 14)


def test_a_lead_image_with_its_credit_comes_from_the_settings():
    fm = FM.replace("+++\n", '+++\nimage = "https://example.org/lead.jpg"\nimage_alt = "Two leaders"\n'
                    'image_credit = "Photo: [Kremlin](https://kremlin.ru)"\n', 1)
    fm = fm.replace("date = 2025-01-07\n+++", "date = 2025-01-07\n+++", 1)
    issue = parse_issue(fm + "# T\n", "issues/x.md")
    assert issue.image.src == "https://example.org/lead.jpg" and issue.image.alt == "Two leaders"
    assert issue.image.credit_html == 'Photo: <a href="https://kremlin.ru">Kremlin</a>'
    assert parse_issue(FM + "# T\n", "issues/x.md").image is None


def test_a_markdown_table_becomes_a_table():
    body = "# T\n\n## S\n\n| Country | Share |\n|:--|--:|\n| *China* | 40% |\n| Russia | 30% |\n"
    [table] = parse_issue(FM + body, "issues/x.md").sections[0].blocks
    assert table == Table(("Country", "Share"), (("<em>China</em>", "40%"), ("Russia", "30%")),
                          ("left", "right"), 10)


def test_every_problem_of_a_file_is_named_in_one_run():
    text = ('+++\nsubject = "S"\npreheadr = "P"\ndate = "2025-01-07"\n+++\n# T\n\nIntro\n\n'
            "### Story in the intro\n\n## S\n\n```\ncode\n```\n\n- a\n  - nested\n\n#### Deep\n")
    with pytest.raises(IssueSourceError) as caught:
        parse_issue(text, "issues/2025-01.md")
    assert str(caught.value).splitlines() == [
        "issues/2025-01.md:3: settings: unknown setting 'preheadr' (did you mean 'preheader'?)",
        "error: issues/2025-01.md:4: settings: date must be a date like 2024-11-01 (no quotes), not '2025-01-07'",
        "error: issues/2025-01.md:5: settings: missing preheader = ... before this '+++' line",
        "error: issues/2025-01.md:10: a '### ' story cannot be in the introduction; put it under a '## ' section",
        "error: issues/2025-01.md:14: a code block cannot be shown in the email; use paragraphs, '## ' "
        "sections, '### ' stories, '- ' lists and tables",
        "error: issues/2025-01.md:18: a list item must be one paragraph (no nested lists or blocks)",
        "error: issues/2025-01.md:21: headings go down to '### ' (stories); use **bold** below that",
    ]
    assert len(caught.value.problems) == 7


def test_image_settings_need_the_image():
    fm = FM.replace("+++\n", '+++\nimage_credit = "Photo: AP"\n', 1)
    with pytest.raises(IssueSourceError, match=r"issues/x.md:2: settings: image_credit needs image = "):
        parse_issue(fm + "# T\n", "issues/x.md")


PIC, TABLE = "![A convoy](https://example.org/c.jpg)", "| a | b |\n|---|---|\n| 1 | 2 |"


# (what stands between the title and the first section, line 8 on; the blocks read; the standfirst)
INTRO = [
    ("A standfirst.\n\nMore text.", [Paragraph, Paragraph], "A standfirst."),
    (f"{PIC}\n\nA standfirst.", [Image, Paragraph], "A standfirst."),            # a picture above it
    (f"{PIC}\n\n{PIC}\n\nA standfirst.\n\n{PIC}", [Image, Image, Paragraph, Image], "A standfirst."),
    ("Dear {{ first_name }},\n\nThis month...", [Paragraph, Paragraph], None),    # a greeting: no standfirst
    ('Hello {{ first_name | default("reader") }}!\n\nThis month...', [Paragraph, Paragraph], None),
    ("Good morning, and welcome.\n\nThis month...", [Paragraph, Paragraph], None),
    ("A standfirst that ends,\nover two lines,\n\nMore.", [Paragraph, Paragraph],
     "A standfirst that ends,\nover two lines,"),
    ("Ann,\n\nMore.", [Paragraph, Paragraph], None),
    (f"{TABLE}\n\nText.", [Table, Paragraph], None),                                # a table first: none
    ("- one\n- two\n\nText.", [ItemList, Paragraph], None),
    ("> Quoted.\n>\n> Still quoted.\n\nText.", [Quote, Paragraph], None),
    ("", [], None),
]


@pytest.mark.parametrize("intro, kinds, standfirst", INTRO)
def test_any_block_may_stand_before_the_first_section(intro, kinds, standfirst):
    issue = parse_issue(FM + f"# T\n\n{intro}\n\n## S\n\nText.\n", "issues/x.md")
    assert [type(b) for b in issue.intro] == kinds
    above, first, rest = issue.intro_parts
    assert (first.html if first else None) == standfirst
    assert (*above, *([first] if first else []), *rest) == issue.intro
    assert all(isinstance(b, Image) for b in above)


def test_a_quote_keeps_its_paragraphs_and_lines():
    [quote] = parse_issue(FM + "# T\n\n## S\n\n> First, [linked](https://example.org/q).\n>\n> Second.\n",
                          "issues/x.md").sections[0].blocks
    assert quote == Quote((Paragraph('First, <a href="https://example.org/q">linked</a>.', 10),
                           Paragraph("Second.", 12)), 10)


def test_reference_links_use_the_definitions_anywhere_in_the_body():
    issue = parse_issue(FM + "# T\n\n## S\n\n- In [five charts][ref]. ([Wire][w])\n\n[ref]: https://example.org/c\n"
                        "[w]: https://wire.example.org\n", "issues/x.md")
    item = issue.sections[0].blocks[0].items[0]
    assert (item.html, item.source_html) == ('In <a href="https://example.org/c">five charts</a>.',
                                             '<a href="https://wire.example.org">Wire</a>')
    assert issue.stray == ()


def test_link_syntax_that_did_not_take_is_noted_with_its_line():
    body = ("# T [x](a b)\n\nText\n[Atlantic Council(https://a.org)\n\n## S\n\n- One\n- [five][ref] (Wire)\n\n"
            "| a |\n|---|\n| [b]c.org |\n\n![A](https://example.org/a.png \"[cap](x y)\")\n")
    issue = parse_issue(FM + body, "issues/x.md")
    assert issue.stray == ((6, "T [x](a b)"), (9, "[Atlantic Council(https://a.org)"), (14, "[five][ref]"),
                           (18, "[b]c.org"), (20, "[cap](x y)"))


@pytest.mark.parametrize("front, expected", [
    ('subject = "It\'s the \\"axis\\""\npreheader = "\'Four\' states"', ("It’s the “axis”", "‘Four’ states")),
    ("subject = 'Dear {{ first_name | default(\"reader\") }}: \"news\"'\npreheader = 'P'",
     ("Dear %%first_name~cmVhZGVy%%: “news”", "P")),
    ('subject = "Already “curly”"\npreheader = "5\\" rule"', ("Already “curly”", '5" rule')),   # an inch mark stays
])
def test_subject_and_preheader_get_typographic_quotes(front, expected):
    issue = parse_issue(f"+++\n{front}\ndate = 2025-01-07\n+++\n# T\n", "issues/x.md")
    assert (issue.subject, issue.preheader) == expected


# (the settings, each problem named: line and message)
SETTINGS = [
    ('subject = "S\npreheader = "P\ndate = 2025-01-07',
     [(2, 'settings: a closing " is missing (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'),
      (3, 'settings: a closing " is missing (text needs "double quotes"; dates are YYYY-MM-DD without quotes)')]),
    ('subject = "S"\npreheader = "P"\ndate = 2024-13-01',
     [(4, "settings: date = 2024-13-01 is not a date (there is no month 13): write YYYY-MM-DD without quotes, "
          "e.g. 2024-12-01")]),
    ('subject = "S"\npreheader = "P"\ndate = 2024-02-30',
     [(4, "settings: date = 2024-02-30 is not a date (February has no day 30): write YYYY-MM-DD without "
          "quotes, e.g. 2024-12-01")]),
    ('subject = "S"\npreheader = "P"\ndate = 2024-12-1',
     [(4, "settings: date = 2024-12-1 is not a date (month and day take two digits each): write YYYY-MM-DD "
          "without quotes, e.g. 2024-12-01")]),
    ('subject = "S"\npreheader = "P"\ndate = 2024/12/01  # the first',
     [(4, "settings: date = 2024/12/01 is not a date: write YYYY-MM-DD without quotes, e.g. 2024-12-01")]),
    ('subject = S\npreheader = "P"\ndate = 1 December 2024\nimage = "https://example.org/a.png"\nimage_alt = x',
     [(2, 'settings: invalid value (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'),
      (4, 'settings: expected newline or end of document after a statement (text needs "double quotes"; '
          "dates are YYYY-MM-DD without quotes)"),
      (6, 'settings: invalid value (text needs "double quotes"; dates are YYYY-MM-DD without quotes)')]),
    ('subject = "S"\npreheader = "P"\ndate = 2025-01-07\nimage = [\n# a note',     # left open at the end
     [(5, 'settings: invalid value (text needs "double quotes"; dates are YYYY-MM-DD without quotes)')]),
    ('subject = "S"\nsubject = "T"\npreheader = """P\ndate = 2025-01-07',
     [(3, 'settings: cannot overwrite a value (text needs "double quotes"; dates are YYYY-MM-DD without quotes)'),
      (4, 'settings: a closing " is missing (text needs "double quotes"; dates are YYYY-MM-DD without quotes)')]),
]


@pytest.mark.parametrize("settings, expected", SETTINGS)
def test_every_mistake_in_the_settings_is_named_at_once(settings, expected):
    with pytest.raises(IssueSourceError) as caught:
        parse_issue(f"+++\n{settings}\n+++\n# T\n", "issues/2025-01.md")
    assert [(p.line, p.message) for p in caught.value.problems] == expected
