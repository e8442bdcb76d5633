"""One holder of the configuration loaded from the config folder, hot-reloaded.

Each kind of configuration is a named *loader*: a function of the config folder that returns
the loaded object or raises (with `problems`, like `engine.logic.decisions.config.ConfigError`,
for file:line reasons). The hub loads every loader at start, then watches the folder
(`watchfiles.awatch`, debounced) and reloads: a loader's new value replaces the old one
atomically (one reference swap) only when it loads cleanly; otherwise its problems are
logged and kept in `errors[name]`, and the last good value keeps serving.

    hub = ConfigHub(settings.config_dir, debounce_ms=300)
    hub.register("decisions", load_config)        # done by default_hub()
    await hub.start()                             # loads, then watches
    hub.get("decisions")                          # the current value (or None if never valid)
    await hub.stop()

The API (engine/services.py: decisions and recipes) and the stream worker
(streams/hooks/__init__.py: decisions) each own one hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.logic.decisions.config import Config, load_config

log = logging.getLogger("kairos.config")

Loader = Callable[[Path], Any]


@dataclass
class _Entry:
    loader: Loader
    paths: tuple[str, ...]  # sub-folders or files (relative) whose changes reload it; () = any
    value: Any = None
    loaded_at: float = 0.0


def problems_of(exc: BaseException) -> list[str]:
    """`file:line: reason` lines of a loader failure."""
    found = getattr(exc, "problems", None)
    if found:
        return [str(p) for p in found]
    return [f"{type(exc).__name__}: {exc}"]


class ConfigHub:
    def __init__(self, directory: Path, *, debounce_ms: int = 300) -> None:
        self.directory = Path(directory)
        self.debounce_ms = debounce_ms
        self._entries: dict[str, _Entry] = {}
        self.errors: dict[str, list[str]] = {}
        self.version = 0  # bumps on every successful swap
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- registry ---------------------------------------------------------------------------
    def register(self, name: str, loader: Loader, paths: tuple[str, ...] = ()) -> None:
        """Add a loader (before or after `start`; after, it loads at once)."""
        self._entries[name] = _Entry(loader, paths)
        if self._task is not None:
            self.reload([name])

    def get(self, name: str) -> Any:
        entry = self._entries.get(name)
        return entry.value if entry else None

    @property
    def decisions(self) -> Config | None:
        return self.get("decisions")  # type: ignore[no-any-return]

    # -- loading ----------------------------------------------------------------------------
    def reload(self, names: list[str] | None = None) -> dict[str, bool]:
        """Load the named loaders (all by default); swap each one that loads cleanly."""
        done: dict[str, bool] = {}
        for name in names if names is not None else list(self._entries):
            entry = self._entries[name]
            try:
                value = entry.loader(self.directory)
            except Exception as exc:
                probs = problems_of(exc)
                self.errors[name] = probs
                keeping = "the last good configuration keeps serving" if entry.value is not None \
                    else "nothing is loaded"
                log.error("config %s rejected (%s):\n  %s", name, keeping, "\n  ".join(probs))
                done[name] = False
                continue
            entry.value = value
            entry.loaded_at = time.time()
            self.errors.pop(name, None)
            self.version += 1
            done[name] = True
            log.info("config %s loaded from %s", name, self.directory)
        return done

    def _affected(self, changed: set[str]) -> list[str]:
        names = []
        for name, entry in self._entries.items():
            if not entry.paths:
                names.append(name)
                continue
            for ch in changed:
                rel = Path(ch).resolve()
                if any(_under(rel, (self.directory / p).resolve()) for p in entry.paths):
                    names.append(name)
                    break
        return names

    # -- watching ---------------------------------------------------------------------------
    async def start(self, watch: bool = True) -> None:
        self.reload()
        if watch and self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._watch(), name="kairos-config-watch")

    async def _watch(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                async for changes in awatch(self.directory, debounce=self.debounce_ms, step=50,
                                            stop_event=self._stop, recursive=True):
                    names = self._affected({path for _, path in changes})
                    if names:
                        self.reload(names)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher must not die: retry after a pause
                log.warning("config watch failed (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def status(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "version": self.version,
            "loaded": {n: e.value is not None for n, e in self._entries.items()},
            "errors": dict(self.errors),
        }


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def default_hub(directory: Path, debounce_ms: int = 300) -> ConfigHub:
    """A hub with the decision config (segments and campaigns) registered."""
    hub = ConfigHub(directory, debounce_ms=debounce_ms)
    hub.register("decisions", load_config, ("segments", "campaigns"))
    return hub
