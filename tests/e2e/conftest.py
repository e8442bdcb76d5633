"""Browser fixtures: Debian's Chromium driven by Playwright for Python, against a real stack.

One Chromium per session (no browser download: `executable_path` is the system's chromium), one
fresh context (empty storage) per test, and one Kairos stack (API + worker on the session's
Valkey and Kafka) serving the demo shop. `Beacon` records the exact requests the beacon sends;
`read_events` reads what the engine put on the stack's `events` topic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from engine.logic.events import decode_events
from tests.conftest import ROOT, Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shop(make_stack: Callable[..., Stack]) -> Stack:
    """A stack whose API serves /demo and /sdk/kairos.js (the beacon must be built)."""
    if not (ROOT / "sdk_js" / "dist" / "kairos.js").exists():
        pytest.fail("sdk_js/dist/kairos.js is missing: run `kairos setup` (npm ci && npm run build)")
    return make_stack(name="e2e")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@dataclass
class Sent:
    """One request of the beacon: endpoint (`events` | `decide`), how, its JSON body, outcome."""

    endpoint: str
    kind: str  # resource type: fetch | ping (sendBeacon)
    body: dict[str, Any]
    page: str
    ok: bool | None = None  # None: in flight; False: failed (blocked, network error)
    status: int | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.body.get("events") or [])


@dataclass
class Beacon:
    """Every request a context's pages send to the engine's /v1/ endpoints, in order."""

    sent: list[Sent] = field(default_factory=list)
    pages: dict[Page, str] = field(default_factory=dict)

    def watch(self, page: Page, name: str = "") -> Page:
        self.pages[page] = name or f"tab{len(self.pages)}"
        by_req: dict[Request, Sent] = {}

        def on_request(req: Request) -> None:
            path = req.url.split("?", 1)[0]
            if "/v1/" not in path:
                return
            assert req.method == "POST", f"unexpected {req.method} {req.url}"
            s = Sent(path.rsplit("/", 1)[-1], req.resource_type, json.loads(req.post_data or "{}"),
                     self.pages[page])
            by_req[req] = s
            self.sent.append(s)

        def on_finished(req: Request) -> None:
            if req in by_req:
                resp = req.response()
                s = by_req[req]
                s.status = resp.status if resp else None
                # delivered: /v1/events answered below 500; /v1/decide answered 200 (else the
                # beacon sends the decide call's events to /v1/events)
                s.ok = s.status is not None and (s.status == 200 if s.endpoint == "decide"
                                                 else s.status < 500)

        def on_failed(req: Request) -> None:
            if req in by_req:
                by_req[req].ok = False

        page.on("request", on_request)
        page.on("requestfinished", on_finished)
        page.on("requestfailed", on_failed)
        return page

    def delivered(self) -> list[dict[str, Any]]:
        """Events in requests that the engine took."""
        return [e for s in self.sent if s.ok for e in s.events]

    def settled(self, page: Page, *types: str) -> bool:
        """Nothing in flight, the queue empty, and events of these types delivered."""
        got = {e["type"] for e in self.delivered()}
        return (all(s.ok is not None for s in self.sent) and queue_len(page) == 0
                and all(t in got for t in types))

    def wait(self, cond: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.pages:
                if not p.is_closed():
                    p.wait_for_timeout(50)  # lets Playwright dispatch its events
                    break
            got = cond()
            if got:
                return got
        raise AssertionError(f"timed out waiting for {what or cond}; sent: {self.summary()}")

    def summary(self) -> list[tuple[str, str, str | None, list[str]]]:
        return [(s.page, s.endpoint, str(s.ok), [e["type"] for e in s.events]) for s in self.sent]


@pytest.fixture
def beacon() -> Beacon:
    return Beacon()


def read_events(stack: Stack, visitor_id: str | None = None) -> list[dict[str, Any]]:
    """Every event on the stack's events topic (optionally one visitor's), in offset order."""

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap,
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            topic = stack.settings.events_topic
            parts = [TopicPartition(topic, p) for p in range(stack.settings.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            out: list[dict[str, Any]] = []
            async def behind() -> bool:
                return any([await consumer.position(tp) < end[tp] for tp in parts])

            while await behind():
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        out.extend(decode_events(m.value))
            return out
        finally:
            await consumer.stop()

    # Playwright's sync API keeps an event loop in this thread: read in another one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        events = pool.submit(asyncio.run, run()).result(30)
    return [e for e in events if visitor_id is None or e.get("visitor_id") == visitor_id]


def wait_events(stack: Stack, visitor_id: str, cond: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 20.0) -> list[dict[str, Any]]:
    """Poll the topic until `cond(this visitor's events)` holds."""
    deadline = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = read_events(stack, visitor_id)
        if cond(got):
            return got
        time.sleep(0.3)
    raise AssertionError(f"events of {visitor_id} on the topic: {[e['type'] for e in got]}")


def visitor_id(page: Page) -> str:
    vid = page.evaluate("localStorage.getItem('kairos_vid')")
    assert vid, "the beacon stored no visitor id"
    return vid


def queue_len(page: Page, site: str = "demo") -> int:
    """Events waiting in the site's queues (one per tab: kairos_q_<site>_<tab>)."""
    return page.evaluate(
        """(p) => Object.keys(localStorage).filter((k) => k.startsWith(p))
                  .reduce((n, k) => n + JSON.parse(localStorage.getItem(k)).length, 0)""",
        f"kairos_q_{site}_",
    )
