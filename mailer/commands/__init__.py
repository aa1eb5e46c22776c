"""Typer sub-apps, one module per command group; `mailer.cli` wires them.

This package is where the CLI's start-up tricks live, and the only one: `mailer --help` and every
command import all of these modules, so they import only typer and light modules at the top, and
each command imports the stages it uses (compose, dispatch, the store, SQLAlchemy, rich...) inside
its body. Importing every stage at start-up would cost each command several times what the whole
CLI costs now (BENCHMARKS.md, "CLI start-up"). Everywhere else in mailer/ and subscribers/ imports
sit at module level; the few exceptions say why where they are.
"""
