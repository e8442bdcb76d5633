"""Prometheus metrics of the API processes, plus the workers' own measurements.

With several API processes the counters live in prometheus_client's multiprocess
directory (`PROMETHEUS_MULTIPROC_DIR`, set by `kairos api` before the workers fork), so
`/metrics` on any process shows the sum. Workers publish what they measure (rate, lag,
freshness) to Redis each second; `/metrics` adds those as `kairos_worker_*` gauges.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prom_mp

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

EVENTS_ACCEPTED = Counter("kairos_events_accepted_total", "Events acknowledged by the broker")
EVENTS_REJECTED = Counter("kairos_events_rejected_total", "Events refused at validation", ["field"])
REQUESTS = Histogram("kairos_http_request_seconds", "HTTP request latency", ["route", "status"],
                     buckets=_BUCKETS)
PRODUCE = Histogram("kairos_produce_seconds", "Time for the broker to acknowledge a request's events",
                    buckets=_BUCKETS)
PRODUCE_FAILURES = Counter("kairos_produce_failures_total", "Requests answered 503: broker unavailable")
STORE_FULL_REFUSALS = Counter("kairos_store_full_refusals_total",
                              "Requests answered 503 because Redis is (nearly) full")

_KNOWN_FIELDS = frozenset(
    {"event_id", "type", "visitor_id", "user_id", "channel", "ts", "item", "items", "context",
     "props", "decision_id", "event", "body"}
)


def field_label(field: str) -> str:
    head = field.split(".", 1)[0].split("[", 1)[0]
    return head if head in _KNOWN_FIELDS else "other"


def render(multiproc_dir: Path | None, workers: Mapping[str, Mapping[str, Any]], now: float | None = None) -> bytes:
    if multiproc_dir is not None:
        registry = CollectorRegistry()
        prom_mp.MultiProcessCollector(registry, path=str(multiproc_dir))
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    return body + worker_lines(workers, now)


_WORKER_GAUGES = (
    ("rate", "kairos_worker_events_per_second", "Events applied per second (10 s window)"),
    ("lag", "kairos_worker_lag_events", "Events in the worker's partitions not yet applied"),
    ("applied_total", "kairos_worker_applied_total", "Events applied since the worker started"),
    ("duplicates_total", "kairos_worker_duplicates_total", "Redelivered or resent events ignored"),
    ("freshness_p50_ms", "kairos_worker_freshness_p50_ms", "Accept-to-applied time, median"),
    ("freshness_p99_ms", "kairos_worker_freshness_p99_ms", "Accept-to-applied time, 99th percentile"),
    ("bad_records", "kairos_worker_bad_records_total",
     "Records skipped: unreadable, or failing to apply on their own"),
    ("bad_events", "kairos_worker_bad_events_total", "Events skipped: they do not fit the event spec"),
    ("unstored_total", "kairos_worker_unstored_total",
     "Events counted in the traffic only (consent declined, erased profiles)"),
    ("dropped_ops_total", "kairos_worker_dropped_ops_total",
     "Table changes dropped past an event's op budget"),
    ("fenced_total", "kairos_worker_fenced_total",
     "Batches a fence refused (a newer owner of the partition, or Redis rolled back)"),
    ("store_full", "kairos_worker_store_full", "1 while Redis refuses the worker's writes (out of memory)"),
    ("store_full_retries_total", "kairos_worker_store_full_retries_total",
     "Batch attempts refused by Redis for lack of memory (each retried until it applies)"),
    ("emits_lost_total", "kairos_worker_emits_lost_total",
     "Segment join and leave events the worker could not send to Kafka"),
)


def store_lines(state: Any, full: bool) -> bytes:
    """This process's last look at Redis's memory (`engine.logic.memory.MemoryState` or None)."""
    out = ["# HELP kairos_store_full 1 while ingest refuses events because Redis is (nearly) full\n"
           f"# TYPE kairos_store_full gauge\nkairos_store_full {int(full)}\n"]
    if state is not None:
        out.append("# HELP kairos_redis_used_memory_bytes Redis used_memory\n"
                   "# TYPE kairos_redis_used_memory_bytes gauge\n"
                   f"kairos_redis_used_memory_bytes {state.used}\n"
                   "# HELP kairos_redis_maxmemory_bytes Redis maxmemory (0: no limit)\n"
                   "# TYPE kairos_redis_maxmemory_bytes gauge\n"
                   f"kairos_redis_maxmemory_bytes {state.maxmemory}\n"
                   "# HELP kairos_redis_writable 1 when Redis took the last probe write\n"
                   f"# TYPE kairos_redis_writable gauge\nkairos_redis_writable {int(state.writable)}\n")
    return "".join(out).encode()


def worker_lines(workers: Mapping[str, Mapping[str, Any]], now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    live = {w: s for w, s in workers.items() if now - float(s.get("ts", 0)) < 15}
    out: list[str] = []
    for key, name, help_ in _WORKER_GAUGES:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")
        for w, s in sorted(live.items()):
            label = w.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{name}{{worker="{label}"}} {float(s.get(key, 0))}\n')
    out.append("# HELP kairos_workers_live Workers that reported in the last 15 s\n"
               f"# TYPE kairos_workers_live gauge\nkairos_workers_live {len(live)}\n")
    return "".join(out).encode()


_LEARNER_COUNTERS = (
    ("decisions", "kairos_learner_decisions_total", "Logged decisions whose reward window opened"),
    ("rewarded", "kairos_learner_rewarded_total", "Decisions closed with a reward"),
    ("defaulted", "kairos_learner_defaulted_total", "Decisions closed with the default reward"),
    ("late_reactions", "kairos_learner_late_reactions_total",
     "Reactions after their decision's window (not learnt)"),
    ("duplicate_reactions", "kairos_learner_duplicate_reactions_total",
     "Reactions delivered again (counted once)"),
    ("never_activated", "kairos_learner_never_activated_total",
     "Deferred decisions never activated (not learnt)"),
)


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def learner_lines(stats: Mapping[str, int], versions: Mapping[str, int]) -> bytes:
    """The learner's counters as of its last commit, its drift detections per watched model
    (a bandit arm's reward rate, a propensity model's error), and the model versions this
    API process serves."""
    out: list[str] = []
    for key, name, help_ in _LEARNER_COUNTERS:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} counter\n{name} {int(stats.get(key, 0))}\n")
    out.append("# HELP kairos_learner_drift_detections_total Drifts detected (ADWIN); the model "
               "reacted (docs/learning.md)\n# TYPE kairos_learner_drift_detections_total counter\n")
    for key, n in sorted(stats.items()):
        if key.startswith("drift:"):
            out.append(f'kairos_learner_drift_detections_total{{model="{_label(key[6:])}"}} {int(n)}\n')
    out.append("# HELP kairos_model_version The published model version this API process serves\n"
               "# TYPE kairos_model_version gauge\n")
    for model, v in sorted(versions.items()):
        out.append(f'kairos_model_version{{model="{_label(model)}"}} {int(v)}\n')
    return "".join(out).encode()
