"""Hostile input, the heavy runs (issue 16): what each bound costs and holds under abuse.

    python bench/hostile.py [--sse 2000] [--sse-spread 0] [--rate 50] [--seconds 15] [--ids 100000]
                            [--body-mb 100]

Starts Valkey, Apache Kafka, the API (1 process, `sse_max_listeners` at its default) and a stream
worker, with the shipped config plus one campaign whose targeting is the regex `/(a|a)*$`, then:

1. ingest: `/v1/events` latency at `--rate` requests/s (20 events each, open loop, measured from
   the scheduled send time) alone, then while `--sse` clients try to open `/v1/stats/stream` at
   once (in a separate process): how many were admitted and refused (503), and the p99 of both
   phases (target: p99 < 50 ms with the storm, the cap holding);
2. bodies: `--body-mb` MB chunked bodies to `/v1/catalog/items`, `/v1/events`, `/v1/decide`: the
   answer, the time to it and the API's peak RSS growth (target: 413, < 10 MB);
3. regex: `/v1/decide` p50/p99 with a 4 KiB adversarial URL against the regex campaign vs a
   plain URL (RE2), and what Python's backtracking `re` takes on a 23-character one;
4. amplifiers: the ops the stream's reco hook emits for the largest event the spec accepts
   now, and for the largest it accepted before (200 lines x 32 categories x 128 levels);
5. cardinality: 10,000 distinct channels in about a second -> the dashboard's first snapshot
   size (target: < 256 KB);
6. ids: `--ids` random item ids through the stream, then every key without a TTL, by family
   (per-item tables are the stream's to bound; printed here so a change is seen).

Prints the machine's load beside the figures (a busy machine disturbs them). The last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _stack import (  # noqa: E402
    ROOT,
    BenchStack,
    busy_note,
    json_line,
    loadavg,
    mib,
    rss_bytes,
    run_main,
    say,
    summary_ms,
)

MB = 1 << 20
REGEX_CAMPAIGN = """\
id: bench_regex
status: active
zones: [regex_zone]
targeting:
  url: {regex: "/(a|a)*$", "on": path}
variants:
  - id: a
    template: {title: "matched"}
