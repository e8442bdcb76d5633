"""What every HTTP handler may use, made once in the ASGI lifespan (never at import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from engine.eventlog import EventLog
from engine.settings import Settings
from engine.store.profiles import ProfileStore


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    events: EventLog
    profiles: ProfileStore
    kafka_bootstrap: str
    metrics_dir: Path | None = None
    # capability singletons, by name (decision config, catalog, …), set by route modules' startup
    extra: dict[str, Any] = field(default_factory=dict)
