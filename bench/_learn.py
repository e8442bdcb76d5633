"""Helpers shared by the offline learning benches (no servers): load, timing, printing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any


def uptime() -> str:
    """`uptime`'s line (the machine is shared: read every figure beside it)."""
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "load " + " ".join(os.getloadavg().__repr__().strip("()").split(", "))


def loadavg() -> float:
    return os.getloadavg()[0]


def per_call_us(fn: Callable[[int], Any], n: int) -> float:
    """Mean wall-clock microseconds of fn(i) over i in range(n)."""
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1e6


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def last_line(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, separators=(", ", ": ")), flush=True)
