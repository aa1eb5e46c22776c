"""Schemathesis against the app's own OpenAPI schema on the real server: no input gives a 500, and
every response carries the security headers.

Driven through the Python API (schemathesis' pytest plugin does not run under pytest 9), each
operation with valid and invalid data, a bounded number of examples so it stays well under a minute.
Webhook bodies are also sent signed with the configured key, so the parser behind the signature
check meets generated input too; and the token routes get tokens shaped like ours.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

EXAMPLES = 20
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
SECURITY_HEADERS = ("x-content-type-options", "referrer-policy", "x-frame-options", "content-security-policy")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def check_operation(operation, mode, live, signer) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @SETTINGS
    def run(case):
        response = case.call_and_validate(checks=[not_a_server_error])
        assert all(h in response.headers for h in SECURITY_HEADERS), dict(response.headers)
        if operation.path == "/webhooks/sendgrid" and case.body is not None:
            raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body, default=repr).encode()
            signed = live.http.post("/webhooks/sendgrid", content=raw,
                                    headers={"content-type": "application/json", **signer.sign(raw)})
            assert signed.status_code < 500, (raw[:200], signed.text)

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE   # nothing to get wrong: an operation without inputs
    except Exception as exc:
        exc.add_note(f"operation {operation.label}, {mode.value} data")
        raise


def test_no_server_error_on_any_input(live, signer):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    for operation in operations:
        for mode in MODES:
            check_operation(operation, mode, live, signer)


# Tokens shaped like ours: itsdangerous-style (payload.stamp.signature, base64 payload "W..."),
# sealed ("r." + base64), and their broken cousins, on every token route.
B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120)
TOKENS = st.one_of(
    st.builds(lambda a, b, c: f"W{a}.{b}.{c}", B64, B64, B64),
    st.builds(lambda a: f"r.{a}", B64),
    st.builds(lambda a: f"r.{a}", st.text(max_size=60)),
)


@pytest.mark.parametrize("method, route", [("GET", "/confirm/"), ("POST", "/confirm/"),
                                           ("GET", "/unsubscribe/"), ("POST", "/unsubscribe/")])
def test_token_shaped_input_never_500s(live, method, route):
    @given(token=TOKENS)
    @SETTINGS
    def run(token):
        from urllib.parse import quote

        r = live.http.request(method, route + quote(token, safe="-_."))
        assert r.status_code < 500, (token, r.text)
        assert all(h in r.headers for h in SECURITY_HEADERS)

    run()
