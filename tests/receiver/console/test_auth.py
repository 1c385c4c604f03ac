"""Passwords, tokens and the failed-login limit, on their own (a fake clock: no waiting)."""

from __future__ import annotations

from receiver.console.auth import (
    LoginLimiter,
    hash_password,
    role_allows,
    same_secret,
    token_hash,
    verify_password,
)


def test_password_hash_verifies_only_the_password() -> None:
    """An argon2 hash accepts its password and nothing else; no hash accepts nothing."""
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct hors")
    assert not verify_password(None, "correct horse")
    assert not verify_password("not a hash", "correct horse")


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "operator")
    assert role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator")
    assert not role_allows("operator", "admin")
    assert not role_allows("root", "viewer")


def test_tokens_are_stored_as_digests_and_compared_whole() -> None:
    assert token_hash("abc") == token_hash("abc") != token_hash("abd")
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("", "")
    assert not same_secret(None, "abc")


def test_failed_logins_lock_a_key_for_the_window_then_release_it() -> None:
    """Five failures lock the user and the address; success clears them; the lock ends when
    the window has passed since the oldest failure."""
    limiter = LoginLimiter(max_failures=5, window=300.0)
    keys = ["user:otto", "addr:127.0.0.1"]
    for second in range(4):
        limiter.failed(keys, float(second))
    assert limiter.retry_after(keys, 4.0) == 0
    limiter.failed(keys, 4.0)
    assert limiter.retry_after(["user:otto"], 5.0) == 295.0
    assert limiter.retry_after(["addr:127.0.0.1", "user:other"], 5.0) == 295.0
    assert limiter.retry_after(["user:other", "addr:10.0.0.9"], 5.0) == 0
    assert limiter.retry_after(keys, 301.0) == 0  # the oldest failure left the window
    limiter.succeeded(keys)
    assert limiter.retry_after(keys, 5.0) == 0


def test_invented_names_do_not_grow_memory_without_bound() -> None:
    limiter = LoginLimiter(max_failures=5, window=300.0, max_keys=100)
    for n in range(1000):
        limiter.failed([f"user:{n}"], float(n))
    assert len(limiter._failures) <= 100
