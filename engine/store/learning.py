"""The learning loop's Redis edge, in domain words.

* `LearnerStore`: what the one learner writes — its lease (`hold`), its snapshot (`load`), and
  `commit`: the changed models published as versioned bytes, the joined rows of each model's
  log and, with them, the learner's snapshot and offsets, in one script fenced by the lease
  (lua/learner_commit.lua), so nothing is published or logged that a restarted learner
  would count again.
* `ModelStore`: what the API processes read — the version of every published model (one
  small hash) and the bytes of the ones that changed; the evaluation's logged rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import orjson

from engine.store import keys, script

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


class LeaseLost(Exception):
    """Another learner holds the lease: this one must stop writing."""


class LearnerStore:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.r = redis
        self.group = group_id
        self._lease = redis.register_script(script("learner_lease"))
        self._commit = redis.register_script(script("learner_commit"))

    async def hold(self, token: str, ttl_ms: int) -> bool:
        """Take or keep the lease for `ttl_ms`; False while another learner holds it."""
        return bool(await self._lease(keys=[keys.learner_lease(self.group)],
                                      args=[token, ttl_ms]))

    async def release(self, token: str) -> None:
        key = keys.learner_lease(self.group)
        if (await self.r.get(key)) == token.encode():
            await self.r.delete(key)

    async def load(self) -> bytes | None:
        """The learner's last snapshot (None on a first start)."""
        blob = await self.r.get(keys.learner_snapshot(self.group))
        return bytes(blob) if blob is not None else None

    async def commit(self, token: str, models: Mapping[str, bytes],
                     rows: Mapping[str, Sequence[Mapping[str, Any]]], snapshot: bytes | None,
                     stats: Mapping[str, int], log_max: int, now_ms: int = 0,
                     drift_keep: int = 200) -> dict[str, int]:
        """Publish, log and (with `snapshot`) snapshot at once; the new version of each
        published model. A `drift:<model>` stat that passes its highest committed value adds
        one drift event stamped `now_ms` (the newest `drift_keep` kept). Raises `LeaseLost`
        when the lease is no longer ours."""
        names = sorted(models)
        logs = sorted(n for n in rows if rows[n])
        k = [keys.learner_lease(self.group), keys.model_versions(self.group),
             keys.learner_snapshot(self.group), keys.learner_stats(self.group),
             keys.drift_events(self.group)]
        k += [keys.model(self.group, n) for n in names]
        k += [keys.learning_log(self.group, n) for n in logs]
        args: list[Any] = [token, len(names), len(logs), "1" if snapshot is not None else "0",
                           snapshot or b"", log_max, len(stats), now_ms, drift_keep]
        for name, value in sorted(stats.items()):
            args += [name, value]
        for n in names:
            args += [n, models[n]]
        for n in logs:
            args.append(len(rows[n]))
            args += [_enc.encode(dict(r)) for r in rows[n]]
        out = await self._commit(keys=k, args=args)
        if out is None:
            raise LeaseLost("another learner holds the lease")
        flat = list(out)
        return {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class ModelStore:
    def __init__(self, redis: Any, group_id: str) -> None:
        self.r = redis
        self.group = group_id

    async def versions(self) -> dict[str, int]:
        """Model name -> version of its published bytes."""
        raw = await self.r.hgetall(keys.model_versions(self.group))
        return {_s(k): int(v) for k, v in raw.items()}

    async def models(self, names: Sequence[str]) -> dict[str, bytes]:
        """The published bytes of the named models (absent names are left out)."""
        if not names:
            return {}
        blobs = await self.r.mget([keys.model(self.group, n) for n in names])
        return {n: bytes(b) for n, b in zip(names, blobs, strict=True) if b is not None}

    async def logged(self, name: str, last: int) -> list[dict[str, Any]]:
        """The newest `last` joined rows of a model's log, oldest first."""
        raw = await self.r.lrange(keys.learning_log(self.group, name), -last, -1)
        return [_dec.decode(x) for x in raw]

    async def drift_events(self, last: int = 50) -> list[dict[str, Any]]:
        """The newest `last` drift events ({at, model, detections}), oldest first."""
        raw = await self.r.lrange(keys.drift_events(self.group), -last, -1)
        out = []
        for x in raw:
            with contextlib.suppress(ValueError):
                out.append(orjson.loads(x))
        return out

    async def learner_stats(self) -> dict[str, int]:
        raw = await self.r.hgetall(keys.learner_stats(self.group))
        return {_s(k): int(v) for k, v in raw.items()}


class PropensityStore:
    """The visitors' learnt purchase and exit propensity (written by the learner)."""

    def __init__(self, redis: Any) -> None:
        self.r = redis

    async def put_many(self, scores: Mapping[str, tuple[float, float, int]], ttl_ms: int) -> None:
        """visitor -> (purchase, exit, epoch ms of the event scored)."""
        if not scores:
            return
        pipe = self.r.pipeline(transaction=False)
        for vid, (buy, leave, at) in scores.items():
            pipe.set(keys.propensity(vid), _enc.encode({"purchase": round(buy, 6),
                                                        "exit": round(leave, 6), "at": at}),
                     px=ttl_ms)
        await pipe.execute()

    async def get(self, visitor_id: str) -> dict[str, Any] | None:
        raw = await self.r.get(keys.propensity(visitor_id))
        return _dec.decode(raw) if raw is not None else None  # type: ignore[no-any-return]
