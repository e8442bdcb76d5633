"""One typed settings object, built once at the entry point from `config/kairos.yaml` and
environment variables, then passed down. Nothing else in Kairos reads the environment.

Every setting has a default that works on the embedded stack. Environment variables win
over the file:

| variable | setting | default |
|---|---|---|
| `KAIROS_PORT` | HTTP port of the API | 8000 |
| `KAIROS_HOST` | bind address of the API | 127.0.0.1 |
| `KAIROS_REDIS_URL` | external Redis/Valkey (then none is started); `redis+cluster://h:p,h:p` a Redis Cluster | embedded Valkey |
| `KAIROS_KAFKA_BOOTSTRAP` | external Kafka `host:port[,…]` (then none is started) | embedded Kafka |
| `KAIROS_CONFIG_DIR` | the config folder | `./config` |
| `KAIROS_VAR_DIR` | data of the embedded servers, logs | `./var` |
| `KAIROS_PARTITIONS` | partitions of the `events` topic | 4 |
| `KAIROS_API_WORKERS` | API processes | 1 |
| `KAIROS_DATABASE_URL` | external PostgreSQL 14+ (control plane; then none is started) | embedded PostgreSQL |
| `KAIROS_METRICS_TOKEN` | bearer token for `/metrics` (unset: loopback callers only) | unset |
| `KAIROS_API_KEY` | a secret key the CLI sends to the API (`kairos replay --to api`) | unset |
| `KAIROS_PUBLIC_URL` | the engine's address as browsers see it (links, cookies' Secure flag) | `http://HOST:PORT` |
| `KAIROS_REDIS_MAXMEMORY` | the embedded Valkey's maxmemory (`0`: none) | 1gb |
| `KAIROS_SMTP_URL` | the SMTP relay distributed-marketing mail goes to (`smtp://`, `smtps://`) | the embedded outbox |
| `KAIROS_OUTBOX_PORT` / `KAIROS_BOUNCE_PORT` | the embedded outbox's SMTP port / the mailer's bounce listener | 2525 / 2526 |
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.affinity import AffinityConfig


class SettingsError(ValueError):
    """A setting has a wrong value; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    config_dir: Path = Path("config")
    var_dir: Path = Path("var")
    api_workers: int = 1
    # topics
    events_topic: str = "events"
    decisions_topic: str = "decisions"
    segments_topic: str = "segments"
    partitions: int = 4
    group_id: str = "kairos"
    # ingest
    produce_timeout_s: float = 5.0
    producer_linger_ms: int = 1
    retry_after_s: int = 5
    # Redis full: the embedded Valkey's maxmemory ("0": no limit) and policy (noeviction:
    # a full Redis refuses writes rather than dropping state); ingest answers 503 from this
    # share of maxmemory on (any Redis that sets maxmemory), leaving the rest for the backlog
    redis_maxmemory: str = "1gb"
    redis_maxmemory_policy: str = "noeviction"
    store_full_ratio: float = 0.95
    # worker
    batch_max: int = 1000  # records the consumer takes at most per batch
    commit_max_events: int = 2000  # events planned and committed (one script call) at most
    # a batch of several parts: plan the next part while Redis runs this one's commit
    commit_ahead: bool = True
    # ... and across batches: while a batch's last part commits, what the consumer has fetched
    # since becomes the next part, planned during that commit; the chain ends when nothing has
    # arrived, or after this long (offsets are committed and rebalances served between chains).
    # Off by default: in the 1,000 events/s soak (one-event records) chained parts stayed small
    # and freshness was worse with it than without (bench/README.md, 2026-12-03 and -04)
    batch_chain_s: float = 0.0
    batch_within_s: float = 0.01
    fetch_max_wait_ms: int = 100  # how long an idle fetch waits at the broker (faust's is 1500)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    profile_ttl_days: float = 90.0
    # online collaborative filtering (streams/hooks/cf.py): one model per events partition
    cf_factors: int = 16
    cf_max_items: int = 20_000  # item vectors kept per partition
    cf_max_visitors: int = 50_000  # visitor vectors kept in memory per partition
    cf_snapshot_s: float = 30.0  # how often a worker snapshots its models to Redis
    # dashboards: Server-Sent Events streams (GET /v1/stats/stream) per API process; 503 beyond
    sse_max_listeners: int = 100
    # decisions
    decide_deadline_ms: int = 50
    config_reload_debounce_ms: int = 300
    # the learning loop (streams/learner.py, docs/learning.md): rewards are joined to their
    # decision within `reward_window_s` (a decision with none gets `default_reward`); the
    # learner publishes changed models every `model_publish_s`, snapshots its state with its
    # offsets every `learner_snapshot_s`; API processes re-read model versions every
    # `model_reload_s`; one learner runs at a time (a lease of `learner_lease_ms`)
    reward_window_s: float = 1800.0
    default_reward: float = 0.0
    model_publish_s: float = 1.0
    learner_snapshot_s: float = 5.0
    model_reload_s: float = 1.0
    learner_lease_ms: int = 10_000
    learning_log_max: int = 100_000  # joined (decision, reward) rows kept per campaign
    # the Rank/Reward API (POST /v1/rank): its decisions and rewards travel on `rank_topic`;
    # in apprentice mode the caller's baseline is served until the policy agrees with it
    # `rank_agreement` of the last `rank_agreement_window` decisions
    # purchase and exit propensity, learnt per event by the learner (models/propensity/online.py)
    # and kept per visitor for `propensity_ttl_s`; a session ends after
    # `propensity_session_gap_s` without an event
    propensity: bool = True
    propensity_session_gap_s: float = 1800.0
    propensity_ttl_s: float = 7200.0
    rank_topic: str = "rank"
    rank_apprentice: bool = False
    rank_agreement: float = 0.9
    rank_agreement_window: int = 500
    # demo shop (/demo): the REES46 sample CSV it builds its catalog from; a relative path is
    # relative to the project root; missing -> a small built-in catalog
    demo_catalog: str = "../shared/data/rees46/2019-Oct_head.csv"
    # access (engine/logic/access.py, engine/flows/access.py)
    metrics_token: str | None = None  # None: /metrics answers loopback callers only
    api_key: str | None = None  # what the CLI sends to the API (kairos replay --to api)
    public_url: str | None = None  # None: http://host:port
    allowed_hosts: tuple[str, ...] = ()  # Host headers accepted besides the engine's own
    key_refresh_s: float = 5.0  # key cache refresh (a NOTIFY reloads it at once)
    rate_per_key: float = 1000.0  # requests/s per key and API process (burst 2x)
    rate_per_visitor: float = 20.0  # requests/s per visitor per public key and process (burst 3x)
    session_days: float = 7.0
    # distributed marketing (engine/flows/dm, `kairos mailer`, the local outbox)
    smtp_url: str | None = None  # None: the embedded outbox on 127.0.0.1:outbox_port
    outbox_port: int = 2525
    mail_dir: str | None = None  # the outbox's Maildir, read by the Outbox page (None: <var_dir>/mail)
    bounce_port: int = 2526  # the mailer's bounce listener (DSNs to the VERP addresses)
    dm_sends_topic: str = "dm.sends"
    dm_partner_rate: float = 60.0  # sends per rate window per partner (paced: burst 1)
    dm_global_rate: float = 6000.0  # sends per rate window in all, per mailer process
    dm_rate_window_s: float = 60.0  # the rate window (a minute; tests shorten it)
    dm_claim_lease_s: float = 60.0  # a claimed send not finished by then is retried (same Message-ID)
    dm_sweep_s: float = 1.0  # how often the mailer looks for due retries, journey steps, lost records
    dm_retry_scale: float = 1.0  # multiplies the retry schedule (1 min, 5 min, ...); tests shorten it
    dm_bot_click_delay_s: float = 2.0  # clicks sooner after delivery are a scanner's
    dm_soft_bounce_limit: int = 3  # soft bounces within dm_soft_bounce_days suppress an address
    dm_soft_bounce_days: float = 14.0
    dm_senders: int = 4  # SMTP connections a mailer process keeps open
    # model
    affinity: AffinityConfig = field(default_factory=AffinityConfig)

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def outbox_dir(self) -> Path:
        return Path(self.mail_dir) if self.mail_dir else self.var_dir / "mail"

    @property
    def embedded_outbox(self) -> bool:
        return self.smtp_url is None

    @property
    def relay_url(self) -> str:
        """Where the mailer hands mail: KAIROS_SMTP_URL, else the embedded outbox."""
        return self.smtp_url or f"smtp://127.0.0.1:{self.outbox_port}?starttls=off"

    @property
    def profile_ttl_ms(self) -> int:
        return int(self.profile_ttl_days * 86_400_000)

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # Child processes (API workers under uvicorn, faust workers) get the settings as JSON.
    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["config_dir"] = str(self.config_dir)
        data["var_dir"] = str(self.var_dir)
        data["affinity"] = {k: dict(v) if isinstance(v, Mapping) else v
                            for k, v in dataclasses.asdict(self.affinity).items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["config_dir"] = Path(data["config_dir"])
        data["var_dir"] = Path(data["var_dir"])
        data["affinity"] = AffinityConfig(**data["affinity"])
        data["allowed_hosts"] = tuple(data.get("allowed_hosts", ()))
        return cls(**data)


_ENV = {
    "KAIROS_PORT": ("port", int),
    "KAIROS_HOST": ("host", str),
    "KAIROS_REDIS_URL": ("redis_url", str),
    "KAIROS_KAFKA_BOOTSTRAP": ("kafka_bootstrap", str),
    "KAIROS_CONFIG_DIR": ("config_dir", Path),
    "KAIROS_VAR_DIR": ("var_dir", Path),
    "KAIROS_PARTITIONS": ("partitions", int),
    "KAIROS_API_WORKERS": ("api_workers", int),
    "KAIROS_DATABASE_URL": ("database_url", str),
    "KAIROS_METRICS_TOKEN": ("metrics_token", str),
    "KAIROS_API_KEY": ("api_key", str),
    "KAIROS_PUBLIC_URL": ("public_url", str),
    "KAIROS_REDIS_MAXMEMORY": ("redis_maxmemory", str),
    "KAIROS_SMTP_URL": ("smtp_url", str),
    "KAIROS_OUTBOX_PORT": ("outbox_port", int),
    "KAIROS_BOUNCE_PORT": ("bounce_port", int),
}

_FILE_KEYS = {f.name for f in dataclasses.fields(Settings)} - {"affinity"}
_AFFINITY_KEYS = {f.name for f in dataclasses.fields(AffinityConfig)}


def load_settings(env: Mapping[str, str], config_dir: Path | None = None) -> Settings:
    """Build the settings from `<config_dir>/kairos.yaml` and the given environment."""
    cdir = Path(env.get("KAIROS_CONFIG_DIR") or config_dir or "config")
    values: dict[str, Any] = {"config_dir": cdir}
    path = cdir / "kairos.yaml"
    if path.exists():
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        if not isinstance(doc, dict):
            raise SettingsError(f"{path}: must be a mapping of settings")
        for key, value in doc.items():
            if key == "affinity":
                if not isinstance(value, dict):
                    raise SettingsError(f"{path}: affinity must be a mapping")
                unknown = set(value) - _AFFINITY_KEYS
                if unknown:
                    raise SettingsError(f"{path}: unknown affinity setting(s): {', '.join(sorted(unknown))}")
                try:
                    values["affinity"] = AffinityConfig(**value)
                except (TypeError, ValueError) as exc:
                    raise SettingsError(f"{path}: {exc}") from None
            elif key in _FILE_KEYS:
                values[key] = value
            else:
                raise SettingsError(f"{path}: unknown setting {key!r}")
    for var, (name, typ) in _ENV.items():
        raw = env.get(var)
        if raw:
            try:
                values[name] = typ(raw)
            except ValueError:
                raise SettingsError(f"{var}={raw!r} is not a valid {typ.__name__}") from None
    for name in ("config_dir", "var_dir"):
        if name in values:
            values[name] = Path(values[name])
    if "allowed_hosts" in values:
        values["allowed_hosts"] = tuple(values["allowed_hosts"])
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 0 < s.port < 65536:
        raise SettingsError(f"port must be between 1 and 65535, not {s.port}")
    if s.partitions < 1:
        raise SettingsError("partitions must be at least 1")
    if s.decide_deadline_ms < 1:
        raise SettingsError("decide_deadline_ms must be at least 1")
    if s.api_workers < 1:
        raise SettingsError("api_workers must be at least 1")
    if not 0 < s.store_full_ratio <= 1:
        raise SettingsError("store_full_ratio must be in (0, 1]")
    if s.reward_window_s <= 0:
        raise SettingsError("reward_window_s must be > 0")
    if not 0 <= s.default_reward <= 1:
        raise SettingsError("default_reward must be in [0, 1]")
    for name in ("model_publish_s", "learner_snapshot_s", "model_reload_s"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name} must be > 0")
    if not 0 < s.rank_agreement <= 1:
        raise SettingsError("rank_agreement must be in (0, 1]")
    if s.rank_agreement_window < 1:
        raise SettingsError("rank_agreement_window must be at least 1")
    if s.propensity_session_gap_s <= 0 or s.propensity_ttl_s <= 0:
        raise SettingsError("propensity_session_gap_s and propensity_ttl_s must be > 0")
    if s.learner_lease_ms < 1000:
        raise SettingsError("learner_lease_ms must be at least 1000")
    if s.sse_max_listeners < 0:
        raise SettingsError("sse_max_listeners must be at least 0")
    if s.redis_url is not None and not s.redis_url.startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://")):
        raise SettingsError("KAIROS_REDIS_URL must start with redis://, rediss://, unix:// or "
                            "redis+cluster:// (a Redis Cluster: redis+cluster://host:port,host:port)")
    if s.database_url is not None and not s.database_url.startswith(
            ("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise SettingsError("KAIROS_DATABASE_URL must start with postgresql:// (psycopg 3 driver)")
    if s.smtp_url is not None and not s.smtp_url.startswith(("smtp://", "smtps://")):
        raise SettingsError("KAIROS_SMTP_URL must start with smtp:// or smtps://")
    for name in ("dm_partner_rate", "dm_global_rate", "dm_rate_window_s", "dm_claim_lease_s",
                 "dm_sweep_s", "dm_retry_scale"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name} must be a positive number")
    if s.dm_senders < 1:
        raise SettingsError("dm_senders must be at least 1")
    if s.public_url is not None and not s.public_url.startswith(("http://", "https://")):
        raise SettingsError("KAIROS_PUBLIC_URL must start with http:// or https://")
