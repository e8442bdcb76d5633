"""`var/run/stack.json`: where a running `kairos up` is (its pid and the addresses of the
servers it started), so that `kairos keys`, `kairos users` and the benchmarks run from the
project folder find the embedded stack by themselves. Mode 0600: it holds the database
password."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def path(var_dir: Path) -> Path:
    return Path(var_dir) / "run" / "stack.json"


def write(var_dir: Path, info: dict[str, Any]) -> None:
    p = path(var_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), **info}, f)
    tmp.replace(p)


def read(var_dir: Path) -> dict[str, Any] | None:
    """The running stack's info, or None when no `kairos up` of this folder is alive."""
    p = path(var_dir)
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info  # type: ignore[no-any-return]


def remove(var_dir: Path) -> None:
    with contextlib.suppress(OSError):
        path(var_dir).unlink()
