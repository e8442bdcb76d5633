"""The recipe inputs built from the state the stream keeps in Redis (the online path).

Pure: the route reads the profile, the neighbour and trending tables and the popularity counts,
and these functions turn them into the `candidates` and `visitor` shapes `engine.logic.recipes.apply`
takes, with the same scoring as the in-process learners (models/reco/cooccurrence.py,
trending.py, ensemble.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.affinity import AffinityConfig, Profile, current_scores
from models.reco.base import Candidate, top_n
from models.reco.repurchase import Decision
from models.reco.sessionknn import PastSession, SessionKNN, score_sessions, session_items
from models.session import SessionConfig, shared_session_name

SEEDS = 5
RECENCY_DECAY = 0.7
POPULARITY_EXPONENT = 0.5
#: `history_candidates`' scoring of the visitor's own items (bench/README.md, "The visitor's
#: own items"): rank offset, weight of the item affinity, of the page's category.
HISTORY_OFFSET = 5.0
HISTORY_FREQUENCY = 0.1
HISTORY_SAME_CATEGORY = 0.1
#: The visitor's sessions whose items (the session-kNN tables, `keys.session_items`) the
#: `history` ingredient reads beside the profile's recent items: the current one and 3 before.
OWN_SESSIONS = 4
#: A session's items read (the hook keeps the newest 20, trimmed with some slack).
SESSION_ITEMS = 20


def seed_weights(item_id: str | None, recent: Sequence[str], seeds: int = SEEDS,
                 decay: float = RECENCY_DECAY) -> dict[str, float]:
    """The page's item (weight 1) and the visitor's `seeds` most recent items (decaying)."""
    out: dict[str, float] = {}
    if item_id:
        out[item_id] = 1.0
    for rank, iid in enumerate(recent[:seeds]):
        out[iid] = out.get(iid, 0.0) + decay ** (rank + (1 if item_id else 0))
    return out


def neighbour_candidates(
    seeds: Mapping[str, float],
    tables: Mapping[str, Sequence[tuple[str, float]]],
    popularity: Mapping[str, float],
    k: int,
    alpha: float = POPULARITY_EXPONENT,
) -> list[Candidate]:
    """Neighbours of weighted seeds, each co-occurrence divided by popularity^alpha; each result
    comes `via` its strongest seed."""
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for seed, sw in seeds.items():
        for jid, c in tables.get(seed, ()):
            pop = max(1.0, float(popularity.get(jid, 1.0)))
            s = sw * float(c) / (pop**alpha if alpha else 1.0)
            scores[jid] = scores.get(jid, 0.0) + s
            if s > best.get(jid, (0.0, ""))[0]:
                best[jid] = (s, seed)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [Candidate(j, s, best[j][1]) for j, s in ranked]


def ranked(rows: Sequence[tuple[str, float]], via: str = "") -> list[Candidate]:
    return [Candidate(iid, float(s), via) for iid, s in rows]


def history_candidates(
    recent: Sequence[str],
    item_scores: Mapping[str, float] | None = None,
    catalog: Callable[[str], Mapping[str, Any] | None] | None = None,
    page_category: str | None = None,
    earlier: Sequence[str] = (),
    *,
    offset: float = HISTORY_OFFSET,
    frequency: float = HISTORY_FREQUENCY,
    same_category: float = HISTORY_SAME_CATEGORY,
) -> list[Candidate]:
    """The visitor's own items, best first: the profile's recent distinct items (newest first),
    then `earlier` (the items of the visitor's latest sessions, newest first: `earlier_items`),
    and the items of its item affinity table (forward-decayed interactions weighted by type:
    view 1, cart 3, purchase 5; models/affinity.py), each scored

        offset / (offset + rank) + frequency * affinity / top affinity
            + same_category * [its first category is the page item's]

    `rank` its place in `recent` then `earlier` (their length for an item only the affinity
    table holds).
    So recency leads, and among items seen about as lately the ones interacted with more, and
    those of the page's category, come first. `catalog` (an item's record, or None) gives the
    categories; without it, or without `page_category`, that term is 0. The served route and
    the replay's offline twin call this with the same profile state (bench/reco_replay.py).
    """
    order = list(dict.fromkeys([*recent, *earlier]))
    scores = item_scores or {}
    top = max(scores.values(), default=0.0)
    pool = order + sorted((i for i in scores if i not in set(order)),
                          key=lambda i: (-scores[i], i))
    rank = {iid: k for k, iid in enumerate(order)}
    out: list[tuple[str, float]] = []
    for iid in pool:
        s = offset / (offset + rank.get(iid, len(order)))
        if top > 0:
            s += frequency * max(0.0, scores.get(iid, 0.0)) / top
        if same_category and page_category and catalog is not None:
            cats = (catalog(iid) or {}).get("categories") or ()
            if cats and cats[0] == page_category:
                s += same_category
        out.append((iid, s))
    out.sort(key=lambda kv: (-kv[1], kv[0]))
    return [Candidate(iid, s) for iid, s in out]


def own_session_names(pid: str | None, profile: Profile | None,
                      n: int = OWN_SESSIONS) -> list[str]:
    """The shared names (`shared_session_name`) of the visitor's `n` latest sessions, the
    current one first: whose item tables the `history` ingredient reads."""
    if not pid or profile is None or not profile.session.seq:
        return []
    seq = profile.session.seq
    return [shared_session_name(pid, dataclasses.replace(profile.session, seq=s))
            for s in range(seq, max(0, seq - n), -1)]


def earlier_items(names: Sequence[str], sessions: Mapping[str, Sequence[str]],
                  per_session: int = SESSION_ITEMS) -> list[str]:
    """The items of the sessions `names` (newest session first), each session's newest
    `per_session` (its items come oldest first, as `RecoReader.sessions` reads them), newest
    first, each once."""
    out: list[str] = []
    for name in names:
        out.extend(reversed(list(sessions.get(name, ()))[-per_session:]))
    return list(dict.fromkeys(out))


def visitor_state(profile: Profile | None, now_ms: int, cfg: AffinityConfig,
                  top: int = 10) -> dict[str, Any]:
    """The visitor in the shape `engine.logic.recipes.apply` reads (no profile: a new visitor)."""
    if profile is None:
        return {"recent": [], "cart": [], "purchased": [], "bought": [], "rebuy": {},
                "session": None, "categories": {}, "brands": {}, "items": {},
                "typical_price": None}

    def best(dim: str) -> dict[str, float]:
        scores = current_scores(profile, dim, now_ms, cfg)
        return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top])

    # the profile keeps recent ids without times: all count as seen at the last event
    return {
        "recent": [(iid, profile.last_seen) for iid in profile.recent],
        "cart": list(profile.cart),
        # every bought item excluded until `with_repurchase` applies the rule
        "purchased": list(profile.purchased),
        "bought": [(iid, profile.bought[iid][0] * 1000 if iid in profile.bought
                    else profile.last_seen) for iid in profile.purchased],
        "rebuy": {},
        "session": profile.session.view(now_ms, _SESSIONS) if profile.session.seq else None,
        "categories": best("category"),
        "brands": best("brand"),
        # the item affinity table (what `history_candidates` weighs beside recency)
        "items": current_scores(profile, "item", now_ms, cfg),
        "typical_price": None,
    }


def top_categories(visitor: Mapping[str, Any], n: int) -> list[str]:
    """The visitor's `n` strongest category paths."""
    cats: Mapping[str, float] = visitor.get("categories") or {}
    return [c for c, _ in sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


_SESSIONS = SessionConfig()


def with_repurchase(visitor: dict[str, Any], decisions: Sequence[Decision]) -> dict[str, Any]:
    """The visitor with the repurchase rule's decisions applied: `purchased` (what
    `exclusions.purchased` removes) holds the bought items it did not keep, `rebuy` the kept
    ones' reasons ("often bought again")."""
    visitor["purchased"] = [d.item_id for d in decisions if not d.keep]
    visitor["rebuy"] = {d.item_id: d.reason for d in decisions if d.keep}
    return visitor


def current_session(profile: Profile | None, pid: str | None, item_id: str | None, now_ms: int,
                    max_items: int = 20) -> tuple[str | None, list[str]]:
    """(the open session's name, its items oldest first, the page's item last), as
    `SessionKNN.recommend` takes them; a session that has ended counts as none."""
    uid: str | None = None
    items: list[str] = []
    if profile is not None and pid and profile.session.is_open(now_ms, _SESSIONS):
        uid = shared_session_name(pid, profile.session)
        items = session_items(profile.session)
    if item_id:
        items = [i for i in items if i != item_id] + [item_id]
    return uid, items[-max_items:]


def sample_sessions(index: Mapping[str, Sequence[tuple[str, int]]], exclude_uid: str | None,
                    sample_size: int) -> dict[str, int]:
    """The `sample_size` most recent sessions among those the items' indexes hold (the
    `recent` sampling of models/reco/sessionknn.py), never the current one: name -> its latest
    time in the indexes read, most recent first."""
    seen: dict[str, int] = {}
    for rows in index.values():
        for u, ts in rows:
            if u != exclude_uid and ts > seen.get(u, -1):
                seen[u] = ts
    return {u: seen[u] for u in sorted(seen, key=lambda u: (-seen[u], u))[:sample_size]}


def session_candidates(current: Sequence[str], sampled: Mapping[str, int],
                       sessions: Mapping[str, Sequence[str]], now_ms: int, k: int,
                       knn: SessionKNN) -> list[Candidate]:
    """`score_sessions` over the sampled sessions' items as read (a `SessionKNN` gives the
    weights; a session's time is its latest in the indexes, which only `lambda_time_s` reads)."""
    past = [PastSession(u, ts, tuple(sessions[u])) for u, ts in sampled.items() if u in sessions]
    return score_sessions(current, past, now_ms, knn.k, knn.lambda_pos, knn.lambda_time_s,
                          knn.lambda_neigh, k)


def scored_candidates(rows: Sequence[tuple[str, float, str]], n: int) -> list[Candidate]:
    """The `n` best of the (item, score, via) rows the session-kNN script returns (every item
    scored at least the n-th best, unordered), ranked as `score_sessions` ranks (score, then
    item id: the script leaves ties to this, as Lua's string order follows the server's
    locale)."""
    via = {iid: v for iid, _, v in rows}
    return [Candidate(iid, s, via[iid]) for iid, s in top_n({i: s for i, s, _ in rows}, n)]
