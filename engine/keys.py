"""Every Redis key Kairos writes, in one place.

A profile and everything about one visitor carry the profile id as a hash tag
(`{v:abc}` / `{u:42}`), so each per-event script touches one Redis Cluster slot. The
identity merge is the one step that touches two profiles (see README, "Scaling").
"""

from __future__ import annotations


def visitor_pid(visitor_id: str) -> str:
    return f"v:{visitor_id}"


def user_pid(user_id: str) -> str:
    return f"u:{user_id}"


def profile(pid: str) -> str:
    """The profile blob: 4-byte revision + msgpack snapshot."""
    return f"kp:{{{pid}}}"


def alias(visitor_id: str) -> str:
    """Which profile an identified visitor now belongs to (value: a pid)."""
    return f"ka:{{{visitor_pid(visitor_id)}}}"


WORKERS = "kx:workers"  # hash: worker id -> JSON of its own measurements


def live_second(second: int) -> str:
    """Counters of one second (hash: t:<type>, c:<channel>, accepted, rejected, h:<hist>:<bucket>)."""
    return f"kx:s:{second}"
