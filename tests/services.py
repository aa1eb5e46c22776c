"""What a test does when a real peer (PostgreSQL, Chromium, dovecot, ...) is missing.

On a laptop without it the test skips and says why. Under `.ci/run`, which installs and starts
every peer, MAILER_REQUIRE_SERVICES=1 is set and the same test fails instead, so CI can never be
green because something quietly was not there.
"""

from __future__ import annotations

import os

import pytest

REQUIRED = bool(os.environ.get("MAILER_REQUIRE_SERVICES"))


def missing(reason: str) -> None:
    """Skip (or, under CI, fail) the current test because `reason`."""
    if REQUIRED:
        pytest.fail(f"{reason} (MAILER_REQUIRE_SERVICES is set: .ci/run should have provided it)",
                    pytrace=False)
    pytest.skip(reason)
