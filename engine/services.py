"""What every HTTP handler may use: one typed object, built once in the ASGI lifespan.

`running(settings, redis_url, bootstrap)` makes the clients (Redis pool, Kafka producer), the
stores on them, the flows on the stores, starts the background work (config watching, live
counters, the dashboard feed) and stops it all in reverse order. The order is written out
here, once; nothing is looked up by name. Handlers reach it as `request.app.state.svc`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from engine.confighub import ConfigHub, default_hub
from engine.db import new_engine
from engine.db.control import ControlPlane
from engine.db.dm import DmStore
from engine.demo.shop import Shop, load_shop
from engine.eventlog import DecisionLog, EventLog, LogUnavailable, ensure_topics
from engine.flows.access import SESSION_COOKIE, Access, Secrets
from engine.flows.admin import Admin
from engine.flows.beacon import BeaconSource
from engine.flows.campaigns import Campaigns
from engine.flows.catalog import Catalog
from engine.flows.dashboard import DashboardFeed
from engine.flows.decide import Decider
from engine.flows.dm.brand import Brand
from engine.flows.dm.library import Library
from engine.flows.dm.library import register as register_dm
from engine.flows.dm.personalise import Personaliser
from engine.flows.dm.portal import Portal
from engine.flows.dm.tracking import Tracking
from engine.flows.evaluation import Evaluations
from engine.flows.health import Health, WriteGate
from engine.flows.ingest import Ingest
from engine.flows.models import PublishedModels
from engine.flows.privacy import Privacy
from engine.flows.profiles import Profiles
from engine.flows.rank import Ranker
from engine.flows.recommend import CATALOG_CACHE_S, Recommender
from engine.flows.segment import Tracking as SegmentTracking
from engine.flows.stats import LiveStats, Trending
from engine.logic.dm.sending import BotRules, TokenSigner
from engine.logic.rank import restore_rank_model
from engine.logic.recipes import load_recipes
from engine.mail.outbox import Outbox
from engine.settings import Settings
from engine.store.activity import ActivityStore
from engine.store.catalog import CachedCatalog, CatalogStore
from engine.store.decide_read import DecideReader
from engine.store.learning import ModelStore, PropensityStore
from engine.store.live import LiveStore
from engine.store.memory import MemoryProbe
from engine.store.profiles import ProfileStore, new_client
from engine.store.reco_read import RecoReader

DEMO_KEY_SECRET = "demo_write_key"  # the demo shop's public key (public keys are no secret)


@dataclass
class Services:
    """The flows (and the settings) a handler may use. No raw client: routes reach Redis and
    the broker only through a flow."""

    settings: Settings
    hub: ConfigHub  # decisions (segments, campaigns) and recipes, hot-reloaded
    live: LiveStats
    ingest: Ingest
    decider: Decider
    campaigns: Campaigns
    profiles: Profiles
    catalog: Catalog
    recommender: Recommender
    trending: Trending
    feed: DashboardFeed
    beacon: BeaconSource
    shop: Shop
    health: Health
    access: Access  # who is calling: keys (cached), sessions, secrets, rate limits
    admin: Admin  # keys, users and the audit log, for the admin pages
    privacy: Privacy  # export and erase of one person's data
    dm_portal: Portal  # distributed marketing, the partner's side
    dm_brand: Brand  # distributed marketing, the brand's side
    dm_tracking: Tracking  # opens, clicks, unsubscribes of the mail
    tracking: SegmentTracking  # Segment's tracking API (the Segment / RudderStack SDKs)
    mail_outbox: Outbox | None = None  # the embedded outbox's Maildir (None: a real relay)
    models: PublishedModels | None = None  # the learner's published bandits, reloaded
    ranker: Ranker | None = None  # the Rank/Reward API
    evaluations: Evaluations | None = None  # off-policy evaluation of learning campaigns
    demo_key: str | None = None  # the public key the demo shop's pages carry
    metrics_dir: Path | None = None
    session_cookie: str = SESSION_COOKIE


async def _quietly(stop: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(Exception):
        await stop()


def own_origins(s: Settings) -> tuple[str, ...]:
    """The engine's own origins: its public URL, and on loopback its local names."""
    from engine.logic.access import normalize_origin

    out = [normalize_origin(s.base_url)]
    if s.public_url is None and s.host in ("127.0.0.1", "localhost", "::1"):
        out += [f"http://127.0.0.1:{s.port}", f"http://localhost:{s.port}"]
    return tuple(dict.fromkeys(out))


