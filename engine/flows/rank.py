"""The Rank/Reward API's use-cases, made once per API process: `Ranker`.

`rank` validates the request (engine/logic/rank.py), decides with the learner's published
model (engine/flows/models.py `PublishedModels.rank_model`, never waiting for it), and appends
the decision to the `rank` topic keyed by its event id (so its rewards, keyed alike, come after
it on one partition) before answering; `reward` and `activate` append their records the same
way. The learner (streams/learner.py) joins them and learns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.eventlog import EventLog, LogUnavailable
from engine.flows.models import PublishedModels
from engine.logic.rank import (
    RANK_MODEL,
    RankError,
    activation_record,
    event_id_ok,
    parse_rank,
    parse_reward,
    rank,
    record,
    reward_record,
)

_enc = msgspec.msgpack.Encoder()


def _token() -> str:
    return os.urandom(8).hex()


class Ranker:
    def __init__(self, models: PublishedModels, log: EventLog, topic: str,
                 clock: Callable[[], float] = time.time, token: Callable[[], str] = _token
                 ) -> None:
        self.models = models
        self.log = log
        self.topic = topic
        self.clock = clock
        self.token = token

    async def _append(self, event_id: str, rec: dict[str, Any]) -> None:
        await self.log.append([(event_id.encode(), _enc.encode([rec]))], self.topic)

    async def rank(self, doc: Any) -> dict[str, Any]:
        """The answer of `POST /v1/rank`; RankError for a bad request, LogUnavailable when
        the decision could not be logged (then nothing could learn from it)."""
        req = parse_rank(doc)
        eid = req.event_id or self.token()
        model = self.models.rank_model()
        answer, slots = rank(model, req, eid)
        await self._append(eid, record(req, eid, slots, int(self.clock() * 1000), answer["mode"]))
        answer["model_version"] = self.models.version(RANK_MODEL)
        return answer

    def _check(self, event_id: str) -> None:
        if not event_id_ok(event_id):
            raise RankError("event_id", "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', ':'")

    async def reward(self, event_id: str, doc: Any) -> None:
        self._check(event_id)
        value, slot, rid = parse_reward(doc)
        await self._append(event_id, reward_record(event_id, value, slot,
                                                   int(self.clock() * 1000), rid or self.token()))

    async def activate(self, event_id: str) -> None:
        self._check(event_id)
        await self._append(event_id, activation_record(event_id, int(self.clock() * 1000)))


__all__ = ["LogUnavailable", "RankError", "Ranker"]
