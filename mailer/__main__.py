"""The `mailer` process: `mailer ...` and `python -m mailer ...` run the CLI (mailer.cli) here.

What this adds is the process around the CLI, kept out of mailer.cli so that importing the CLI (as
the tests do) changes nothing: when CPython's cycle collector runs. Start-up imports a few hundred
modules whose objects live as long as the process; the collector would scan them again and again
while they load, and once more, all of them, on the way out: about a seventh of
`mailer issue build`, which an editor runs over and over. So:
- it stays off while the CLI loads, and what start-up made is frozen (never scanned again);
- it runs as usual during the command (long sends and the servers need it);
- the final collection at exit is skipped when the command opened no database. That collection is
  what closes SQLAlchemy's pooled connections (and lets SQLite fold its -wal file back into the
  database), so commands that used one keep it; for the others the operating system frees the
  memory, and their files are closed already (reference counting, `with` blocks, atexit).
"""

import gc
import sys


def entry() -> None:
    gc.disable()
    from mailer.cli import main

    gc.freeze()
    gc.enable()
    code = main()
    if "sqlalchemy" not in sys.modules:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
