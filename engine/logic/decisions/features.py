"""The visitor's features a contextual campaign decides on. Pure.

`visitor_features(view, context)` turns the rules' profile view (engine/logic/decisions/state.py
`rule_view`, live segments included) and the decide call's context into the small flat dict the
contextual policy reads (models/bandit/contextual.py: strings are one-hot, numbers values, lists
of strings multi-hot):

* `top_categories` / `top_brands`: the visitor's `TOP_K` strongest category and brand
  affinities (names only: which ones, not how strong, so a feature means the same for a new and
  an old visitor);
* `segments`: the live segments;
* `device`, `channel`, `page_type`: from the context when they are strings;
* `purchase_probability`, `exit_probability`: the learnt propensities when scored;
* `returning`: whether the visitor had events before this one.

The same dict is logged with the decision (props.features), and is what the learner learns the
reward on, so the model sees at learning exactly what it saw at deciding.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

TOP_K = 3
CONTEXT_KEYS = ("device", "channel", "page_type")
MAX_SEGMENTS = 20
MAX_TEXT = 64


def _top(scores: Any, k: int) -> list[str]:
    if not isinstance(scores, Mapping) or not scores:
        return []
    best = heapq.nlargest(k, scores.items(), key=lambda kv: (kv[1], kv[0]))
    return [str(key)[:MAX_TEXT] for key, score in best if score > 0]


def visitor_features(view: Mapping[str, Any], context: Mapping[str, Any],
                     top: int = TOP_K) -> dict[str, Any]:
    """The contextual policy's input for one visitor now (see the module docstring)."""
    out: dict[str, Any] = {}
    aff = view.get("affinities")
    if isinstance(aff, Mapping):
        for dim, name in (("category", "top_categories"), ("brand", "top_brands")):
            try:
                keys = _top(aff[dim], top)
            except KeyError:
                keys = []
            if keys:
                out[name] = keys
    segs = view.get("segments")
    if isinstance(segs, list | tuple | set | frozenset) and segs:
        out["segments"] = sorted(str(s)[:MAX_TEXT] for s in segs)[:MAX_SEGMENTS]
    for key in CONTEXT_KEYS:
        value = context.get(key)
        if isinstance(value, str) and value:
            out[key] = value[:MAX_TEXT]
    prop = view.get("propensity")
    if isinstance(prop, Mapping):
        for key, name in (("purchase", "purchase_probability"), ("exit", "exit_probability")):
            value = prop.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = round(float(value), 4)
    count = view.get("event_count")
    if isinstance(count, int) and not isinstance(count, bool):
        out["returning"] = count > 1
    return out
