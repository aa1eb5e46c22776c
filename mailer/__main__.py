"""The `mailer` process: `mailer ...` and `python -m mailer ...` run the CLI (mailer.cli) here.

What this adds is the process around the CLI, kept out of mailer.cli so that importing the CLI (as
the tests do) changes nothing: when CPython's cycle collector runs. Start-up imports a few hundred
modules whose objects live as long as the process; the collector would scan them again and again
while they load, and once more, all of them, on the way out: about a seventh of
`mailer issue build`, which an editor runs over and over. So:
- it stays off while the CLI loads, and what start-up made is frozen (never scanned again);
- it runs as usual during the command (long sends and the servers need it);
- the final collection at exit is skipped: the command's database connections are closed already
  (mailer.cli.main disposes every Engine when the command ends: mailer/engines.py), its files too
  (reference counting, `with` blocks, atexit), and the operating system frees the memory.
"""

import gc
import sys


def entry() -> None:
    gc.disable()
    from mailer.cli import main  # loaded with the collector off: see above

    gc.freeze()
    gc.enable()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
