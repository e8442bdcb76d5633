"""Repurchase, learnt: whether a visitor who just bought an item is likely to buy it again soon.

From the stream's purchases the learner counts, per category path (every ancestor, and a root
over everything) and per item, how many purchases there were (`n`), how many of them were
followed by another purchase of the same item by the same visitor (`r`), and how long after
(a histogram of the delays over `DELAY_EDGES_S`, log-spaced from an hour to a year). Two
purchases of one item by one visitor less than `min_gap_s` apart are one order (a cart line
sent twice, a quantity split), not a rebuy.

Estimates are shrunk level by level towards the parent (item -> leaf category -> ... -> root
-> a weak prior), with `shrinkage` pseudo-purchases, so an item with a handful of purchases
speaks mostly through its category and a category with none through its parent. For a bought
item at `now`, with `e` the time since the purchase and `H` the visitor's horizon (how far ahead
a recommendation matters: `horizon_s`, or the visitor's own rhythm between sessions, see
`visitor_horizon_ms`):

    chance = p * (F(e + H) - F(e)) / (1 - p * F(e))

where `p` is the shrunk share of purchases followed by a rebuy and `F` the shrunk distribution
of the delays: the chance of a rebuy within the horizon given none happened yet. The item is
kept ("often bought again") when `chance >= threshold`, else excluded. `mode="exclude"` turns the
rule into a plain exclusion of every bought item; `mode="keep"` keeps them all.

Known bias: every purchase counts as a chance to rebuy as soon as it is seen, including recent
ones not yet watched for long: on a young log rebuying of long-cycle goods is underestimated,
which errs towards excluding (the classic complaint is the other way round).

Pure and bounded: at most `max_items` item tables and `max_categories` category tables (least
recently bought dropped), and per visitor (`max_visitors`) the last purchase time of at most
`max_bought_per_visitor` items -- the offline twin of the profile's purchased list with times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from models.reco.base import Event, event_items, item_categories, pack, unpack

KIND = "kairos.reco.repurchase"
VERSION = 1

#: Upper edges of the delay histogram's bins, in seconds (the last bin is open-ended): about
#: x1.5 apart from an hour to a year.
DELAY_EDGES_S: tuple[float, ...] = tuple(h * 3600.0 for h in (
    1, 2, 4, 8, 16, 24, 36, 54, 81, 120, 180, 270, 400, 600, 900, 1350, 2000, 3000, 4500, 6600,
    8760,
))
N_BINS = len(DELAY_EDGES_S) + 1
ROW = 2 + 2 * N_BINS  # n, r, then per bin: count, sum of log(delay)
#: Where the open last bin is taken to end.
LAST_EDGE_S = 2 * 365 * 86400.0
FIRST_EDGE_S = 60.0
#: Each bin's mass is spread (log-uniformly) over its mean delay x/÷ this factor.
SPREAD = 1.25
ROOT = "*"
MODES = ("learnt", "exclude", "keep")
REASON_KEEP = "often bought again"
#: The stream stores a row's sums of log delays as integers, multiplied by this.
LOG_SCALE = 1000.0


class Decision(NamedTuple):
    """What to do with one bought item: `keep` it (with `reason`) or exclude it."""

    item_id: str
    keep: bool
    chance: float
    reason: str


def delay_bin(delay_s: float) -> int:
    """The histogram bin of a delay."""
    for k, edge in enumerate(DELAY_EDGES_S):
        if delay_s < edge:
            return k
    return N_BINS - 1


def _bounds(k: int) -> tuple[float, float]:
    lo = FIRST_EDGE_S if k == 0 else DELAY_EDGES_S[k - 1]
    hi = DELAY_EDGES_S[k] if k < len(DELAY_EDGES_S) else LAST_EDGE_S
    return lo, hi


#: The weakest prior: every bin equally likely, each centred in its bin (log scale).
UNIFORM: tuple[tuple[float, float], ...] = tuple(
    (1.0 / N_BINS, 0.5 * (math.log(_bounds(k)[0]) + math.log(_bounds(k)[1])))
    for k in range(N_BINS)
)


def cdf(bins: Sequence[tuple[float, float]], t_s: float) -> float:
    """P(delay <= t) for bins of (mass, mean log delay), masses summing to 1, each mass spread
    log-uniformly over its mean delay x/÷ `SPREAD`."""
    if t_s <= 0:
        return 0.0
    lt = math.log(t_s)
    w = math.log(SPREAD)
    total = 0.0
    for mass, mu in bins:
        if lt >= mu + w:
            total += mass
        elif lt > mu - w:
            total += mass * (lt - (mu - w)) / (2 * w)
    return min(1.0, total)


def levels_of(categories: Sequence[str]) -> list[str]:
    """The category levels a purchase counts in: the root, then every path of the item's first
    category from the top down (`["*", "a", "a/b"]`)."""
    paths = item_categories({"categories": list(categories)[:1]}, prefixes=True)
    return [ROOT, *paths]


def row_increments(delay_s: float | None) -> dict[int, float]:
    """What one purchase adds to a level's counter row (index -> amount): `n`, and for a rebuy
    `r` and the delay's bin (count and log delay). The online hook turns these into HINCRBYs."""
    out = {0: 1.0}
    if delay_s is not None:
        b = delay_bin(delay_s)
        out[1] = 1.0
        out[2 + 2 * b] = 1.0
        out[3 + 2 * b] = math.log(max(delay_s, FIRST_EDGE_S))
    return out


