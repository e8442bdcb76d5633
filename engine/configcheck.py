"""`kairos check-config`: validate every file under the config folder, print file, line, reason."""

from __future__ import annotations

from pathlib import Path

from engine.logic.decisions.config import ConfigError, load_config
from engine.logic.dm.check import check_dm
from engine.settings import SettingsError, load_settings


def check_all(config_dir: Path) -> list[str]:
    problems: list[str] = []
    try:
        load_settings({}, config_dir)
    except SettingsError as exc:
        problems.append(str(exc))
    try:  # segments and campaigns: the same loader (and messages) as the hot reload
        load_config(config_dir)
    except ConfigError as exc:
        problems.extend(str(p) for p in exc.problems)
    problems.extend(check_dm(config_dir))  # config/dm: brand, templates, journeys
    return problems
