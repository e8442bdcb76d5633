"""The Redis edge, in domain words: every key format (`keys`), the write contract the stream
commits (`writes`), and one module per kind of state (profiles, activity, catalog, the
decision and recommendation reads, live counters, model snapshots). Every Lua script is a
file in `lua/`, loaded with `script(name)`.

This package's `__init__` imports nothing heavy: `keys` and `writes` are plain data and the
pure stream hooks use them without pulling in a Redis client.
"""

from __future__ import annotations

from pathlib import Path

LUA = Path(__file__).with_name("lua")


def script(name: str) -> str:
    """The text of `lua/<name>.lua`."""
    return (LUA / f"{name}.lua").read_text(encoding="utf-8")
