"""Typer sub-apps, one module per command group; `mailer.cli` wires them.

Command modules import only typer and light modules at import time (start-up is part of what
editors feel); each command imports the stages it uses inside its body.
"""
