"""Who may use the console: password hashes, session and API tokens, roles, failed-login limits.

Rules:
- Passwords are hashed with argon2 (argon2-cffi); tokens are 32 random bytes, stored as
  SHA-256 only, so a copy of the store gives no one a way in.
- Roles are ordered: a viewer reads, an operator also acknowledges, an admin also changes the
  registry and users.
- Failed logins are limited per user name and per address: after ``max_failures`` within
  ``window`` seconds, further attempts are refused (429) until the window has passed, even
  with the right password.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections import defaultdict, deque

import argon2
import argon2.exceptions

ROLES = ("viewer", "operator", "admin")
MIN_PASSWORD = 8

_hasher = argon2.PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so the answer takes as long."""
    return _hasher.hash("not a password anyone has")


def valid_user_name(name: str) -> bool:
    return 0 < len(name) <= 64 and name.isprintable() and " " not in name and name == name.strip()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a CSRF token (no timing hint about how much matched)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


class LoginLimiter:
    """Counts recent failed logins per key (a user name, an address)."""

    def __init__(
        self, max_failures: int = 5, window: float = 300.0, max_keys: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        # Bounded memory: someone trying a million invented names must not grow it forever.
        self.max_keys = max_keys
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return deque()
        return times

    def retry_after(self, keys: list[str], now: float) -> float:
        """Seconds until a login may be tried again (0: now)."""
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, self.window - (now - times[0]))
        return wait

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._failures) >= self.max_keys:
            for stale in [k for k, t in self._failures.items() if now - t[-1] > self.window]:
                del self._failures[stale]
            while len(self._failures) >= self.max_keys:  # still full: forget the oldest keys
                del self._failures[next(iter(self._failures))]
        for key in keys:
            self._failures[key].append(now)
            # Bounded memory: only the last max_failures matter.
            while len(self._failures[key]) > self.max_failures:
                self._failures[key].popleft()

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