@contextlib.asynccontextmanager
async def running(settings: Settings, redis_url: str, bootstrap: str,
                  metrics_dir: Path | None = None) -> AsyncIterator[Services]:
    s = settings
    if not s.database_url:
        raise RuntimeError("the API needs the control-plane database (KAIROS_DATABASE_URL)")
    # a burst of requests waits for a free connection (each request holds up to 3 at once)
    client = new_client(redis_url, timeout=2.0, wait_s=2.0)
    log = EventLog(bootstrap, s.events_topic, linger_ms=s.producer_linger_ms,
                   timeout_s=s.produce_timeout_s)
    stack = contextlib.AsyncExitStack()
    try:
        stack.push_async_callback(client.aclose)
        stack.push_async_callback(log.close)
        with contextlib.suppress(Exception):
            await ensure_topics(bootstrap, {s.events_topic: s.partitions,
                                            s.decisions_topic: s.partitions,
                                            s.dm_sends_topic: s.partitions,
                                            s.rank_topic: s.partitions}, 10.0)
        with contextlib.suppress(LogUnavailable):
            await log.producer()

        # the control plane: keys, users, sessions (never on a hot path: keys are cached)
        control = ControlPlane(new_engine(s.database_url))
        stack.push_async_callback(control.close)
        secrets = await Secrets.load(control)
        access = Access(control, secrets, refresh_s=s.key_refresh_s, key_rate=s.rate_per_key,
                        key_burst=2 * s.rate_per_key, visitor_rate=s.rate_per_visitor,
                        visitor_burst=3 * s.rate_per_visitor, metrics_token=s.metrics_token,
                        own_origins=own_origins(s))
        await access.start()
        stack.push_async_callback(_quietly, access.stop)
        demo_key = await control.get_secret(DEMO_KEY_SECRET)

        # stores
        profile_store = ProfileStore(client, s.profile_ttl_ms)
        live_store = LiveStore(client, s.group_id)
        decide_reader = DecideReader(client)
        stack.push_async_callback(_quietly, decide_reader.close)
        with contextlib.suppress(Exception):
            await decide_reader.start()
        reco_reader = RecoReader(client, s.group_id)
        catalog_store = CatalogStore(client)

        # background: live counters, the configuration (watched)
        live = LiveStats(live_store)
        await live.start()
        stack.push_async_callback(_quietly, live.close)
        hub = default_hub(s.config_dir, s.config_reload_debounce_ms)
        hub.register("recipes", load_recipes, ("recipes",))
        register_dm(hub)
        await hub.start()
        stack.push_async_callback(_quietly, hub.stop)
        beacon = BeaconSource(Path(s.config_dir) / "sitemap.yaml")
        beacon.load_initial()  # an invalid sitemap stops the engine with file:line messages

        # is Redis full? (ingest stops acknowledging while the stream could not apply)
        gate = WriteGate(MemoryProbe(client), s.store_full_ratio)
        await gate.start()
        stack.push_async_callback(_quietly, gate.close)

        # flows
        models = PublishedModels(
            ModelStore(client, s.group_id), hub, s.model_reload_s,
            lambda blob: restore_rank_model(blob, s.rank_apprentice, s.rank_agreement,
                                            s.rank_agreement_window))
        with contextlib.suppress(Exception):
            await models.refresh()
        models.start()
        stack.push_async_callback(_quietly, models.close)
        decider = Decider(decide_reader, hub, DecisionLog(log, s.decisions_topic), s.affinity,
                          s.decide_deadline_ms, sign=access.sign_decision, models=models,
                          propensity=PropensityStore(client))
        stack.push_async_callback(_quietly, decider.close)
        campaigns = Campaigns(hub, decide_reader)
        trending = Trending(reco_reader)
        feed = DashboardFeed(live, trending, campaigns, hub, decide_reader,
                             max_listeners=s.sse_max_listeners,
                             learning=ModelStore(client, s.group_id))
        feed.start()
        stack.push_async_callback(_quietly, feed.close)
        recommender = Recommender(profile_store, reco_reader,
                                  CachedCatalog(catalog_store, ttl_s=CATALOG_CACHE_S),
                                  s.affinity, lambda: hub.get("recipes"),
                                  lambda: hub.errors.get("recipes", []))

        # distributed marketing: the store, the versions, the dm.sends topic, tracking
        dm_store = DmStore(control.engine)
        library = Library(hub, dm_store)
        sends_log = EventLog(bootstrap, s.dm_sends_topic, linger_ms=s.producer_linger_ms,
                             timeout_s=s.produce_timeout_s)
        stack.push_async_callback(sends_log.close)
        signer = TokenSigner([secrets.tracking.encode()])
        tracking = Tracking(dm_store, control, library, signer, log,
                            bot_rules=BotRules(min_click_delay=timedelta(seconds=s.dm_bot_click_delay_s)),
                            soft_limit=s.dm_soft_bounce_limit, soft_days=s.dm_soft_bounce_days)
        personaliser = Personaliser(recommender, lambda: hub.get("recipes"), s.base_url)
        ingest = Ingest(log, live, s.retry_after_s, access, gate)
        svc = Services(
            settings=s, hub=hub, live=live,
            ingest=ingest,
            decider=decider,
            campaigns=campaigns,
            profiles=Profiles(profile_store, ActivityStore(client), s.affinity,
                              PropensityStore(client)),
            catalog=Catalog(catalog_store),
            recommender=recommender,
            trending=trending, feed=feed, beacon=beacon, shop=load_shop(s.demo_catalog),
            health=Health(client, log, live_store, gate, control), metrics_dir=metrics_dir,
            access=access, admin=Admin(control, access),
            privacy=Privacy(client, control, profile_store, s),
            tracking=SegmentTracking(ingest, decider, live, access),
            demo_key=demo_key, models=models,
            ranker=Ranker(models, log, s.rank_topic),
            evaluations=Evaluations(ModelStore(client, s.group_id), hub, models),
            dm_portal=Portal(dm_store, control, library, sends_log, personaliser),
            dm_brand=Brand(dm_store, control, library),
            dm_tracking=tracking,
            mail_outbox=Outbox(s.outbox_dir) if s.embedded_outbox or s.mail_dir else None,
        )
        yield svc
    finally:
        await stack.aclose()
