"""Passwords: argon2id (argon2-cffi's defaults: RFC 9106's second recommended setting)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()
MIN_LENGTH = 10
MAX_LENGTH = 1024


class PasswordError(ValueError):
    """The password is refused; the message says why."""


def check_new(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"must be at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_new(password)
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the user exists: verify against a dummy hash when none
    is stored, so timing does not tell which e-mail addresses have accounts."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


@functools.cache
def _dummy() -> str:
    return _HASHER.hash("kairos-dummy-password-for-timing")