"""


def now_ms() -> int:
    return int(time.time() * 1000)


# -- 1. ingest under an SSE storm --------------------------------------------------------------
async def _ingest(base: str, rate: float, seconds: float) -> list[float]:
    import httpx

    lat: list[float] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:
        start = time.perf_counter()
        n = int(rate * seconds)
        tasks = []

        async def one(k: int, at: float) -> None:
            vid = f"b-{k % 500}"
            batch = [{"event_id": uuid.uuid4().hex, "type": "page_view", "visitor_id": vid,
                      "ts": now_ms()} for _ in range(20)]
            r = await client.post("/v1/events", json=batch)
            if r.status_code == 200:
                lat.append(time.perf_counter() - at)

        for k in range(n):
            at = start + k / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k, at)))
        await asyncio.gather(*tasks, return_exceptions=True)
    return lat


async def _storm(base: str, n: int, hold_s: float, spread_s: float = 0.0) -> dict[str, int]:
    """n clients open /v1/stats/stream (at once, or spread evenly over spread_s) and hold what
    they got for hold_s. Raw sockets, so that the storm costs this process little CPU (on a
    2-core machine a heavy client would slow the API by competing for the cores)."""
    from urllib.parse import urlsplit

    u = urlsplit(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    request = (f"GET /v1/stats/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    got: Counter[str] = Counter()

    async def one(k: int) -> None:
        if spread_s:
            await asyncio.sleep(spread_s * k / n)
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status = (await asyncio.wait_for(reader.readline(), 30)).split(b" ")[1].decode()
            got[status] += 1
            if status == "200":
                end = time.monotonic() + hold_s
                while time.monotonic() < end and await reader.read(65536):
                    pass
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            got[type(exc).__name__] += 1
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(one(k) for k in range(n)))
    return dict(got)


def ingest_with_storm(st: BenchStack, rate: float, seconds: float, sse: int,
                      spread_s: float = 0.0) -> dict[str, Any]:
    base = st.base_url
    say(f"ingest alone: {rate:.0f} req/s x 20 events for {seconds:.0f}s…")
    alone = asyncio.run(_ingest(base, rate, seconds))
    how = f"over {spread_s:.0f}s" if spread_s else "at once"
    say(f"ingest while {sse} SSE clients try to connect {how}…")
    storm = subprocess.Popen([sys.executable, __file__, "--storm", base, "--sse", str(sse),
                              "--seconds", str(seconds), "--sse-spread", str(spread_s)],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the storm is connecting
    rss0 = rss_bytes(st.pid("api"))
    during = asyncio.run(_ingest(base, rate, seconds))
    rss1 = rss_bytes(st.pid("api"))
    out, _ = storm.communicate(timeout=seconds + 60)
    counts = json.loads(out.strip().splitlines()[-1])
    return {"alone": summary_ms(alone), "with_storm": summary_ms(during), "sse_attempts": sse,
            "sse_spread_s": spread_s,
            "sse_answers": counts, "api_rss_mib_during_storm": mib(rss1), "api_rss_mib_before": mib(rss0),
            "cap": st.settings.sse_max_listeners}


# -- 2. huge bodies -----------------------------------------------------------------------------
def huge_bodies(st: BenchStack, total_mb: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    pid = st.pid("api")
    for route in ("/v1/catalog/items", "/v1/events", "/v1/decide"):
        before = rss_bytes(pid)
        peak = [before]
        done = threading.Event()

        def sample(done: threading.Event = done, peak: list[int] = peak) -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(pid))
                time.sleep(0.005)

        def chunks() -> Any:
            block = b" " * (256 * 1024)
            yield b"[" + block[1:]
            for _ in range(total_mb * 4 - 1):
                yield block

        t = threading.Thread(target=sample)
        t.start()
        t0 = time.perf_counter()
        try:
            r = httpx.post(st.base_url + route, content=chunks(), timeout=120,
                           headers={"content-type": "application/json"})
            status: Any = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        took = time.perf_counter() - t0
        done.set()
        t.join()
        out[route] = {"status": status, "seconds": round(took, 2),
                      "rss_growth_mib": mib(peak[0] - before)}
        say(f"{total_mb} MB chunked to {route}: {status} in {took:.2f}s, "
            f"RSS +{mib(peak[0] - before)} MiB")
    return out


# -- 3. regexes -----------------------------------------------------------------------------------
def regex_decide(st: BenchStack, n: int = 200) -> dict[str, Any]:
    import httpx

    def run(url: str) -> list[float]:
        lat = []
        with httpx.Client(base_url=st.base_url, timeout=30) as client:
            for _ in range(n):
                t0 = time.perf_counter()
                r = client.post("/v1/decide", json={"visitor_id": uuid.uuid4().hex,
                                                    "context": {"zones": ["regex_zone"], "url": url}})
                assert r.status_code == 200, r.text
                lat.append(time.perf_counter() - t0)
        return lat

    adversarial = "https://shop.example/" + "a" * 4000 + "!"
    plain = "https://shop.example/p/1"
    res = {"adversarial_4k": summary_ms(run(adversarial)), "plain": summary_ms(run(plain))}
    # what a backtracking engine does with the same pattern, on a 23-character input
    t0 = time.perf_counter()
    re.fullmatch(r"/(a|a)*", "/" + "a" * 22 + "!")
    res["python_re_23_chars_s"] = round(time.perf_counter() - t0, 2)
    say(f"decide, adversarial 4 KiB URL: p99 {res['adversarial_4k']['p99_ms']} ms "
        f"(plain {res['plain']['p99_ms']} ms); Python re on 23 chars: {res['python_re_23_chars_s']} s")
    return res


# -- 4. amplifiers (pure: the reco hook's ops for the largest event) ------------------------------
def amplifiers() -> dict[str, Any]:
    from engine.logic import events as spec
    from models.affinity import Profile
    from streams.hooks.reco import reco_ops

    def largest(lines: int, cats: int, depth: int) -> dict[str, Any]:
        path = "/".join(f"l{i}" for i in range(depth))
        return {"event_id": "e", "type": "purchase", "visitor_id": "v", "ts": now_ms(),
                "items": [{"id": f"i{n}", "categories": [f"{path}/{c}" if cats > 1 else path
                                                         for c in range(cats)]} for n in range(lines)]}

    out = {}
    for name, ev in (("now", largest(spec.MAX_LINES, spec.MAX_CATEGORIES, spec.MAX_PATH_DEPTH - 1)),
                     ("before", largest(200, 32, 127))):
        t0 = time.perf_counter()
        ops = reco_ops(ev, Profile())
        out[name] = {"ops": len(ops), "plan_ms": round((time.perf_counter() - t0) * 1000, 1)}
    say(f"reco ops of the largest event: now {out['now']['ops']}, before {out['before']['ops']}")
    return out


# -- 5. cardinality ----------------------------------------------------------------------------
def channels_snapshot(st: BenchStack, n: int = 10_000) -> dict[str, Any]:
    import httpx

    tag = uuid.uuid4().hex[:6]
    t0 = time.perf_counter()
    with httpx.Client(base_url=st.base_url, timeout=30) as client:
        for i in range(0, n, 500):
            batch = [{"event_id": f"{tag}-{k}", "type": "page_view", "visitor_id": f"c-{k}",
                      "channel": f"ch{tag}{k}", "ts": now_ms()} for k in range(i, min(n, i + 500))]
            client.post("/v1/events", json=batch)
    sent_s = time.perf_counter() - t0
    time.sleep(6)  # applied by the stream, re-read by the API's window
    with httpx.stream("GET", st.base_url + "/v1/stats/stream", timeout=30) as r:
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            if b"event: snapshot" in buf and b"\n\n" in buf[buf.index(b"event: snapshot"):]:
                break
    start = buf.index(b"event: snapshot")
    frame = buf[start:buf.index(b"\n\n", start)]
    size = len(frame)
    say(f"{n} channels sent in {sent_s:.2f}s: first dashboard snapshot {size / 1024:.1f} KB")
    return {"channels": n, "sent_seconds": round(sent_s, 2), "snapshot_bytes": size}


# -- 6. random item ids and keys without a TTL ----------------------------------------------------
def random_ids(st: BenchStack, n: int) -> dict[str, Any]:
    import httpx

    from engine.store import keys

    r = st.redis_client()
    say(f"{n} random item ids through the stream…")
    with httpx.Client(base_url=st.base_url, timeout=30) as client:
        for i in range(0, n, 500):
            batch = [{"event_id": uuid.uuid4().hex, "type": "item_view",
                      "visitor_id": f"ids-{k % 2000}", "ts": now_ms(),
                      "item": {"id": uuid.uuid4().hex, "categories": ["bench/ids"]}}
                     for k in range(i, min(n, i + 500))]
            client.post("/v1/events", json=batch)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lag = sum(int(w.get("lag", 0)) for w in st.worker_reports().values())
        if lag == 0:
            break
        time.sleep(1)
    no_ttl: Counter[str] = Counter()
    total: Counter[str] = Counter()
    cursor = 0
    while True:
        cursor, batch = r.scan(cursor, count=5000)
        pipe = r.pipeline(transaction=False)
        for k in batch:
            pipe.pttl(k)
        for k, ttl in zip(batch, pipe.execute(), strict=True):
            fam = keys.family(k)
            total[fam] += 1
            if ttl == -1:
                no_ttl[fam] += 1
        if cursor == 0:
            break
    say(f"keys without a TTL after {n} random ids: {dict(no_ttl)} (of {sum(total.values())})")
    return {"ids": n, "keys_total": dict(total), "keys_without_ttl": dict(no_ttl),
            "redis_used_mib": mib(int(r.info("memory")["used_memory"]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sse", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50.0, help="ingest requests/s (20 events each)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--ids", type=int, default=100_000)
    ap.add_argument("--body-mb", type=int, default=100)
    ap.add_argument("--sse-spread", type=float, default=0.0,
                    help="spread the SSE attempts over this many seconds (0: all at once)")
    ap.add_argument("--storm", metavar="URL", help=argparse.SUPPRESS)  # the SSE client process
    args = ap.parse_args()
    if args.storm:
        print(json.dumps(asyncio.run(_storm(args.storm, args.sse, args.seconds + 2,
                                            args.sse_spread))), flush=True)
        return 0

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    if note := busy_note():
        say(note)
    load_before = loadavg()
    figures: dict[str, Any] = {"bench": "hostile", "load_before": load_before}
    with BenchStack("hostile") as st:
        st.start_redis(appendonly=False)
        st.start_kafka()
        cdir = st.dir / "config"
        subprocess.run(["cp", "-r", str(ROOT / "config"), str(cdir)], check=True)
        (cdir / "campaigns" / "bench_regex.yaml").write_text(REGEX_CAMPAIGN)
        st.configure(config_dir=cdir)
        st.ensure_topics()
        st.start_api()
        st.start_worker()
        time.sleep(3)
        figures["amplifiers"] = amplifiers()
        figures["ingest"] = ingest_with_storm(st, args.rate, args.seconds, args.sse, args.sse_spread)
        i = figures["ingest"]
        say(f"/v1/events p99 alone {i['alone']['p99_ms']} ms, with {args.sse} SSE attempts "
            f"{i['with_storm']['p99_ms']} ms; SSE answers {i['sse_answers']} (cap {i['cap']})")
        figures["bodies"] = huge_bodies(st, args.body_mb)
        figures["regex"] = regex_decide(st)
        figures["cardinality"] = channels_snapshot(st)
        figures["ids"] = random_ids(st, args.ids)
        st.check_alive()
    figures["load_after"] = loadavg()
    print(f"\nload average: {load_before:.2f} before, {figures['load_after']:.2f} after "
          "(2 cores shared: figures on a busy machine are upper bounds)")
    json_line(figures)
    return 0


if __name__ == "__main__":
    run_main(main)
