"""The models the learner published, as one API process serves them: `PublishedModels`.

A background task re-reads the version of every published model every `model_reload_s` (one
small hash), fetches the bytes of the ones that changed and swaps in a new mapping campaign ->
bandit (one reference swap), each model's probabilities computed before the swap
(`policy.warm`), so no decision integrates them. It rebuilds the mapping too when the campaign configuration
changes (a new learning campaign starts from its prior; a changed policy from a fresh model).
The decision path only reads `current()`: it never waits for Redis or for a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from engine.confighub import ConfigHub
from engine.logic.decisions.policy import Bandit, restore_model, warm
from engine.logic.rank import RANK_MODEL
from engine.store.learning import ModelStore

log = logging.getLogger("kairos.models")


class PublishedModels:
    def __init__(self, store: ModelStore, hub: ConfigHub, reload_s: float = 1.0,
                 rank_model: Callable[[bytes | None], Any] | None = None) -> None:
        self.store = store
        self.hub = hub
        self.reload_s = reload_s
        self.versions: dict[str, int] = {}
        self._blobs: dict[str, bytes] = {}
        self._models: Mapping[str, Bandit] = {}
        self._rank_factory = rank_model
        self._rank: Any = rank_model(None) if rank_model else None
        self._config_version = -1
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def current(self) -> Mapping[str, Bandit]:
        """campaign id -> the bandit to decide with (the newest loaded version)."""
        return self._models

    def rank_model(self) -> Any:
        """The Rank/Reward API's model (engine/logic/rank.py), the newest loaded version."""
        return self._rank

    def version(self, campaign_id: str) -> int:
        """The published version being served (0: none published yet, the prior)."""
        return self.versions.get(campaign_id, 0)

    async def metrics_lines(self) -> bytes:
        """The learner's counters and drift detections, and the versions served (/metrics)."""
        from engine import metrics

        try:
            stats = await self.store.learner_stats()
        except Exception:  # Redis away: the versions this process serves still show
            stats = {}
        return metrics.learner_lines(stats, self.versions)

    async def refresh(self) -> bool:
        """Load what changed; True when the served mapping was replaced."""
        versions = await self.store.versions()
        changed = [n for n, v in versions.items() if self.versions.get(n) != v]
        if changed:
            self._blobs.update(await self.store.models(changed))
        config = self.hub.decisions
        if not changed and self.hub.version == self._config_version:
            return False
        self._config_version = self.hub.version
        models: dict[str, Bandit] = {}
        if config is not None:
            for cid, c in config.campaigns.items():
                if c.learns:
                    models[cid] = warm(c, restore_model(c.policy, self._blobs.get(cid)))
        self._models = models
        if self._rank_factory is not None and (RANK_MODEL in changed or self._rank is None):
            self._rank = self._rank_factory(self._blobs.get(RANK_MODEL))
        self.versions = {n: versions[n] for n in versions if n in self._blobs}
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep serving what is loaded
                self.failures += 1
                if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                    log.warning("model reload failed (%d so far): %s", self.failures, exc)
            await asyncio.sleep(self.reload_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kairos-model-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
