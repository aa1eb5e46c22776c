"""A missing peer skips on a laptop and fails under CI (tests/services.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
from tests.services import missing

def test_needs_a_peer():
    missing("no such peer here")
"""


@pytest.mark.parametrize("required, outcome", [("", "1 skipped"), ("1", "1 failed")])
def test_missing_peer(tmp_path, required, outcome):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    env = {**os.environ, "MAILER_REQUIRE_SERVICES": required, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert outcome in run.stdout, run.stdout + run.stderr
