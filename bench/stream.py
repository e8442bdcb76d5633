"""Stream throughput: events/s ONE worker process applies to Redis.

    python bench/stream.py [--events 200000] [--visitors 20000] [--per-record 1,20]
                           [--commit-ahead on|off|on,off]

Starts Valkey and Apache Kafka on 127.0.0.1, pre-loads a fresh `events` topic (4 partitions)
with N events exactly as the API writes them (validated `engine.logic.events.Event`s, one msgpack
array per visitor per record, keyed by visitor, as `engine.eventlog.group_by_visitor` does),
then starts ONE `kairos worker` and polls what it reports about itself in Redis (`kx:workers:<group>`)
until every event is applied. Then it checks that the profiles count every event.

Scenarios (`--per-record`): 1 = one event per record (what mixed-visitor requests produce), 20 =
20 events of one visitor per record (beacon / app flushes). The events of many visitors are
interleaved, so every batch the worker takes touches many profiles. `--commit-ahead on,off` runs
each scenario with the worker planning a batch's next part while Redis runs the commit
(`commit_ahead`, the default) and without, in one run (alternating order), for a ratio measured
on the same machine minutes.

Figures: steady rate (the worker's applied_total between its first report with work done and
its last report before the end, so start-up and the tail are excluded), the wall time from
worker start to all applied, CPU cores used by the worker and by Valkey, RSS of the worker,
Valkey and the broker. Latency under load is measured by bench/freshness.py, not here.
Target: >= 10,000 events/s. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, busy_note, json_line, loadavg, mib, run_main, say  # noqa: E402
from ingest import _event  # noqa: E402

TARGET = 10_000


def build_records(n: int, visitors: int, per_record: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) records holding n events, as the API would produce them."""
    import msgspec

    from engine.logic.events import Event, check_event, encode_events

    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    records: list[tuple[bytes, bytes]] = []
    made = 0
    tag = f"s{seed}"
    while made < n:
        vid = f"{tag}-{rng.randrange(visitors)}"
        k = min(per_record, n - made)
        evs = []
        for _ in range(k):
            ev = msgspec.convert(_event(rng, vid, now_ms), Event)
            assert check_event(ev, now_ms) is None
            evs.append(ev)
        records.append((vid.encode(), encode_events(evs)))
        made += k
    return records


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                         max_batch_size=512 * 1024, enable_idempotence=False)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


