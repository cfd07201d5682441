"""The short trust in verified API keys: how long it lasts, what forgets it, and how much it holds."""

from __future__ import annotations

from app.api.auth import Principal, VerifiedKeys

B = Principal(role="account", account_id=2, key_prefix="ta_acct_b", key_id=2)
C = Principal(role="account", account_id=3, key_prefix="ta_acct_c", key_id=3)


def test_a_key_is_trusted_for_its_time_only() -> None:
    now = [0.0]
    keys = VerifiedKeys(ttl_s=1.0, now=lambda: now[0])
    keys.remember("hash-b", B, keys.generation)
    now[0] = 0.99
    assert keys.get("hash-b") == B
    now[0] = 1.0
    assert keys.get("hash-b") is None


def test_a_lookup_that_straddles_a_revocation_is_not_remembered() -> None:
    """The request looked the key up before the revocation committed and finishes after it: trusting its
    answer would accept a revoked key for another `ttl_s`."""
    keys = VerifiedKeys(ttl_s=60.0, now=lambda: 0.0)
    keys.remember("hash-b", B, keys.generation)
    began = keys.generation  # a lookup begins
    keys.forget_all()  # a revocation commits meanwhile
    assert keys.get("hash-b") is None
    keys.remember("hash-c", C, began)
    assert keys.get("hash-c") is None
    keys.remember("hash-c", C, keys.generation)  # a lookup that began after it
    assert keys.get("hash-c") == C


def test_it_holds_at_most_max_keys_the_oldest_going_first() -> None:
    keys = VerifiedKeys(ttl_s=60.0, max_keys=2, now=lambda: 0.0)
    for n in range(3):
        keys.remember(f"hash-{n}", B, keys.generation)
    assert [keys.get(f"hash-{n}") for n in range(3)] == [None, B, B]
