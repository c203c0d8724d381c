"""Password hashing: argon2id through pwdlib, off the event loop.

A hash takes a noticeable fraction of a second of CPU on purpose, so the async
functions run it in a thread. Verifying against a missing hash (unknown email,
a user without a password) still spends the same time on a dummy hash: the
response time must not tell an attacker which emails exist.
"""

from __future__ import annotations

import asyncio
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

#: Password length limits (characters). The upper bound caps the hashing work a request can ask for.
MIN_PASSWORD = 8
MAX_PASSWORD = 256

_hasher = PasswordHash((Argon2Hasher(),))


@cache
def _dummy_hash() -> str:
    """A hash nobody knows the password of, computed once."""
    return _hasher.hash("switchyard: no such user")


def _verify(password: str, stored: str | None) -> tuple[bool, str | None]:
    if stored is None:
        _hasher.verify(password, _dummy_hash())
        return False, None
    try:
        return _hasher.verify_and_update(password, stored)
    except Exception:  # an unrecognised or corrupt hash never matches
        return False, None


def hash_password_sync(password: str) -> str:
    """The argon2id hash of a password (blocking; for scripts)."""
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """The argon2id hash of a password."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches `stored`, and a fresh hash when the stored one uses outdated parameters.

    `stored` None (no such user, no password set) takes as long as a real check and never matches.
    """
    return await asyncio.to_thread(_verify, password, stored)