def run_scenario(st: BenchStack, n: int, visitors: int, per_record: int, seed: int,
                 timeout: float, ahead: bool = True) -> dict[str, Any]:
    from engine.store import keys

    s = st.configure(commit_ahead=ahead)
    st.ensure_topics()
    say(f"per-record {per_record}: building {n} events for {visitors} visitors…")
    records = build_records(n, visitors, per_record, seed)
    t = time.monotonic()
    asyncio.run(produce(s.kafka_bootstrap, s.events_topic, records))
    say(f"produced {len(records)} records ({n} events) in {time.monotonic() - t:.1f}s")
    r = st.redis_client()
    r.delete(keys.workers(s.group_id))
    r.close()
    name = f"worker-{per_record}-{'ahead' if ahead else 'serial'}"
    t_start = time.monotonic()
    st.start_worker(name)
    snaps: list[dict[str, Any]] = []  # distinct worker reports, in order
    cpu_marks: list[tuple[float, float, float]] = []  # (wall, worker cpu, redis cpu)
    deadline = t_start + timeout
    done_at = None
    while time.monotonic() < deadline:
        st.check_alive(name)
        rep = next(iter(st.worker_reports().values()), None)
        if rep and (not snaps or rep["ts"] != snaps[-1]["ts"]):
            snaps.append(rep)
            cpu_marks.append((rep["ts"], st.cpu(name), st.cpu("redis")))
            if rep["applied_total"] + rep["duplicates_total"] >= n:
                done_at = time.monotonic()
                break
        time.sleep(0.1)
    if done_at is None:
        raise RuntimeError(f"the worker did not apply {n} events within {timeout:.0f}s; "
                           f"last report {snaps[-1] if snaps else None}\n{st.log_tail(name)}")
    rss_worker = st.rss(name)
    st.stop_proc(name)
    busy = [x for x in snaps if x["applied_total"] > 0]
    first = busy[0]
    # the last report before the end still had a backlog: a rate without the idle tail
    body = [x for x in busy if x["applied_total"] < n]
    last = body[-1] if len(body) >= 2 else busy[-1]
    if last is first:
        last = busy[-1]
    secs = max(1e-6, last["ts"] - first["ts"])
    steady = (last["applied_total"] - first["applied_total"]) / secs
    c0 = next(c for c in cpu_marks if c[0] == first["ts"])
    c1 = next(c for c in cpu_marks if c[0] == last["ts"])
    rates = [x["rate"] for x in busy]
    profiles, counted = st.count_profiles(f"s{seed}")
    return {
        "per_record": per_record,
        "commit_ahead": ahead,
        "events": n,
        "records": len(records),
        "visitors": profiles,
        "events_per_s": round(steady, 1),
        "wall_s_from_worker_start": round(done_at - t_start, 2),
        "events_per_s_incl_startup": round(n / (done_at - t_start), 1),
        "window_s": round(secs, 2),
        "cpu_cores_worker": round((c1[1] - c0[1]) / secs, 2),
        "cpu_cores_redis": round((c1[2] - c0[2]) / secs, 2),
        "worker_cpu_us_per_event": round((c1[1] - c0[1]) * 1e6 / max(1, last["applied_total"] - first["applied_total"]), 1),
        "rss_worker_mib": mib(rss_worker),
        "rss_redis_mib": mib(st.rss("redis")),
        "rss_kafka_mib": mib(st.rss("kafka")),
        "applied": snaps[-1]["applied_total"],
        "duplicates": snaps[-1]["duplicates_total"],
        "counted_in_profiles": counted,
        "peak_10s_rate": max(rates) if rates else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--per-record", default="1,20", help="events per Kafka record, comma-separated scenarios")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario at most")
    ap.add_argument("--commit-ahead", default="on",
                    help="on, off or on,off: plan a batch's next part while Redis runs its commit "
                         "(settings.commit_ahead); both = an A/B in one run, alternating order")
    a = ap.parse_args()
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    results = []
    with BenchStack("stream") as st:
        st.start_redis()
        st.start_kafka(partitions=a.partitions)
        modes = [m.strip() == "on" for m in a.commit_ahead.split(",")]
        k = 0
        for i, pr in enumerate(int(x) for x in a.per_record.split(",")):
            for ahead in (modes if i % 2 == 0 else modes[::-1]):
                k += 1
                res = run_scenario(st, a.events, a.visitors, pr, 10 + k, a.timeout, ahead)
                res["load_after"] = loadavg()
                results.append(res)
                say(f"per-record {pr}, commit ahead {'on' if ahead else 'off'}: "
                    f"{res['events_per_s']:.0f} events/s steady; worker {res['cpu_cores_worker']} "
                    f"cores, Valkey {res['cpu_cores_redis']} cores; counted "
                    f"{res['counted_in_profiles']}/{a.events} (load {res['load_after']:.1f})")

    print()
    print(f"stream: one worker applies {a.events} pre-loaded events ({a.visitors} visitors, "
          f"{a.partitions} partitions); 'worker'/'valkey' = CPU cores used, µs CPU/ev = worker CPU "
          f"per event (independent of how busy the machine is)")
    print(f"{'per-record':>10} {'ahead':>5} {'events/s':>9} {'wall s':>7} {'worker':>7} {'valkey':>7} "
          f"{'µs CPU/ev':>9} {'RSS wkr':>8} {'RSS valkey':>10} {'counted':>9} {'load':>5}")
    for r in results:
        print(f"{r['per_record']:>10} {'on' if r['commit_ahead'] else 'off':>5} "
              f"{r['events_per_s']:>9.0f} {r['wall_s_from_worker_start']:>7.1f} "
              f"{r['cpu_cores_worker']:>6.2f}c {r['cpu_cores_redis']:>6.2f}c {r['worker_cpu_us_per_event']:>9.0f} "
              f"{r['rss_worker_mib']:>6.1f}Mi "
              f"{r['rss_redis_mib']:>8.1f}Mi {r['counted_in_profiles']:>9} {r['load_after']:>5.1f}")
    for r in results:
        met = "met" if r["events_per_s"] >= TARGET else "MISSED"
        ok = "equal" if r["counted_in_profiles"] == r["events"] else "DIFFERENT"
        print(f"target >= {TARGET} events/s, per-record {r['per_record']} (ahead "
              f"{'on' if r['commit_ahead'] else 'off'}): {met} ({r['events_per_s']:.0f}); "
              f"events counted in profiles vs produced: {ok}")
    if note:
        print(f"note: {note}")
    json_line({"bench": "stream", "target_events_per_s": TARGET, "loadavg_before": load_before,
               "scenarios": results})
    return 0


if __name__ == "__main__":
    run_main(main)
