"""One person's data in Redis, in domain words: what there is to export, and erasing it.

A person is a profile id (`v:<visitor>` or `u:<user>`) and the visitors linked to it. Their
keys: the profile, its activity timeline, its campaign state and session caps, its online-CF
vector, and each linked visitor's alias and own per-visitor keys. Aggregates that carry no
person (campaign counters, segment sizes, trending, co-occurrence and repurchase tables) stay;
so do the session-kNN tables, which name a session by a hash of `<pid>#<seq>` (no visitor id)
and expire 2 days after the session's last event.

Erasing deletes those keys and writes a tombstone per profile id (engine/store/keys.py
`tombstone`, value: the erase time in ms): while it exists the commit script writes nothing
for that profile, so a redelivered or replayed event of the erased person never brings the
profile back; new events of the same id are counted in the traffic only until it expires. Every step
is idempotent and touches one key a command, so the erase is one pipeline that a Cluster
client splits by slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.store import keys


def person_keys(pid: str) -> list[str]:
    """Every per-person key of one profile id."""
    return [keys.profile(pid), keys.activity(pid), keys.campaign_state(pid),
            keys.campaign_session(pid), keys.cf_visitor(pid)]


class PersonStore:
    def __init__(self, redis: Any) -> None:
        self.r = redis

    async def state(self, pid: str) -> dict[str, Any]:
        """The campaign state, session caps and whether a CF vector exists, for an export."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.campaign_state(pid))
        pipe.hgetall(keys.campaign_session(pid))
        pipe.exists(keys.cf_visitor(pid))
        pipe.get(keys.tombstone(pid))
        state, session, cf, tomb = await pipe.execute()

        def text(d: dict[bytes, bytes]) -> dict[str, str]:
            return {k.decode(): v.decode(errors="replace") for k, v in d.items()}

        return {"campaign_state": text(state), "campaign_session": text(session),
                "cf_vector": bool(cf), "erased_at_ms": int(tomb) if tomb else None}

    async def erased_at(self, pid: str) -> int | None:
        raw = await self.r.get(keys.tombstone(pid))
        return int(raw) if raw else None

    async def erase(self, pids: Sequence[str], visitors: Sequence[str], now_ms: int,
                    keep_ms: int) -> int:
        """Delete every key of these profile ids and the aliases of these visitors; write
        the tombstones. Returns how many keys existed."""
        pipe = self.r.pipeline(transaction=False)
        for pid in dict.fromkeys(pids):
            for key in person_keys(pid):  # one key a command: safe on a Cluster
                pipe.delete(key)
            pipe.set(keys.tombstone(pid), str(now_ms), px=keep_ms)
        for vid in dict.fromkeys(visitors):
            pipe.delete(keys.alias(vid))
        results = await pipe.execute()
        return sum(int(r) for r in results if isinstance(r, int) and not isinstance(r, bool))
