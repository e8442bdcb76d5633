"""Online collaborative filtering: implicit-feedback matrix factorisation (BPR) with river's SGD."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from river import optim

from models.reco.base import Candidate, Event, event_items, pack, top_n, unpack

KIND = "kairos.reco.cf"
VERSION = 2  # 2: vectors stored as one matrix per table
INIT_ROWS = 4096  # rows of the seeded table new vectors are drawn from
MASK64 = (1 << 64) - 1

#: Which behaviours count as a positive interaction, and how strongly.
CF_WEIGHTS: dict[str, float] = {
    "item_view": 1.0,
    "favorite": 1.0,
    "add_to_cart": 1.5,
    "purchase": 2.0,
}


def _splitmix(state: int) -> tuple[int, int]:
    """One step of splitmix64: (new state, 64-bit output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


class OnlineMF:
    """Bayesian personalised ranking, learnt one event at a time.

    Each positive (visitor, item) pair is contrasted with `n_negatives` items drawn from the last
    `pool_size` positives (so popular items are drawn more often), and the visitor vector, both
    item vectors and item biases take one `optim.SGD(lr)` step with L2 penalty `reg`. Vectors
    start from the mean of two rows, picked by a hash of the id, of a normal table seeded by
    `seed` (16M combinations; reproducible without a stored random state and far cheaper than
    a generator per id); negatives come from a splitmix64 stream seeded by `seed`. At most
    `max_visitors` and `max_items` vectors are kept (least recently updated dropped). Scoring is
    meant for re-ranking a candidate list, not the whole catalogue.
    """

    def __init__(
        self,
        n_factors: int = 16,
        lr: float = 0.05,
        reg: float = 0.01,
        n_negatives: int = 2,
        init_scale: float = 0.1,
        pool_size: int = 2_000,
        weights: Mapping[str, float] | None = None,
        max_visitors: int = 100_000,
        max_items: int = 50_000,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.lr = lr
        self.reg = reg
        self.n_negatives = n_negatives
        self.init_scale = init_scale
        self.pool_size = pool_size
        self.weights = dict(CF_WEIGHTS if weights is None else weights)
        self.max_visitors = max_visitors
        self.max_items = max_items
        self.seed = seed
        self._opt = optim.SGD(lr)
        self._init_table = np.random.default_rng(seed & 0xFFFFFFFF).normal(
            0.0, init_scale, (INIT_ROWS, n_factors))
        self._rng = seed & MASK64
        self._users: dict[str, np.ndarray] = {}
        self._items: dict[str, np.ndarray] = {}
        self._bias: dict[str, float] = {}
        self._pool: list[str] = []
        self._pool_at = 0

    def _init(self, kind: str, key: str) -> np.ndarray:
        h = zlib.crc32(f"{kind}:{key}".encode())
        t = self._init_table
        row: np.ndarray = (t[h % INIT_ROWS] + t[(h >> 12) % INIT_ROWS]) * _SQRT_HALF
        return row

    def _vec(self, table: dict[str, np.ndarray], kind: str, key: str, cap: int) -> np.ndarray:
        vec = table.pop(key, None)
        if vec is None:
            vec = self._init(kind, key)
        table[key] = vec
        while len(table) > cap:
            old = next(iter(table))
            del table[old]
            if kind == "i":
                self._bias.pop(old, None)
        return vec

    def _draw(self) -> int:
        self._rng, out = _splitmix(self._rng)
        return out

    def learn_one(self, event: Event, visitor_id: str | None = None) -> list[str]:
        """One BPR step per positive item of the event (for `visitor_id`, by default the
        event's); returns the ids of the items whose vectors changed (positives and the
        negatives drawn)."""
        w = self.weights.get(event.get("type", ""), 0.0)
        if not w:
            return []
        touched: list[str] = []
        vid = str(event["visitor_id"] if visitor_id is None else visitor_id)
        decay = 1.0 - self.lr * self.reg
        for item in event_items(event):
            pos = str(item["id"])
            negs = []
            if self._pool:
                for _ in range(self.n_negatives):
                    neg = self._pool[self._draw() % len(self._pool)]
                    if neg != pos:
                        negs.append(neg)
            u = self._vec(self._users, "u", vid, self.max_visitors)
            vi = self._vec(self._items, "i", pos, self.max_items)
            lr = self.lr
            for neg in negs:
                vj = self._vec(self._items, "i", neg, self.max_items)
                bi, bj = self._bias.get(pos, 0.0), self._bias.get(neg, 0.0)
                d = vi - vj
                x = float(u.dot(d)) + bi - bj
                g = w / (1.0 + math.exp(min(x, 30.0)))  # w * sigmoid(-x)
                # every gradient from the values before the step, then optim.SGD(lr)'s step
                # (w -= lr * grad) in place, without its per-call dispatch: with
                # grad_u = -g·d + reg·u, grad_i = -g·u + reg·vi, grad_j = g·u + reg·vj that is
                # u' = (1 - lr·reg)·u + lr·g·d, vi' = (1 - lr·reg)·vi + lr·g·u,
                # vj' = (1 - lr·reg)·vj - lr·g·u (11 small-array operations instead of 17)
                step = lr * g
                gu = u * step
                u *= decay
                u += step * d
                vi *= decay
                vi += gu
                vj *= decay
                vj -= gu
                self._opt.n_iterations += 3
                self._bias[pos] = bi + self.lr * (g - self.reg * bi)
                self._bias[neg] = bj + self.lr * (-g - self.reg * bj)
                touched.append(neg)
            touched.append(pos)
            self._add_to_pool(pos)
        if len(self._bias) > self.max_items:
            self._bias = {k: b for k, b in self._bias.items() if k in self._items}
        return touched

    def _add_to_pool(self, iid: str) -> None:
        if len(self._pool) < self.pool_size:
            self._pool.append(iid)
        else:
            self._pool[self._pool_at] = iid
            self._pool_at = (self._pool_at + 1) % self.pool_size

    def score(self, visitor_id: str, item_ids: Iterable[str]) -> dict[str, float]:
        """Probability-like scores in (0, 1) for the known items among `item_ids`."""
        ids = [i for i in dict.fromkeys(item_ids) if i in self._items]
        if not ids:
            return {}
        mat = np.stack([self._items[i] for i in ids])
        u = self._users.get(visitor_id)
        raw = mat @ u if u is not None else np.zeros(len(ids))
        raw = raw + np.array([self._bias.get(i, 0.0) for i in ids])
        probs = 1.0 / (1.0 + np.exp(-np.clip(raw, -30.0, 30.0)))
        return dict(zip(ids, probs.tolist(), strict=True))

    def recommend(
        self,
        visitor_id: str,
        n: int = 20,
        candidates: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Candidate]:
        """Re-rank `candidates` (default: every stored item) for the visitor."""
        scores = self.score(visitor_id, self._items if candidates is None else candidates)
        return [Candidate(i, s, "") for i, s in top_n(scores, n, exclude)]

    # -- serving from exported vectors (the API scores with what the stream wrote to Redis) --
    def export_user(self, visitor_id: str) -> bytes | None:
        """The visitor's factors as little-endian float32 bytes (None: unknown visitor)."""
        u = self._users.get(visitor_id)
        return None if u is None else u.astype("<f4").tobytes()

    def export_item(self, item_id: str) -> bytes | None:
        """The item's factors then its bias, as little-endian float32 bytes (None: unknown)."""
        v = self._items.get(item_id)
        if v is None:
            return None
        return v.astype("<f4").tobytes() + _F4.pack(self._bias.get(item_id, 0.0))

    def item_ids(self) -> list[str]:
        return list(self._items)

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_visitors": len(self._users),
            "max_items": max(len(self._items), len(self._bias)),
            "pool_size": len(self._pool),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state (vectors as little-endian f8)."""
        return pack(
            KIND,
            VERSION,
            {
                "settings": self._settings(),
                "rng": self._rng,
                "n_iter": self._opt.n_iterations,
                "users": _pack_table(self._users, self.n_factors),
                "items": _pack_table(self._items, self.n_factors),
                "bias": [[k, b] for k, b in self._bias.items()],
                "pool": self._pool,
                "pool_at": self._pool_at,
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> OnlineMF:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._rng = st["rng"]
        model._opt.n_iterations = st["n_iter"]
        model._users = _unpack_table(st["users"], model.n_factors)
        model._items = _unpack_table(st["items"], model.n_factors)
        model._bias = {k: b for k, b in st["bias"]}
        model._pool = list(st["pool"])
        model._pool_at = st["pool_at"]
        return model

    def _settings(self) -> dict[str, Any]:
        return {
            "n_factors": self.n_factors,
            "lr": self.lr,
            "reg": self.reg,
            "n_negatives": self.n_negatives,
            "init_scale": self.init_scale,
            "pool_size": self.pool_size,
            "weights": self.weights,
            "max_visitors": self.max_visitors,
            "max_items": self.max_items,
            "seed": self.seed,
        }


_SQRT_HALF = math.sqrt(0.5)
_F4 = struct.Struct("<f")


def _pack_table(table: Mapping[str, np.ndarray], width: int) -> list[Any]:
    """[ids, one little-endian f8 matrix]: one copy instead of one object per vector."""
    ids = list(table)
    mat = np.array([table[k] for k in ids]) if ids else np.zeros((0, width))  # (np.stack: 15x slower)
    return [ids, mat.astype("<f8").tobytes()]


def _unpack_table(packed: list[Any], width: int) -> dict[str, np.ndarray]:
    ids, raw = packed
    mat = np.frombuffer(raw, "<f8").reshape(len(ids), width)
    return {k: row.copy() for k, row in zip(ids, mat, strict=True)}


def score_exported(user: bytes | None, items: Mapping[str, bytes | None]) -> dict[str, float]:
    """`OnlineMF.score` from exported vectors: sigmoid(user . item + bias) for the items that
    have a vector (no user vector: the bias alone, as for an unknown visitor)."""
    width = len(user) + 4 if user else next((len(b) for b in items.values() if b), 0)
    ids = [i for i, b in items.items() if b and len(b) == width]  # (skips a stale factor count)
    if not ids:
        return {}
    mat = np.frombuffer(b"".join(items[i] for i in ids), "<f4").reshape(len(ids), -1)  # type: ignore[misc]
    raw = mat[:, -1].astype(np.float64)
    if user:
        raw = raw + mat[:, :-1] @ np.frombuffer(user, "<f4")
    probs = 1.0 / (1.0 + np.exp(-np.clip(raw, -30.0, 30.0)))
    return dict(zip(ids, probs.tolist(), strict=True))
