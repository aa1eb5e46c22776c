"""Schemathesis against the app's own OpenAPI schema on the real server: no input gives a 500.

Driven through the Python API (schemathesis' pytest plugin does not run under pytest 9), each
operation with valid and invalid data, a bounded number of examples so it stays well under a minute.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

EXAMPLES = 20
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def check_operation(operation, mode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE   # nothing to get wrong: an operation without inputs
    except Exception as exc:
        exc.add_note(f"operation {operation.label}, {mode.value} data")
        raise


def test_no_server_error_on_any_input(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    for operation in operations:
        for mode in MODES:
            check_operation(operation, mode)
