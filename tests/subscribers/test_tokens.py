"""Signed confirm/unsubscribe tokens: unforgeable, bound to subscriber, list and purpose."""

from __future__ import annotations

import base64

import pytest

from subscribers.errors import SecretRequired, TokenError
from subscribers.tokens import forget_hash, make_token, verify_token

KEY = "k" * 32


def _tamper_payload(token: str, new_payload: bytes) -> str:
    """Swap the signed payload for another, keeping the old timestamp and signature."""
    _payload, stamp, signature = token.split(".")
    return ".".join([base64.urlsafe_b64encode(new_payload).decode().rstrip("="), stamp, signature])


@pytest.mark.parametrize("purpose, subscriber_id, list_id", [("unsubscribe", 1, 1), ("confirm", 123456789, 42)])
def test_round_trip(purpose, subscriber_id, list_id):
    token = make_token(KEY, purpose, subscriber_id, list_id)
    assert verify_token(KEY, purpose, token) == (subscriber_id, list_id)
    assert len(token) < 100 and all(c.isalnum() or c in "-_." for c in token)  # URL-safe, header-short


@pytest.mark.parametrize("case, make_bad", [
    ("forged with another key", lambda t: make_token("another-key" * 3, "unsubscribe", 7, 3)),
    ("signature tampered", lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB")),
    ("payload swapped to another list", lambda t: _tamper_payload(t, b"[7,4]")),
    ("payload swapped to another subscriber", lambda t: _tamper_payload(t, b"[8,3]")),
    ("truncated", lambda t: t[: len(t) // 2]),
    ("empty", lambda t: ""),
    ("garbage", lambda t: "not.a.token"),
    ("confirm token used to unsubscribe", lambda t: make_token(KEY, "confirm", 7, 3)),
])
def test_rejects(case, make_bad):
    good = make_token(KEY, "unsubscribe", 7, 3)
    with pytest.raises(TokenError):
        verify_token(KEY, "unsubscribe", make_bad(good))


def test_signed_but_wrong_shape_is_rejected():
    from itsdangerous import URLSafeTimedSerializer
    import hashlib

    odd = URLSafeTimedSerializer(KEY, salt="crank-mailer/unsubscribe/v1",
                                 signer_kwargs={"digest_method": hashlib.sha256}).dumps(["7", 3])
    with pytest.raises(TokenError):
        verify_token(KEY, "unsubscribe", odd)


def test_expiry_and_unknown_purpose(monkeypatch):
    import time

    token = make_token(KEY, "confirm", 1, 2)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3 * 86400)
    with pytest.raises(TokenError, match="expired"):
        verify_token(KEY, "confirm", token, max_age=86400)
    assert verify_token(KEY, "confirm", token) == (1, 2)  # unsubscribe-style: no expiry by default
    with pytest.raises(TokenError, match="purpose"):
        make_token(KEY, "login", 1, 2)


def test_forget_hash_is_keyed():
    assert forget_hash(KEY, "ann@example.com") == forget_hash(KEY, "ann@example.com")
    assert forget_hash(KEY, "ann@example.com") != forget_hash("other" * 8, "ann@example.com")
    assert "ann" not in forget_hash(KEY, "ann@example.com")
    with pytest.raises(SecretRequired, match="MAILER_SECRET_KEY"):
        forget_hash("", "ann@example.com")


@pytest.mark.parametrize("purpose, list_id", [("unsubscribe", 3), ("confirm", 1)])
def test_token_maker_makes_exactly_make_tokens_tokens(purpose, list_id, monkeypatch):
    from subscribers.tokens import token_maker

    monkeypatch.setattr("time.time", lambda: 1_733_000_000.5)  # one instant for both
    make = token_maker(KEY, purpose, list_id)
    for subscriber_id in (1, 7, 123456789):
        token = make(subscriber_id)
        assert token == make_token(KEY, purpose, subscriber_id, list_id)
        assert verify_token(KEY, purpose, token) == (subscriber_id, list_id)
