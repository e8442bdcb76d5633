"""What the decision capability reads from Redis, in domain words.

`DecideReader.read` is the decision's one round trip (lua/decide_read.lua): the profile
(following the visitor's alias), the visitor's campaign state and session hashes, and the
counters of the campaigns the caller wants refreshed. `counters` and `segment_sizes` are the
reads of the campaign listing and stats endpoints and the dashboard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.store import keys, script
from engine.store.client import is_cluster
from engine.store.direct import ScriptCaller
from engine.store.profiles import decode
from models.affinity import Profile

#: arm -> counter (assigned, impressions, clicks, dismissals, conversions) -> count
ArmCounters = dict[str, dict[str, int]]


@dataclass(slots=True)
class DecideState:
    """What one round trip read."""

    pid: str
    profile: Profile | None
    state: dict[bytes, bytes]
    session: dict[bytes, bytes]
    counters: dict[str, ArmCounters] = field(default_factory=dict)  # of the campaigns asked for


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def arm_counters(fields: Mapping[bytes, Any]) -> ArmCounters:
    """A campaign stats hash (fields `<arm>:<counter>`) as {arm: {counter: n}}."""
    arms: ArmCounters = {}
    for name, value in fields.items():
        arm, _, counter = name.decode().rpartition(":")
        arms.setdefault(arm, {})[counter] = int(value)
    return arms


class DecideReader:
    def __init__(self, redis: Any) -> None:
        self.r = redis
        self.cluster = is_cluster(redis)
        # a single server: the script on the reader's own connections (engine/store/direct.py);
        # a cluster: pipelines the cluster client routes by slot (`_read_cluster`)
        self._read = None if self.cluster else ScriptCaller(redis, script("decide_read"))
        self._formats = (keys.template(keys.profile), keys.template(keys.campaign_state),
                         keys.template(keys.campaign_session))

    async def read(self, visitor_id: str, user_id: str | None, campaign_ids: Sequence[str],
                   timeout: float | None = None) -> DecideState:
        """Profile, campaign state and session of a visitor, and the counters of
        `campaign_ids`, in one round trip (on a Redis Cluster, whose keys here span several
        slots, in two or three); TimeoutError past `timeout` seconds."""
        if self.cluster:
            pid, blob, state, session, stats = await asyncio.wait_for(
                self._read_cluster(visitor_id, user_id, campaign_ids), timeout)
        else:
            assert self._read is not None
            pid, blob, state, session, stats = await self._read(
                [keys.alias(visitor_id)],
                [keys.visitor_pid(visitor_id), keys.user_pid(user_id) if user_id else "",
                 *self._formats, *(keys.campaign_stats(c) for c in campaign_ids)],
                timeout,
            )
        counters = {cid: arm_counters(_pairs(flat))
                    for cid, flat in zip(campaign_ids, stats, strict=True)}
        return DecideState(pid.decode(), decode(blob).profile if blob else None,
                           _pairs(state), _pairs(session), counters)

    async def start(self) -> None:
        """Ready the read before the first decision (best effort: Redis may be away)."""
        if self._read is not None:
            await self._read.warm()

    async def close(self) -> None:
        if self._read is not None:
            await self._read.close()

    async def _read_cluster(self, visitor_id: str, user_id: str | None,
                            campaign_ids: Sequence[str]) -> list[Any]:
        """What lua/decide_read.lua answers, in pipelines (the cluster routes each command)."""
        upid = keys.user_pid(user_id) if user_id else ""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.alias(visitor_id))
        pipe.get(keys.profile(keys.visitor_pid(visitor_id)))
        if upid:
            pipe.get(keys.profile(upid))
        got = await pipe.execute()
        alias, own = got[0], got[1]
        pid, blob = upid, (got[2] if upid else None)
        if not blob:
            p = alias.decode() if alias else keys.visitor_pid(visitor_id)
            b = own if p == keys.visitor_pid(visitor_id) else await self.r.get(keys.profile(p))
            if b or not upid:
                pid, blob = p, b
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.campaign_state(pid))
        pipe.hgetall(keys.campaign_session(pid))
        for c in campaign_ids:
            pipe.hgetall(keys.campaign_stats(c))
        state, session, *stats = await pipe.execute()

        def flat(h: dict[Any, Any]) -> list[Any]:
            return [x for kv in h.items() for x in kv]

        return [pid.encode(), blob or None, flat(state), flat(session), [flat(h) for h in stats]]

    async def counters(self, campaign_id: str) -> ArmCounters:
        return arm_counters(await self.r.hgetall(keys.campaign_stats(campaign_id)))

    async def segment_sizes(self) -> dict[str, int]:
        """Segment id -> live number of member profiles (kept by the stream)."""
        raw = await self.r.hgetall(keys.SEGMENT_SIZES)
        return {k.decode(): int(v) for k, v in raw.items()}
