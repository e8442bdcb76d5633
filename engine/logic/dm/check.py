"""``kairos check-config`` for distributed marketing: every problem under ``config/dm`` as
``file:line: message``, from the same loader the engine uses."""

from __future__ import annotations

from pathlib import Path

from engine.logic.decisions.config import ConfigError
from engine.logic.dm.config import load_dm


def check_dm(config_dir: str | Path) -> list[str]:
    """The problems of ``<config_dir>/dm`` ([] when it loads, or when there is no dm folder)."""
    try:
        load_dm(config_dir)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []
