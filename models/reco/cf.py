"""Online collaborative filtering: implicit-feedback matrix factorisation (BPR) with river's SGD."""

from __future__ import annotations

import math
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


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _splitmix(state: int) -> tuple[int, int]:
    """One step of splitmix64: (new state, 64-bit output)."""
    state = (state + _GOLDEN) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * _MIX1) & MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & MASK64
    return state, z ^ (z >> 31)


class _Rows:
    """Vectors by id as the rows of one matrix, ids in least recently updated order (oldest
    first). The matrix grows by doubling. A new id's row is listed in `new` until its owner
    fills it (`OnlineMF._fill`, for the whole batch at once); the row of a dropped id is
    reused only after `release()` (the end of a learning step), so rows taken during a step
    stay valid."""

    __slots__ = ("ids", "mat", "free", "freed", "used", "new")

    def __init__(self, width: int, rows: int = 64) -> None:
        self.ids: dict[str, int] = {}
        self.mat: np.ndarray = np.zeros((rows, width))
        self.free: list[int] = []
        self.freed: list[int] = []
        self.used = 0
        self.new: list[tuple[int, str]] = []

    def get(self, key: str) -> np.ndarray | None:
        r = self.ids.get(key)
        return None if r is None else self.mat[r]

    def touch(self, key: str, cap: int) -> int:
        """The row of `key`, now the most recently updated; the oldest ids past `cap` are
        dropped."""
        ids = self.ids
        r = ids.pop(key, None)
        if r is not None:
            ids[key] = r
            return r
        if self.free:
            r = self.free.pop()
        else:
            if self.used == len(self.mat):
                grown = np.zeros((2 * len(self.mat), self.mat.shape[1]))
                grown[: self.used] = self.mat
                self.mat = grown
            r = self.used
            self.used += 1
        self.new.append((r, key))
        ids[key] = r
        while len(ids) > cap:
            old = next(iter(ids))
            self.freed.append(ids.pop(old))
        return r

    def release(self) -> None:
        if self.freed:
            self.free.extend(self.freed)
            self.freed.clear()

    def table(self) -> tuple[list[str], np.ndarray]:
        """The ids (oldest first) and their rows, as one matrix."""
        ids = list(self.ids)
        return ids, self.mat[list(self.ids.values())]

    @classmethod
    def of(cls, ids: list[str], mat: np.ndarray) -> _Rows:
        t = cls(mat.shape[1], max(64, len(ids)))
        t.mat[: len(ids)] = mat
        t.ids = {k: n for n, k in enumerate(ids)}
        t.used = len(ids)
        return t


