"""When Redis is (nearly) full, and whether ingest should stop accepting. Pure.

With `maxmemory` and the `noeviction` policy (the embedded default, docker-compose's too),
Redis refuses every write once it is full instead of dropping state. The stream worker then
retries its batch until memory is freed or raised (nothing acknowledged is lost: the events
wait in Kafka), and ingest must stop acknowledging new events, or the backlog would outgrow
Kafka's retention. Ingest refuses from `ratio` of `maxmemory` on (leaving the rest for the
events already acknowledged), and while a write is refused; it accepts again once usage is
`margin` below the threshold, so that it does not flap at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What one look at Redis said."""

    used: int  # bytes (INFO memory used_memory)
    maxmemory: int  # bytes; 0 = no limit
    policy: str  # maxmemory-policy
    writable: bool  # a write was accepted just now

    @property
    def ratio(self) -> float | None:
        return self.used / self.maxmemory if self.maxmemory > 0 else None


def refuse_writes(state: MemoryState, ratio: float, was_full: bool, margin: float = 0.02) -> bool:
    """Should ingest answer 503 now? True while Redis refuses writes, or from `ratio` of
    `maxmemory` (down to `ratio - margin` once refusing)."""
    if not state.writable:
        return True
    if state.maxmemory <= 0:
        return False
    threshold = ratio - margin if was_full else ratio
    return state.used >= threshold * state.maxmemory


def describe(state: MemoryState) -> str:
    """`"used 48.1 MB of 50.0 MB (noeviction)"`, or `"writes refused: …"`."""
    used = f"{state.used / 1e6:.1f} MB"
    of = f" of {state.maxmemory / 1e6:.1f} MB" if state.maxmemory > 0 else " (no maxmemory)"
    text = f"used {used}{of} ({state.policy})"
    return text if state.writable else f"writes refused: {text}"
