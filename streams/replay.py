"""`kairos replay FILE`: feed a log of events into the API (or straight into the topic).

Reads JSON lines in the event spec, or the Taobao / REES46 CSVs (streams.sources), in time
order. By default the timestamps are shifted so the log ends now (affinities then look as
fresh as the log was); `--keep-time` keeps them. Shows a progress bar with events/s, retries
503s as told by Retry-After, and prints a summary with the rejected reasons.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from typing import Any

import httpx
import orjson
from tqdm import tqdm

from engine.eventlog import EventLog, LogUnavailable, group_by_visitor
from engine.logic import events as spec
from engine.settings import Settings
from streams.sources import load_events


def shift_to_now(events: list[dict[str, Any]], now_ms: int) -> None:
    """Shift every ts by one amount so the last event happens at `now_ms`."""
    if not events:
        return
    delta = now_ms - max(e["ts"] for e in events)
    for e in events:
        e["ts"] += delta


def batches(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


class _Pacer:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    async def wait(self, n: int) -> None:
        self.sent += n
        if self.rate > 0:
            ahead = self.sent / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _to_api(url: str, chunks: list[list[dict[str, Any]]], rate: float, bar: tqdm,
                  totals: collections.Counter[str], reasons: collections.Counter[str],
                  key: str) -> None:
    pacer = _Pacer(rate)
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=8)

    async def sender(client: httpx.AsyncClient) -> None:
        while (chunk := await queue.get()) is not None:
            body = orjson.dumps({"events": chunk})
            for attempt in range(30):
                try:
                    r = await client.post("/v1/events", content=body,
                                          headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    totals["network errors"] += 1
                    await asyncio.sleep(min(0.2 * 2**attempt, 5))
                    if attempt == 29:
                        raise SystemExit(f"kairos replay: cannot reach {url}: {exc}") from None
                    continue
                if r.status_code in (503, 429):
                    totals[f"retried ({r.status_code})"] += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                if r.status_code in (401, 403):
                    raise SystemExit(f"kairos replay: the API refused the key: "
                                     f"{r.json().get('error', r.text)}")
                data = r.json()
                totals["accepted"] += int(data.get("accepted", 0))
                for rej in data.get("rejected", []):
                    totals["rejected"] += 1
                    reasons[f"{rej['field']} {rej['reason']}"] += 1
                break
            bar.update(len(chunk))

    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        workers = [asyncio.create_task(sender(client)) for _ in range(4)]
        for chunk in chunks:
            await pacer.wait(len(chunk))
            await queue.put(chunk)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)


async def _to_topic(settings: Settings, chunks: list[list[dict[str, Any]]], rate: float, bar: tqdm,
                    totals: collections.Counter[str], reasons: collections.Counter[str]) -> None:
    if not settings.kafka_bootstrap:
        raise SystemExit("kairos replay --to topic: set KAIROS_KAFKA_BOOTSTRAP")
    log = EventLog(settings.kafka_bootstrap, settings.events_topic, linger_ms=5, timeout_s=30)
    pacer = _Pacer(rate)
    try:
        for chunk in chunks:
            await pacer.wait(len(chunk))
            good, bad = spec.validate(chunk, int(time.time() * 1000))
            for r in bad:
                totals["rejected"] += 1
                reasons[f"{r.field} {r.reason}"] += 1
            if good:
                try:
                    await log.append(group_by_visitor(good))
                except LogUnavailable as exc:
                    raise SystemExit(f"kairos replay: {exc}") from None
                totals["accepted"] += len(good)
            bar.update(len(chunk))
    finally:
        await log.close()


def replay(settings: Settings, args: argparse.Namespace) -> int:
    fmt = None if args.format == "auto" else args.format
    print(f"kairos replay: reading {args.file}…", file=sys.stderr, flush=True)
    try:
        events = load_events(args.file, fmt)
    except (OSError, ValueError) as exc:
        print(f"kairos replay: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        events = events[: args.limit]
    if not args.keep_time:
        shift_to_now(events, int(time.time() * 1000))
    if args.batch < 1 or args.batch > spec.MAX_EVENTS_PER_REQUEST:
        print(f"kairos replay: --batch must be 1..{spec.MAX_EVENTS_PER_REQUEST}", file=sys.stderr)
        return 2
    chunks = batches(events, args.batch)
    totals: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    url = args.url or f"http://{settings.host}:{settings.port}"
    start = time.monotonic()
    with tqdm(total=len(events), unit="ev", unit_scale=True, desc="replay", file=sys.stderr) as bar:
        if args.to == "api":
            key = args.key or settings.api_key
            if not key:
                raise SystemExit("kairos replay --to api needs a secret key with events:write: "
                                 "--key ks_… or KAIROS_API_KEY (make one with `kairos keys "
                                 "create secret --scope events:write`)")
            asyncio.run(_to_api(url, chunks, args.rate, bar, totals, reasons, key))
        else:
            asyncio.run(_to_topic(settings, chunks, args.rate, bar, totals, reasons))
    elapsed = time.monotonic() - start
    print(f"{len(events)} events in {elapsed:.1f}s ({len(events) / max(elapsed, 1e-9):,.0f} events/s): "
          + ", ".join(f"{v} {k}" for k, v in totals.items()))
    for reason, n in reasons.most_common(5):
        print(f"  rejected {n}× {reason}")
    return 0 if totals["accepted"] or not events else 1
