"""The readers' languages we ship: a gettext catalog each (LANG/LC_MESSAGES/messages.po, compiled
to messages.mo beside it), made from messages.pot. English is the source text itself.

Only names live here, so that the config's reader can check `[newsletter] language` without
loading a catalog; mailer/i18n.py loads them. How to add a string or a language: docs/languages.md.
"""

from __future__ import annotations

from pathlib import Path

LANGUAGES = ("en", "fr", "de", "es")   # English first: the source text and the last resort
DIRECTORY = Path(__file__).resolve().parent
DOMAIN = "messages"