def shrunk_estimate(
    chain: Sequence[tuple[Sequence[float] | None, float]], prior_rate: float
) -> tuple[float, list[tuple[float, float]]]:
    """(p, delay bins as (mass, mean log delay)) from counter rows, most general first, each
    with its shrinkage strength (None: no row, skipped). Pure: the learner and a reader of the
    same counters kept in Redis both call it."""
    p = prior_rate
    bins = list(UNIFORM)
    for row, k in chain:
        if row is None:
            continue
        n, r = row[0], row[1]
        p = (r + k * p) / (n + k)
        mixed = []
        for b, (mass, mu) in enumerate(bins):
            count, sum_log = row[2 + 2 * b], row[3 + 2 * b]
            prior = k * mass
            weight = count + prior
            mixed.append((weight / (r + k), (sum_log + prior * mu) / weight if weight > 0 else mu))
        bins = mixed
    return p, bins


def rebuy_chance(p: float, bins: Sequence[tuple[float, float]], elapsed_s: float,
                 horizon_s: float) -> float:
    """P(a rebuy within `horizon_s` from now | bought `elapsed_s` ago, none since)."""
    e = max(0.0, elapsed_s)
    f_e = cdf(bins, e)
    f_eh = cdf(bins, e + horizon_s)
    still = 1.0 - p * f_e
    return 0.0 if still <= 0 else max(0.0, min(1.0, p * (f_eh - f_e) / still))


