"""Off-policy evaluation of a learning campaign's logged decisions: `Evaluations`.

Reads the newest rows of the campaign's learning log (what the learner joined), the campaign's
variants, control share and weights from the configuration and the current bandit's
probabilities, and runs the pure evaluation (engine/logic/decisions/evaluation.py) in a
thread: the bootstrap costs CPU, the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.confighub import ConfigHub
from engine.flows.campaigns import UnknownCampaign
from engine.flows.models import PublishedModels
from engine.logic.decisions.evaluation import bandit_candidate, candidates_for, evaluate_log
from engine.logic.decisions.monitor import traffic_over_time
from engine.store.learning import ModelStore

MAX_ROWS = 20_000
MAX_BOOTSTRAP = 1000


class NotLearning(LookupError):
    """The campaign exists but picks its variants by a fixed split (nothing is logged)."""


class Evaluations:
    def __init__(self, store: ModelStore, hub: ConfigHub, models: PublishedModels) -> None:
        self.store = store
        self.hub = hub
        self.models = models

    async def campaign(self, campaign_id: str, last: int = MAX_ROWS, n_bootstrap: int = 200,
                       seed: int = 0) -> dict[str, Any]:
        config = self.hub.decisions
        campaign = config.campaigns.get(campaign_id) if config is not None else None
        if campaign is None:
            raise UnknownCampaign(campaign_id)
        if not campaign.learns:
            raise NotLearning(campaign_id)
        rows = await self.store.logged(campaign_id, min(max(last, 1), MAX_ROWS))
        arms = [v.id for v in campaign.variants]
        model = self.models.current().get(campaign_id)
        bandit = bandit_candidate(model, arms) if model is not None else None
        weights = dict(campaign.weights)
        cands = candidates_for(arms, weights, bandit, rows)
        doc = await asyncio.to_thread(evaluate_log, rows, arms, campaign.control_percent / 100.0,
                                      cands, min(max(n_bootstrap, 10), MAX_BOOTSTRAP), seed)
        doc["traffic_over_time"] = traffic_over_time(rows, arms)
        doc["campaign"] = campaign_id
        doc["policy"] = campaign.policy.kind
        doc["model_version"] = self.models.version(campaign_id)
        return doc