class OnlineMF:
    """Bayesian personalised ranking, learnt one event at a time (`learn_one`) or a batch of
    events at a time (`learn_many`).

    Each positive (visitor, item) pair is contrasted with `n_negatives` items drawn from the last
    `pool_size` positives (so popular items are drawn more often), and the visitor vector, both
    item vectors and item biases take one `optim.SGD(lr)` step with L2 penalty `reg`. Vectors
    start from the mean of two rows, picked by a hash of the id, of a normal table seeded by
    `seed` (16M combinations; reproducible without a stored random state and far cheaper than
    a generator per id); negatives come from a splitmix64 stream seeded by `seed`. At most
    `max_visitors` and `max_items` vectors are kept (least recently updated dropped). Scoring is
    meant for re-ranking a candidate list, not the whole catalogue.

    `learn_many` draws the same negatives in the same order as `learn_one` would, but takes
    the batch's steps together (numpy, over all its (visitor, positive, negative) triples):
    every gradient from the vectors as they were before the batch, summed per vector -- a
    mini-batch step, not the same SGD path (bench/reco_replay.py `--cf-batch` measures it).
    Vectors live as rows of one matrix per table (an item's row ends with its bias).
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
        self._users = _Rows(n_factors)
        self._items = _Rows(n_factors + 1)  # factors, then the bias
        self._pool: list[str] = []
        self._pool_at = 0

    def _fill(self) -> None:
        """The start vectors of the rows made since the last fill (an item's bias 0)."""
        f = self.n_factors
        for table, kind in ((self._users, "u:"), (self._items, "i:")):
            new = table.new
            if not new:
                continue
            t = self._init_table
            if len(new) == 1:
                r, key = new[0]
                h = zlib.crc32(f"{kind}{key}".encode())
                table.mat[r, :f] = (t[h % INIT_ROWS] + t[(h >> 12) % INIT_ROWS]) * _SQRT_HALF
                table.mat[r, f:] = 0.0
            else:
                rows = [r for r, _ in new]
                hs = np.array([zlib.crc32(f"{kind}{key}".encode()) for _, key in new])
                table.mat[rows, :f] = (t[hs % INIT_ROWS] + t[(hs >> 12) % INIT_ROWS]) * _SQRT_HALF
                table.mat[rows, f:] = 0.0
            new.clear()

    def _draw(self) -> int:
        self._rng, out = _splitmix(self._rng)
        return out

    def _draws(self, n: int) -> list[int]:
        """The next `n` outputs of the splitmix64 stream at once (`_draw` n times)."""
        if n <= 0:
            return []
        k = np.arange(1, n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = np.uint64(self._rng) + k * np.uint64(_GOLDEN)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
            z = z ^ (z >> np.uint64(31))
        self._rng = (self._rng + n * _GOLDEN) & MASK64
        out: list[int] = z.tolist()
        return out

    def _negatives(self, pos: str) -> list[str]:
        negs = []
        pool = self._pool
        if pool:
            for _ in range(self.n_negatives):
                neg = pool[self._draw() % len(pool)]
                if neg != pos:
                    negs.append(neg)
        return negs

    def _rows(self, vid: str, pos: str, negs: list[str]) -> tuple[int, int, list[int]]:
        """The rows of the visitor, the positive and the negatives (touched in that order)."""
        ru = self._users.touch(vid, self.max_visitors)
        ri = self._items.touch(pos, self.max_items)
        rjs = [self._items.touch(n, self.max_items) for n in negs]
        self._fill()
        return ru, ri, rjs

    def learn_one(self, event: Event, visitor_id: str | None = None) -> list[str]:
        """One BPR step per positive item of the event (for `visitor_id`, by default the
        event's); returns the ids of the items whose vectors changed (positives and the
        negatives drawn)."""
        w = self.weights.get(event.get("type", ""), 0.0)
        if not w:
            return []
        touched: list[str] = []
        vid = str(event["visitor_id"] if visitor_id is None else visitor_id)
        lr, reg = self.lr, self.reg
        decay = 1.0 - lr * reg
        f = self.n_factors
        for item in event_items(event):
            pos = str(item["id"])
            negs = self._negatives(pos)
            ru, ri, rjs = self._rows(vid, pos, negs)
            users, items = self._users.mat, self._items.mat  # (after the touches: may grow)
            u = users[ru]
            vi = items[ri, :f]
            for neg, rj in zip(negs, rjs, strict=True):
                vj = items[rj, :f]
                bi, bj = float(items[ri, f]), float(items[rj, f])
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
                items[ri, f] = bi + lr * (g - reg * bi)
                items[rj, f] = bj + lr * (-g - reg * bj)
                touched.append(neg)
            touched.append(pos)
            self._add_to_pool(pos)
        self._users.release()
        self._items.release()
        return touched

    def learn_many(self, events: Iterable[tuple[Event, str]]) -> list[list[str]]:
        """`learn_one` for each (event, visitor id), as one mini-batch step (see the class
        docstring); returns each event's changed items, as `learn_one` does."""
        weights = self.weights
        out: list[list[str]] = []
        positives: list[tuple[list[str], str, str, float]] = []
        for event, visitor_id in events:
            touched: list[str] = []
            out.append(touched)
            w = weights.get(event.get("type", ""), 0.0)
            if w:
                vid = str(visitor_id)
                for item in event_items(event):
                    positives.append((touched, vid, str(item["id"]), w))
        if not positives:
            return out
        pool = self._pool
        n_neg = self.n_negatives
        draws = self._draws(n_neg * (len(positives) - (0 if pool else 1)))
        at = 0
        users, items = self._users, self._items
        cap_u, cap_i, pool_size = self.max_visitors, self.max_items, self.pool_size
        urows: list[int] = []
        irows: list[int] = []
        jrows: list[int] = []
        wts: list[float] = []
        for touched, vid, pos, w in positives:
            negs = []
            if pool:
                n = len(pool)
                for _ in range(n_neg):
                    neg = pool[draws[at] % n]
                    at += 1
                    if neg != pos:
                        negs.append(neg)
            ru = users.touch(vid, cap_u)
            ri = items.touch(pos, cap_i)
            for neg in negs:
                urows.append(ru)
                irows.append(ri)
                jrows.append(items.touch(neg, cap_i))
                wts.append(w)
                touched.append(neg)
            touched.append(pos)
            if len(pool) < pool_size:
                pool.append(pos)
            else:
                pool[self._pool_at] = pos
                self._pool_at = (self._pool_at + 1) % pool_size
        self._fill()
        if urows:
            self._step(np.array(urows), np.array(irows), np.array(jrows), np.array(wts))
        users.release()
        items.release()
        return out

    def _step(self, ur: np.ndarray, ir: np.ndarray, jr: np.ndarray, w: np.ndarray) -> None:
        """The BPR gradients of every triple at the current vectors, summed per row, then one
        SGD step (`learn_one`'s formulas, in matrix form)."""
        f, lr, reg = self.n_factors, self.lr, self.reg
        users, items = self._users.mat, self._items.mat
        u = users[ur]
        vi = items[ir]
        vj = items[jr]
        d = vi[:, :f] - vj[:, :f]
        x = np.einsum("ij,ij->i", u, d) + vi[:, f] - vj[:, f]
        g = w / (1.0 + np.exp(np.minimum(x, 30.0)))
        step = (lr * g)[:, None]
        np.add.at(users, ur, step * d - (lr * reg) * u)
        gi = np.empty((2 * len(ur), f + 1))
        n = len(ur)
        gu = step * u
        gi[:n, :f] = gu
        gi[n:, :f] = -gu
        gi[:n, f] = lr * g
        gi[n:, f] = -lr * g
        gi[:n] -= (lr * reg) * vi
        gi[n:] -= (lr * reg) * vj
        np.add.at(items, np.concatenate((ir, jr)), gi)
        self._opt.n_iterations += 3 * n

    def _add_to_pool(self, iid: str) -> None:
        if len(self._pool) < self.pool_size:
            self._pool.append(iid)
        else:
            self._pool[self._pool_at] = iid
            self._pool_at = (self._pool_at + 1) % self.pool_size

    def score(self, visitor_id: str, item_ids: Iterable[str]) -> dict[str, float]:
        """Probability-like scores in (0, 1) for the known items among `item_ids`."""
        rows = self._items.ids
        ids = [i for i in dict.fromkeys(item_ids) if i in rows]
        if not ids:
            return {}
        mat = self._items.mat[[rows[i] for i in ids]]
        u = self._users.get(visitor_id)
        raw = mat[:, -1] + (mat[:, :-1] @ u if u is not None else 0.0)
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
        scores = self.score(visitor_id, self._items.ids if candidates is None else candidates)
        return [Candidate(i, s, "") for i, s in top_n(scores, n, exclude)]

    # -- serving from exported vectors (the API scores with what the stream wrote to Redis) --
    def export_user(self, visitor_id: str) -> bytes | None:
        """The visitor's factors as little-endian float32 bytes (None: unknown visitor)."""
        u = self._users.get(visitor_id)
        return None if u is None else u.astype("<f4").tobytes()

    def export_item(self, item_id: str) -> bytes | None:
        """The item's factors then its bias, as little-endian float32 bytes (None: unknown)."""
        v = self._items.get(item_id)
        return None if v is None else v.astype("<f4").tobytes()

    def export_items(self, item_ids: Iterable[str]) -> dict[str, bytes]:
        """`export_item` of the known items among `item_ids`, in one conversion."""
        return _export(self._items, item_ids)

    def export_users(self, visitor_ids: Iterable[str]) -> dict[str, bytes]:
        """`export_user` of the known visitors among `visitor_ids`, in one conversion."""
        return _export(self._users, visitor_ids)

    def item_ids(self) -> list[str]:
        return list(self._items.ids)

    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_visitors": len(self._users.ids),
            "max_items": len(self._items.ids),
            "pool_size": len(self._pool),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state (vectors as little-endian f8)."""
        item_ids, items = self._items.table()
        f = self.n_factors
        return pack(
            KIND,
            VERSION,
            {
                "settings": self._settings(),
                "rng": self._rng,
                "n_iter": self._opt.n_iterations,
                "users": _pack_table(*self._users.table(), f),
                "items": _pack_table(item_ids, items[:, :f], f),
                "bias": [[k, b] for k, b in zip(item_ids, items[:, f].tolist(), strict=True)],
                "pool": self._pool,
                "pool_at": self._pool_at,
            },
        )

    @classmethod
    def restore(cls, data: bytes) -> OnlineMF:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        f = model.n_factors
        model._rng = st["rng"]
        model._opt.n_iterations = st["n_iter"]
        model._users = _Rows.of(*_unpack_table(st["users"], f))
        item_ids, factors = _unpack_table(st["items"], f)
        bias = {k: b for k, b in st["bias"]}
        items = np.zeros((len(item_ids), f + 1))
        items[:, :f] = factors
        items[:, f] = [bias.get(k, 0.0) for k in item_ids]
        model._items = _Rows.of(item_ids, items)
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


def _pack_table(ids: list[str], mat: np.ndarray, width: int) -> list[Any]:
    """[ids, one little-endian f8 matrix]: one copy instead of one object per vector."""
    if not ids:
        mat = np.zeros((0, width))
    return [ids, np.ascontiguousarray(mat, "<f8").tobytes()]


def _unpack_table(packed: list[Any], width: int) -> tuple[list[str], np.ndarray]:
    ids, raw = packed
    return list(ids), np.frombuffer(raw, "<f8").reshape(len(ids), width)


def _export(table: _Rows, keys: Iterable[str]) -> dict[str, bytes]:
    """Rows of `table` as little-endian float32 bytes, by id (unknown ids left out)."""
    rows = table.ids
    ids = [k for k in dict.fromkeys(keys) if k in rows]
    if not ids:
        return {}
    raw = table.mat[[rows[k] for k in ids]].astype("<f4").tobytes()
    n = len(raw) // len(ids)
    return {k: raw[i * n:(i + 1) * n] for i, k in enumerate(ids)}


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
