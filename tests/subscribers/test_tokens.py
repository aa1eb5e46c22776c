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
    import hashlib

    from itsdangerous import URLSafeTimedSerializer

    odd = URLSafeTimedSerializer(KEY, salt="crank-mailer/unsubscribe/v1",
                                 signer_kwargs={"digest_method": hashlib.sha256}).dumps(["7", 3])
    with pytest.raises(TokenError):
        verify_token(KEY, "unsubscribe", odd)


def test_expiry_and_unknown_purpose():
    token = make_token(KEY, "confirm", 1, 2, now=1_800_000_000.0)
    later = 1_800_000_000.0 + 3 * 86400
    with pytest.raises(TokenError, match="expired"):
        verify_token(KEY, "confirm", token, max_age=86400, now=later)
    assert verify_token(KEY, "confirm", token, max_age=4 * 86400, now=later) == (1, 2)
    assert verify_token(KEY, "confirm", token, now=later) == (1, 2)  # unsubscribe-style: no expiry by default
    with pytest.raises(TokenError, match="purpose"):
        make_token(KEY, "login", 1, 2)


def test_forget_hash_is_keyed():
    assert forget_hash(KEY, "ann@example.com") == forget_hash(KEY, "ann@example.com")
    assert forget_hash(KEY, "ann@example.com") != forget_hash("other" * 8, "ann@example.com")
    assert "ann" not in forget_hash(KEY, "ann@example.com")
    with pytest.raises(SecretRequired, match="MAILER_SECRET_KEY"):
        forget_hash("", "ann@example.com")


@pytest.mark.parametrize("purpose, list_id", [("unsubscribe", 3), ("confirm", 1)])
def test_token_maker_makes_exactly_make_tokens_tokens(purpose, list_id):
    from subscribers.tokens import token_maker

    at = 1_733_000_000.5                                       # one instant for both
    make = token_maker(KEY, purpose, list_id, now=at)
    for subscriber_id in (1, 7, 123456789):
        token = make(subscriber_id)
        assert token == make_token(KEY, purpose, subscriber_id, list_id, now=at)
        assert verify_token(KEY, purpose, token) == (subscriber_id, list_id)


MEMBER_KEY = "0123456789abcdef"


@pytest.mark.parametrize("purpose, subscriber_id, list_id", [("unsubscribe", 1, 1), ("confirm", 2**31 - 1, 42)])
def test_keyed_round_trip_stays_header_short(purpose, subscriber_id, list_id):
    token = make_token(KEY, purpose, subscriber_id, list_id, MEMBER_KEY)
    claim = verify_token(KEY, purpose, token)
    assert claim == (subscriber_id, list_id) and (claim.key, claim.subscriber_id) == (MEMBER_KEY, subscriber_id)
    assert abs(claim.issued - __import__("time").time()) < 5
    assert len(token) < 110 and all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize("payload", [b'[7,3,"0123456789ABCDEF"]', b'[7,3,"short"]', b"[7,3,12345]",
                                     b'[7,3,"0123456789abcdef","x"]', b"[7,3.5]", b"[0,3]",
                                     b"[7,99999999999999999999]"])
def test_signed_but_odd_keyed_payloads_are_rejected(payload):
    import hashlib
    import json

    from itsdangerous import URLSafeTimedSerializer

    odd = URLSafeTimedSerializer(KEY, salt="crank-mailer/unsubscribe/v1",
                                 signer_kwargs={"digest_method": hashlib.sha256}).dumps(json.loads(payload))
    with pytest.raises(TokenError):
        verify_token(KEY, "unsubscribe", odd)


def test_token_maker_binds_each_reader_to_their_key():
    from subscribers.tokens import token_maker

    at = 1_800_000_000.0
    keys = {5: MEMBER_KEY, 6: "fedcba9876543210"}
    make = token_maker(KEY, "unsubscribe", 9, keys=keys.__getitem__, now=at)
    for sid, key in keys.items():
        assert make(sid) == make_token(KEY, "unsubscribe", sid, 9, key, now=at)
        assert verify_token(KEY, "unsubscribe", make(sid)).key == key


def test_sealed_requests_hide_the_address_and_expire():
    from subscribers.tokens import open_request, seal_request

    token = seal_request(KEY, 3, "ann@example.com", "Ann", now=1_800_000_000.0)
    assert "ann" not in token.lower() and all(c.isalnum() or c in "-_." for c in token)
    assert open_request(KEY, token, now=1_800_000_100.0) == ([3], "ann@example.com", "Ann", 1_800_000_000.0)
    with pytest.raises(TokenError, match="expired"):
        open_request(KEY, token, max_age=60, now=1_800_000_100.0)
    for bad in (token[:-3] + "AAA", seal_request("other-key" * 4, 3, "ann@example.com"), "r.", "r.!!", "W.x"):
        with pytest.raises(TokenError):
            open_request(KEY, bad)


@pytest.mark.parametrize("name", ["", "A", "An", "Ann", "Anne"])   # every length of base64 tail
def test_sealed_requests_open_whatever_their_length(name):
    from subscribers.tokens import open_request, seal_request

    token = seal_request(KEY, 3, "ann@example.com", name, now=1_800_000_000.0)
    assert open_request(KEY, token, now=1_800_000_001.0) == ([3], "ann@example.com", name, 1_800_000_000.0)


def test_a_sealed_request_for_several_lists():
    from subscribers.tokens import open_request, seal_request

    token = seal_request(KEY, [3, 4], "ann@example.com", "Ann", now=1_800_000_000.0)
    assert open_request(KEY, token, now=1_800_000_001.0) == ([3, 4], "ann@example.com", "Ann", 1_800_000_000.0)


def test_a_group_token_names_several_memberships_and_only_verify_claims_reads_it():
    from subscribers.tokens import make_group_token, verify_claims

    other = "fedcba9876543210"
    group = make_group_token(KEY, "confirm", 7, [(3, MEMBER_KEY), (4, other)], now=1_800_000_000.0)
    claims = verify_claims(KEY, "confirm", group, now=1_800_000_001.0)
    assert claims == [(7, 3), (7, 4)] and [c.key for c in claims] == [MEMBER_KEY, other]
    with pytest.raises(TokenError):                 # a path that takes one membership never acts on a group
        verify_token(KEY, "confirm", group)
    with pytest.raises(TokenError):
        verify_claims(KEY, "unsubscribe", group)    # another purpose
    with pytest.raises(TokenError, match="expired"):
        verify_claims(KEY, "confirm", group, max_age=60, now=1_800_000_100.0)
    one = make_group_token(KEY, "confirm", 7, [(3, MEMBER_KEY)])
    assert one == make_token(KEY, "confirm", 7, 3, MEMBER_KEY) and verify_claims(KEY, "confirm", one) == [(7, 3)]
    with pytest.raises(TokenError):
        make_group_token(KEY, "confirm", 7, [])


@pytest.mark.parametrize("payload", [
    [7, 3, "0123456789abcdef", 4],                   # even length
    [7, 3, "0123456789abcdef", 4, "nothex"],
    [7, 3, "0123456789abcdef", 0, "0123456789abcdef"],
    "not a list",
])
def test_group_tokens_of_a_wrong_shape_are_refused(payload):
    from itsdangerous import URLSafeTimedSerializer

    from subscribers.tokens import verify_claims

    forged = URLSafeTimedSerializer(KEY, salt="crank-mailer/confirm/v1",
                                    signer_kwargs={"digest_method": __import__("hashlib").sha256}).dumps(payload)
    with pytest.raises(TokenError):
        verify_claims(KEY, "confirm", forged)