class Repurchase:
    """Learnt repurchase rates and delays; decides whether a bought item stays recommendable."""

    def __init__(
        self,
        horizon_s: float = 7 * 86400.0,
        threshold: float = 0.1,
        mode: str = "learnt",
        min_gap_s: float = 1800.0,
        shrinkage: float = 5.0,
        prior_rate: float = 0.05,
        prior_strength: float = 2.0,
        max_items: int = 20_000,
        max_categories: int = 5_000,
        max_visitors: int = 100_000,
        max_bought_per_visitor: int = 20,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.horizon_s = horizon_s
        self.threshold = threshold
        self.mode = mode
        self.min_gap_s = min_gap_s
        self.shrinkage = shrinkage
        self.prior_rate = prior_rate
        self.prior_strength = prior_strength
        self.max_items = max_items
        self.max_categories = max_categories
        self.max_visitors = max_visitors
        self.max_bought_per_visitor = max_bought_per_visitor
        # level -> [n, r, bin counts...]; levels "*" (root), category paths
        self._cats: dict[str, list[float]] = {}
        # item -> [n, r, bin counts..., ] and its categories (as seen at its last purchase)
        self._items: dict[str, list[float]] = {}
        self._item_cats: dict[str, list[str]] = {}
        # visitor -> {item: last purchase ts ms}
        self._bought: dict[str, dict[str, int]] = {}

    # ------------------------------------------------------------------ learning
    def learn_one(self, event: Event) -> None:
        """Count a purchase event's items (other events are ignored)."""
        if event.get("type") != "purchase":
            return
        items = event_items(event)
        if not items:
            return
        vid = str(event["visitor_id"])
        ts = int(event["ts"])
        mine = self._bought.pop(vid, None) or {}
        self._bought[vid] = mine
        for item in items:
            iid = str(item["id"])
            cats = item_categories(item) or self._item_cats.get(iid, [])
            prev = mine.get(iid)
            if prev is not None and (ts - prev) < self.min_gap_s * 1000.0:
                continue  # the same order again
            delay = None if prev is None else (ts - prev) / 1000.0
            self.observe(iid, cats, delay)
            mine.pop(iid, None)
            mine[iid] = ts
            while len(mine) > self.max_bought_per_visitor:
                del mine[next(iter(mine))]
        while len(self._bought) > self.max_visitors:
            del self._bought[next(iter(self._bought))]

    def observe(self, item_id: str, categories: Sequence[str], delay_s: float | None) -> None:
        """Count one purchase of `item_id`; `delay_s` is the time since the same visitor's
        previous purchase of it (None: the first). What `learn_one` calls; the online hook calls
        the same with the profile's purchase times."""
        levels = levels_of(categories)
        row = self._items.pop(item_id, None) or [0.0] * ROW
        self._items[item_id] = row
        if categories:
            self._item_cats[item_id] = list(categories)
        rows = [row]
        for level in levels:
            crow = self._cats.pop(level, None) or [0.0] * ROW
            self._cats[level] = crow
            rows.append(crow)
        inc = row_increments(delay_s)
        for r in rows:
            for idx, amount in inc.items():
                r[idx] += amount
        while len(self._items) > self.max_items:
            old = next(iter(self._items))
            del self._items[old]
            self._item_cats.pop(old, None)
        while len(self._cats) > self.max_categories:
            old = next(k for k in self._cats if k != ROOT) if len(self._cats) > 1 else ROOT
            del self._cats[old]

    # ------------------------------------------------------------------ estimates
    def estimate(self, item_id: str, categories: Sequence[str] | None = None
                 ) -> tuple[float, list[tuple[float, float]], float]:
        """(p: share of purchases followed by a rebuy, delay bins as (mass, mean log delay),
        purchases seen at the item's own level), shrunk from the root down to the item."""
        cats = list(categories) if categories else self._item_cats.get(item_id, [])
        chain: list[tuple[Sequence[float] | None, float]] = [
            (self._cats.get(level), self.prior_strength if level == ROOT else self.shrinkage)
            for level in levels_of(cats)
        ]
        own = self._items.get(item_id)
        chain.append((own, self.shrinkage))
        p, bins = shrunk_estimate(chain, self.prior_rate)
        return p, bins, own[0] if own else 0.0

    def _chain(self, level_rows: Sequence[Sequence[float] | None],
               item_row: Sequence[float] | None) -> list[tuple[Sequence[float] | None, float]]:
        """The shrinkage chain of an item: its levels' rows (root first), then its own."""
        chain: list[tuple[Sequence[float] | None, float]] = [
            (row, self.prior_strength if k == 0 else self.shrinkage)
            for k, row in enumerate(level_rows)]
        chain.append((item_row, self.shrinkage))
        return chain

    def decide_rows(self, item_id: str, level_rows: Sequence[Sequence[float] | None],
                    item_row: Sequence[float] | None, bought_ms: int, now_ms: int,
                    horizon_ms: float | None = None) -> Decision:
        """`decide` from counter rows read elsewhere (the served path reads the stream's rows
        from Redis, `stored_row`): `level_rows` those of `levels_of(categories)`, root first
        (None where a level has no row), `item_row` the item's own. Same settings, same answer
        as `decide` on the learner that counted the same purchases."""
        if self.mode != "learnt":
            return self.decide(item_id, bought_ms, now_ms, horizon_ms)
        p, bins = shrunk_estimate(self._chain(level_rows, item_row), self.prior_rate)
        h = (self.horizon_s * 1000.0 if horizon_ms is None else float(horizon_ms)) / 1000.0
        c = rebuy_chance(p, bins, (now_ms - bought_ms) / 1000.0, h)
        keep = c >= self.threshold
        return Decision(item_id, keep, c, REASON_KEEP if keep else "")

    def chance(self, item_id: str, bought_ms: int, now_ms: int,
               horizon_ms: float | None = None, categories: Sequence[str] | None = None) -> float:
        """P(the visitor buys `item_id` again within the horizon after `now`), given that they
        bought it at `bought_ms` and not since."""
        p, bins, _ = self.estimate(item_id, categories)
        h = (self.horizon_s * 1000.0 if horizon_ms is None else float(horizon_ms)) / 1000.0
        return rebuy_chance(p, bins, (now_ms - bought_ms) / 1000.0, h)

    def decide(self, item_id: str, bought_ms: int, now_ms: int,
               horizon_ms: float | None = None,
               categories: Sequence[str] | None = None) -> Decision:
        """Keep or exclude one bought item (by `mode`; `learnt` compares `chance` to the
        threshold)."""
        if self.mode == "exclude":
            return Decision(item_id, False, 0.0, "")
        if self.mode == "keep":
            return Decision(item_id, True, 1.0, REASON_KEEP)
        c = self.chance(item_id, bought_ms, now_ms, horizon_ms, categories)
        keep = c >= self.threshold
        return Decision(item_id, keep, c, REASON_KEEP if keep else "")

    def decide_all(self, bought: Iterable[tuple[str, int]], now_ms: int,
                   horizon_ms: float | None = None,
                   categories: Mapping[str, Sequence[str]] | None = None) -> list[Decision]:
        """`decide` for (item, bought at) pairs, e.g. a profile's purchases with their times."""
        cats = categories or {}
        return [self.decide(iid, ts, now_ms, horizon_ms, cats.get(iid)) for iid, ts in bought]

    def bought(self, visitor_id: str) -> list[tuple[str, int]]:
        """(item, last purchase ms) of the visitor's remembered purchases, newest first."""
        return [(i, t) for i, t in reversed(self._bought.get(visitor_id, {}).items())]

    def for_visitor(self, visitor_id: str, now_ms: int, horizon_ms: float | None = None
                    ) -> list[Decision]:
        """Decisions for every item the visitor bought (newest first)."""
        return self.decide_all(self.bought(visitor_id), now_ms, horizon_ms)

    # ------------------------------------------------------------------ persistence
    def size(self) -> dict[str, int]:
        """Stored entries, by the cap that bounds them."""
        return {
            "max_items": max(len(self._items), len(self._item_cats)),
            "max_categories": len(self._cats),
            "max_visitors": len(self._bought),
            "max_bought_per_visitor": max((len(b) for b in self._bought.values()), default=0),
        }

    def snapshot(self) -> bytes:
        """Versioned msgpack bytes of the settings and state."""
        return pack(KIND, VERSION, {
            "settings": self._settings(),
            "cats": [[c, r] for c, r in self._cats.items()],
            "items": [[i, r, self._item_cats.get(i, [])] for i, r in self._items.items()],
            "bought": [[v, [[i, t] for i, t in b.items()]] for v, b in self._bought.items()],
        })

    @classmethod
    def restore(cls, data: bytes) -> Repurchase:
        """A learner equal to the one that made `data`."""
        st = unpack(data, KIND, VERSION)
        model = cls(**st["settings"])
        model._cats = {c: list(r) for c, r in st["cats"]}
        model._items = {i: list(r) for i, r, _ in st["items"]}
        model._item_cats = {i: list(c) for i, _, c in st["items"] if c}
        model._bought = {v: {i: int(t) for i, t in b} for v, b in st["bought"]}
        return model

    def _settings(self) -> dict[str, Any]:
        return {
            "horizon_s": self.horizon_s,
            "threshold": self.threshold,
            "mode": self.mode,
            "min_gap_s": self.min_gap_s,
            "shrinkage": self.shrinkage,
            "prior_rate": self.prior_rate,
            "prior_strength": self.prior_strength,
            "max_items": self.max_items,
            "max_categories": self.max_categories,
            "max_visitors": self.max_visitors,
            "max_bought_per_visitor": self.max_bought_per_visitor,
        }


def stored_row(fields: Mapping[Any, Any] | None) -> list[float] | None:
    """A counter row as the stream keeps it (a hash: field `i` -> integer, the sums of log
    delays x `LOG_SCALE`) as the learner's row; None for an empty or missing hash."""
    if not fields:
        return None
    row = [0.0] * ROW
    for f, v in fields.items():
        i = int(f)
        if 0 <= i < ROW:
            row[i] = float(v) / (LOG_SCALE if i >= 3 and i % 2 else 1.0)
    return row


def visitor_horizon_ms(return_gap_ms: float, default_ms: float,
                       low_ms: float = 86_400_000.0, high_ms: float = 30 * 86_400_000.0) -> float:
    """The visitor's horizon: twice their usual time between sessions (models/session.py's
    `return_gap_ms`), within [`low_ms`, `high_ms`]; `default_ms` while it is unknown (0)."""
    if return_gap_ms <= 0:
        return default_ms
    return max(low_ms, min(high_ms, 2.0 * return_gap_ms))
