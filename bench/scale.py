"""Scale-out: events/s with 1, 2 and 4 workers on one topic, and the time from a worker's
SIGKILL to its partitions being applied again.

    python bench/scale.py [--workers 1,2,4] [--events 60000] [--partitions 12] [--quick]
                          [--redis cluster]

Starts Valkey (`--redis cluster`: a Redis Cluster of three Valkey primaries, as the tests'
fixture makes it) and Apache Kafka on 127.0.0.1 (no API, no control plane: the workers read the
topic and write Redis only).

**Throughput.** For each worker count k: a fresh topic of `--partitions` partitions and a
fresh consumer group; k `kairos worker` processes start and the bench waits until the group
is stable (k members, every partition assigned: the broker's own description of the group)
and every worker has reported to Redis. Then it produces N events exactly as the API writes
them (bench/stream.py's records: msgpack arrays of `--per-record` events of one visitor, keyed
by visitor) and follows the workers' own reports in Redis (`kx:workers:<group>`). The rate is
the sum of the workers' `applied_total`, interpolated on their report times, from just after
the last record is produced to 90 % of N (the group has formed, every partition has a backlog;
the tail, when the worker with the lightest partitions is done first, is left out). Also: the
time from the first worker's start to a stable group, the wall time from the produce to all
applied, CPU cores and µs CPU per event of all workers together and of Valkey, and the profiles
counting every event.

**A worker killed.** `--kill-workers` workers (2) on a fresh topic and group, fed a steady
`--kill-rate` events/s (one-event records, new visitors); the bench reads which partitions
the victim holds (the group's description), SIGKILLs it, and polls the partitions' fences in
Redis (engine/store/fences.py: the owner epoch `e<p>`, raised by the worker that claims the
partition; `a<p>`, the offset of the last record applied in full) every 50 ms: *taken over* =
kill → epoch raised; *applied again* = kill → `a<p>` moves (first / last of the victim's
partitions). The survivors' own partitions pause too while the group rebalances (their
longest gap between two applied batches is printed). Afterwards every produced event must be
counted once in the profiles. The session timeout (`session_timeout_ms`, the default 10 s
unless `--session-timeout-ms`) is the bulk of it: the broker waits that long for the dead
member before it rebalances.

This machine has 2 cores, shared with other engineers: with more worker processes than free
cores, the rates show what coordination costs (a rebalance per joining member, more and smaller
batches and Redis round trips per event, k processes' fixed overhead) and how much of the
contended CPU k processes win from the other work, rather than more capacity; the µs CPU per
event column, which the load moves much less, is the measure of coordination overhead here.
Adding workers pays on machines with cores to give them (and with Redis shards: README,
"Running at scale").
Prints `uptime`'s load averages before each run, a table, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, cpu_seconds, json_line, loadavg, mib, run_main, say  # noqa: E402
from stream import build_records, produce  # noqa: E402

REDIS = {"single": "one Valkey", "cluster": "a Redis Cluster of 3 Valkey primaries"}


def uptime() -> str:
    """The load averages as `uptime` prints them (1, 5, 15 minutes)."""
    with contextlib.suppress(OSError):
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
        return f"load average: {one}, {five}, {fifteen}"
    return "load average: unknown"


def print_load(what: str) -> float:
    print(f"[{time.strftime('%H:%M:%S')}] before {what}: {uptime()} ({os.cpu_count()} cores)",
          flush=True)
    return loadavg()


# -- the stack, on one Valkey or on a Redis Cluster -------------------------------------------
class ScaleStack(BenchStack):
    """BenchStack with `--redis cluster`: three Valkey primaries (engine.embedded's
    EmbeddedRedisCluster, as the tests use), the workers given `redis+cluster://…`."""

    cluster = False

    def start_redis_cluster(self, primaries: int = 3) -> str:
        from engine.embedded import EmbeddedRedisCluster

        say(f"starting a Redis Cluster of {primaries} Valkey primaries…")
        self.redis = EmbeddedRedisCluster(self.dir / "redis-cluster", primaries,
                                          appendonly=True).start()
        self.cluster = True
        return str(self.redis.url)

    def redis_client(self) -> Any:
        from engine.store.client import new_sync_client

        return new_sync_client(self.redis.url)

    def redis_pids(self) -> list[int]:
        nodes = self.redis.nodes if self.cluster else [self.redis]
        return [n.proc.pid for n in nodes if n.proc is not None]


# -- the group as the broker describes it ---------------------------------------------------
async def _describe(bootstrap: str, group: str, topic: str) -> tuple[str, dict[str, list[int]]]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (resp,) = await admin.describe_consumer_groups([group])
        _err, _gid, state, _ptype, _proto, members = resp.groups[0][:6]
        out: dict[str, list[int]] = {}
        for m in members:
            client_id, raw = m[1], m[4]
            parts: list[int] = []
            if raw:
                a = ConsumerProtocolMemberAssignment.decode(raw)
                for t, ps in a.assignment:
                    if t == topic:
                        parts.extend(ps)
            out[client_id] = sorted(parts)
        return state, out
    finally:
        await admin.close()


def describe(st: BenchStack) -> tuple[str, dict[str, list[int]]]:
    """(group state, client id -> partitions of the events topic)."""
    s = st.settings
    try:
        return asyncio.run(_describe(s.kafka_bootstrap, s.group_id, s.events_topic))
    except Exception as exc:  # the coordinator may be busy with the group: ask again
        say(f"could not describe the group yet ({exc!r})")
        return "Unknown", {}


def client_id(proc: Any) -> str:
    """The consumer's client id of a worker process (streams/consumer.py, streams/app.py)."""
    return f"kairos-{socket.gethostname()}:{proc.pid}"


def wait_stable(st: BenchStack, names: list[str], partitions: int, timeout: float) -> float:
    """Until the group is stable with these workers holding every partition and each has
    reported to Redis; returns the seconds it took."""
    t0 = time.monotonic()
    want = {client_id(st.procs[n]) for n in names}
    while time.monotonic() - t0 < timeout:
        st.check_alive(*names)
        state, members = describe(st)
        held = sorted(p for ps in members.values() for p in ps)
        if (state == "Stable" and set(members) == want and held == list(range(partitions))
                and len(st.worker_reports()) >= len(names)):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"the group did not settle within {timeout:.0f}s: {describe(st)}\n"
                       + "\n".join(st.log_tail(n, 800) for n in names))


# -- throughput ------------------------------------------------------------------------------
_REBALANCE = re.compile(r"heartbeat|rebalanc|could not commit|revoked|session", re.I)


def log_size(st: BenchStack, name: str) -> int:
    path = st.dir / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def log_since(st: BenchStack, name: str, offset: int) -> str:
    path = st.dir / f"{name}.log"
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def rebalance_notes(log: str) -> int:
    """Lines of a worker's log (level warning) about heartbeats, rebalances or failed commits:
    a group that rebalanced after it was stable (a member too slow to heartbeat)."""
    return sum(1 for line in log.splitlines() if _REBALANCE.search(line))


def at(series: list[tuple[float, int]], t: float) -> float:
    """A worker's applied_total at wall time t, interpolated between its reports."""
    if not series or t <= series[0][0]:
        return float(series[0][1]) if series and t >= series[0][0] else 0.0
    i = bisect_right([x[0] for x in series], t)
    if i >= len(series):
        return float(series[-1][1])
    (t0, a0), (t1, a1) = series[i - 1], series[i]
    return a0 + (a1 - a0) * (t - t0) / max(1e-9, t1 - t0)


def run_throughput(st: ScaleStack, k: int, n: int, visitors: int, per_record: int, partitions: int,
                   seed: int, timeout: float, session_ms: int) -> dict[str, Any]:
    from engine.store import keys

    load = print_load(f"{k} worker(s)")
    s = st.configure(partitions=partitions, database_url=None, session_timeout_ms=session_ms)
    st.ensure_topics()
    records = build_records(n, visitors, per_record, seed)
    r = st.redis_client()
    r.delete(keys.workers(s.group_id))
    r.close()
    names = [f"w{k}-{i}" for i in range(k)]
    for name in names:
        st.start_worker(name)
    ready_s = wait_stable(st, names, partitions, timeout=120)
    log_from = {x: log_size(st, x) for x in names}  # what the workers log once the group is stable
    say(f"{k} worker(s): group stable after {ready_s:.1f}s; producing {n} events…")
    t_prod0 = time.time()
    asyncio.run(produce(s.kafka_bootstrap, s.events_topic, records))
    t_prod1 = time.time()
    series: dict[str, list[tuple[float, int]]] = {}
    dups: dict[str, int] = {}
    cpu_marks: list[tuple[float, float, float]] = []  # (wall, workers' cpu, valkey cpu)
    deadline = time.monotonic() + timeout
    done_at = None
    while time.monotonic() < deadline:
        st.check_alive(*names)
        for wid, rep in st.worker_reports().items():
            ser = series.setdefault(wid, [])
            if not ser or rep["ts"] > ser[-1][0]:
                ser.append((rep["ts"], rep["applied_total"]))
                dups[wid] = rep["duplicates_total"]
        # the workers and Valkey have no child processes: read their own /proc entries only
        cpu_marks.append((time.time(), sum(cpu_seconds(st.pid(x), descendants=False) for x in names),
                          sum(cpu_seconds(p, descendants=False) for p in st.redis_pids())))
        total = sum(ser[-1][1] for ser in series.values()) + sum(dups.values())
        if total >= n:
            done_at = time.time()
            break
        time.sleep(0.2)
    if done_at is None:
        raise RuntimeError(f"{k} worker(s) did not apply {n} events within {timeout:.0f}s\n"
                           + "\n".join(st.log_tail(x, 800) for x in names))
    rss = sum(st.rss(x) for x in names)
    notes = sum(rebalance_notes(log_since(st, x, log_from[x])) for x in names)
    for name in names:
        st.stop_proc(name)

    def applied(t: float) -> float:
        return sum(at(ser, t) for ser in series.values())

    t0 = t_prod1 + 0.5
    times = sorted({x[0] for ser in series.values() for x in ser if x[0] > t0})
    t1 = next((t for t in times if applied(t) >= 0.9 * n), times[-1] if times else done_at)
    secs = max(1e-6, t1 - t0)
    done = applied(t1) - applied(t0)
    c0 = min(cpu_marks, key=lambda c: abs(c[0] - t0))
    c1 = min(cpu_marks, key=lambda c: abs(c[0] - t1))
    cw = max(1e-6, c1[0] - c0[0])
    cw_events = max(1.0, applied(c1[0]) - applied(c0[0]))
    profiles, counted = st.count_profiles(f"s{seed}")
    return {
        "workers": k, "events": n, "records": len(records), "visitors": profiles,
        "loadavg_before": load,
        "group_stable_s": round(ready_s, 2),
        "events_per_s": round(done / secs, 1),
        "window_s": round(secs, 2),
        "wall_s_produce_to_all_applied": round(done_at - t_prod0, 2),
        "produce_s": round(t_prod1 - t_prod0, 2),
        "cpu_cores_workers": round((c1[1] - c0[1]) / cw, 2),
        "cpu_cores_redis": round((c1[2] - c0[2]) / cw, 2),
        "workers_cpu_us_per_event": round((c1[1] - c0[1]) * 1e6 / cw_events, 1),
        "rss_workers_mib": mib(rss),
        "duplicates": sum(dups.values()),
        "rebalance_log_lines": notes,
        "counted_in_profiles": counted,
    }


# -- a worker killed -------------------------------------------------------------------------
class Feed(threading.Thread):
    """Produces one-event records of new visitors at a steady rate until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float, prefix: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.prefix = bootstrap, topic, rate, prefix
        self.rng = random.Random(seed)
        self.sent = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the bench
            self.error = exc

    async def _run(self) -> None:
        import msgspec
        from aiokafka import AIOKafkaProducer
        from ingest import _event

        from engine.logic.events import Event, encode_events

        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                             enable_idempotence=True)
        await p.start()
        try:
            t0 = time.monotonic()
            pending: list[Any] = []
            while not self.halt.is_set():
                due = int((time.monotonic() - t0) * self.rate)
                now_ms = int(time.time() * 1000)
                while self.sent < due:
                    vid = f"{self.prefix}-{self.rng.randrange(50_000)}"
                    ev = msgspec.convert(_event(self.rng, vid, now_ms), Event)
                    pending.append(await p.send(self.topic, encode_events([ev]), key=vid.encode()))
                    self.sent += 1
                if len(pending) > 200:
                    await asyncio.gather(*pending)
                    pending.clear()
                await asyncio.sleep(0.01)
            await asyncio.gather(*pending)
        finally:
            await p.stop()


def read_fences(r: Any, group: str, partitions: int) -> dict[int, tuple[int, int]]:
    """partition -> (owner epoch, offset applied in full) as Redis has them (-1: none)."""
    from engine.store import keys

    pipe = r.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hmget(keys.fence(keys.home_shard(p), group), [f"e{p}", f"a{p}"])
    out = {}
    for p, (e, a) in enumerate(pipe.execute()):
        out[p] = (int(e) if e else -1, int(a) if a else -1)
    return out


def run_kill(st: ScaleStack, k: int, partitions: int, rate: float, warm_s: float, session_ms: int,
             seed: int) -> dict[str, Any]:
    load = print_load(f"the SIGKILL run ({k} workers)")
    s = st.configure(partitions=partitions, database_url=None, session_timeout_ms=session_ms)
    st.ensure_topics()
    names = [f"kill-{i}" for i in range(k)]
    for name in names:
        st.start_worker(name)
    ready_s = wait_stable(st, names, partitions, timeout=120)
    prefix = f"k{seed}"
    feed = Feed(s.kafka_bootstrap, s.events_topic, rate, prefix, seed)
    feed.start()
    r = st.redis_client()
    try:
        # warm up until every partition has applied something
        t_warm = time.monotonic()
        while True:
            st.check_alive(*names)
            f = read_fences(r, s.group_id, partitions)
            if (time.monotonic() - t_warm >= warm_s and all(a >= 0 for _, a in f.values())):
                break
            if time.monotonic() - t_warm > 120:
                raise RuntimeError(f"not every partition applied within 120s: {f}")
            time.sleep(0.2)
        state, members = describe(st)
        victim = names[0]
        proc = st.procs[victim]
        dead = members.get(client_id(proc), [])
        if state != "Stable" or not dead:
            raise RuntimeError(f"the group is not as expected before the kill: {state} {members}")
        before = read_fences(r, s.group_id, partitions)
        t_kill = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        say(f"SIGKILLed {victim} (pid {proc.pid}), which held partitions {dead}")
        proc.wait()
        st.procs.pop(victim, None)
        last_a = {p: a for p, (_, a) in before.items()}
        last_t = {p: t_kill for p in range(partitions)}
        gaps = {p: 0.0 for p in range(partitions)}
        taken: dict[int, float] = {}
        again: dict[int, float] = {}
        limit = t_kill + session_ms / 1000 * 3 + 60
        settled = None
        while time.monotonic() < limit:
            now = time.monotonic()
            for p, (e, a) in read_fences(r, s.group_id, partitions).items():
                if p in dead and p not in taken and e > before[p][0]:
                    taken[p] = now - t_kill
                if a != last_a[p]:
                    gaps[p] = max(gaps[p], now - last_t[p])
                    last_a[p], last_t[p] = a, now
                    if p in dead and p not in again:
                        again[p] = now - t_kill
            if settled is None and all(p in again for p in dead):
                settled = now
            if settled is not None and now - settled >= 3.0:
                break
            time.sleep(0.05)
        feed.halt.set()
        feed.join(30)
        if feed.error is not None:
            raise RuntimeError(f"the feed failed: {feed.error!r}")
        if settled is None:
            raise RuntimeError(f"the victim's partitions were not applied again within "
                               f"{limit - t_kill:.0f}s: taken {taken}, applied {again}\n"
                               + "\n".join(st.log_tail(x, 800) for x in names[1:]))
        # every event once: wait until the profiles count everything produced
        t_drain = time.monotonic()
        counted = 0
        while time.monotonic() - t_drain < 180:
            _, counted = st.count_profiles(prefix)
            if counted >= feed.sent:
                break
            time.sleep(2.0)
        time.sleep(1.0)
        _, counted = st.count_profiles(prefix)
    finally:
        r.close()
    reps = st.worker_reports()
    survivors = [x for x in names if x in st.procs]
    dups = sum(rep["duplicates_total"] for wid, rep in reps.items()
               if not wid.endswith(f":{proc.pid}"))
    for name in survivors:
        st.stop_proc(name)
    survivor_parts = [p for p in range(partitions) if p not in dead]
    return {
        "workers": k, "loadavg_before": load, "group_stable_s": round(ready_s, 2),
        "session_timeout_s": session_ms / 1000, "feed_events_per_s": rate,
        "victim_partitions": dead,
        "taken_over_s_max": round(max(taken.values()), 2) if len(taken) == len(dead) else None,
        "applied_again_s_first": round(min(again.values()), 2),
        "applied_again_s_all": round(max(again.values()), 2),
        "survivors_longest_pause_s": round(max((gaps[p] for p in survivor_parts), default=0.0), 2),
        "produced": feed.sent, "counted_in_profiles": counted,
        "duplicates_skipped": dups,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4", help="worker counts to measure, comma-separated")
    ap.add_argument("--events", type=int, default=60_000, help="events pre-loaded per run")
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--per-record", type=int, default=20, help="events per Kafka record")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--kill-workers", type=int, default=2, help="workers in the SIGKILL run (0: skip it)")
    ap.add_argument("--kill-rate", type=float, default=400.0, help="events/s fed during the SIGKILL run")
    ap.add_argument("--session-timeout-ms", type=int, default=None,
                    help="the workers' session_timeout_ms (default: the setting's default)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per throughput run at most")
    ap.add_argument("--redis", choices=["single", "cluster"], default="single",
                    help="one Valkey, or a Redis Cluster of three Valkey primaries")
    ap.add_argument("--quick", action="store_true", help="20,000 events per run, a shorter warm-up")
    a = ap.parse_args()
    from engine.settings import Settings

    session_ms = a.session_timeout_ms or Settings().session_timeout_ms
    n = 20_000 if a.quick else a.events
    counts = [int(x) for x in a.workers.split(",") if x]
    loads = [print_load("the run")]
    results: list[dict[str, Any]] = []
    kill: dict[str, Any] | None = None
    with ScaleStack("scale") as st:
        if a.redis == "cluster":
            st.start_redis_cluster()
        else:
            st.start_redis()
        st.start_kafka(partitions=a.partitions)
        for i, k in enumerate(counts):
            res = run_throughput(st, k, n, a.visitors, a.per_record, a.partitions, 40 + i,
                                 a.timeout, session_ms)
            results.append(res)
            say(f"{k} worker(s): {res['events_per_s']:.0f} events/s; workers {res['cpu_cores_workers']} "
                f"cores, Valkey {res['cpu_cores_redis']}; counted {res['counted_in_profiles']}/{n}")
        if a.kill_workers:
            kill = run_kill(st, a.kill_workers, a.partitions, a.kill_rate, 3.0 if a.quick else 8.0,
                            session_ms, 90)
        loads.append(loadavg())

    base = results[0]["events_per_s"] if results else 0.0
    print()
    print(f"scale: {n} pre-loaded events ({a.visitors} visitors, {a.per_record} per record) on "
          f"{a.partitions} partitions, one topic and group per row; {REDIS[a.redis]}; "
          f"{os.cpu_count()} cores, shared")
    print(f"{'workers':>7} {'events/s':>9} {'vs 1':>5} {'group s':>7} {'drain s':>7} {'workers':>8} "
          f"{'valkey':>7} {'µs CPU/ev':>9} {'RSS wkrs':>9} {'counted':>8} {'load':>5}")
    for r in results:
        ratio = r["events_per_s"] / base if base else 0.0
        r["ratio_vs_1"] = round(ratio, 2)
        print(f"{r['workers']:>7} {r['events_per_s']:>9.0f} {ratio:>5.2f} {r['group_stable_s']:>7.1f} "
              f"{r['wall_s_produce_to_all_applied']:>7.1f} {r['cpu_cores_workers']:>7.2f}c "
              f"{r['cpu_cores_redis']:>6.2f}c {r['workers_cpu_us_per_event']:>9.0f} "
              f"{r['rss_workers_mib']:>7.1f}Mi {r['counted_in_profiles']:>8} {r['loadavg_before']:>5.1f}")
    print("(events/s: all workers together, from the last record produced to 90 % applied; group s: "
          "first start to a stable group; drain s: produce start to all applied; µs CPU/ev: all "
          "workers' CPU per event)")
    for r in results:
        ok = "equal" if r["counted_in_profiles"] == r["events"] else "DIFFERENT"
        again = (f"; the group rebalanced during the run: {r['rebalance_log_lines']} log lines "
                 f"about heartbeats/rebalances/commits, {r['duplicates']} events read again and "
                 f"skipped by the marks" if r["duplicates"] or r["rebalance_log_lines"] else "")
        print(f"{r['workers']} worker(s): events counted in profiles vs produced: {ok}{again}")
    if kill:
        print()
        print(f"SIGKILL of 1 of {kill['workers']} workers at a steady {kill['feed_events_per_s']:.0f} "
              f"events/s (load {kill['loadavg_before']:.1f}); session timeout "
              f"{kill['session_timeout_s']:.1f} s")
        print(f"  the victim held partitions {kill['victim_partitions']}: taken over after "
              f"{kill['taken_over_s_max']} s (epoch raised), applied again after "
              f"{kill['applied_again_s_first']} s (first) / {kill['applied_again_s_all']} s (all)")
        print(f"  the survivors' own partitions paused at most {kill['survivors_longest_pause_s']} s "
              f"(the rebalance); {kill['duplicates_skipped']} redelivered events skipped by the marks")
        ok = "equal" if kill["counted_in_profiles"] == kill["produced"] else "DIFFERENT"
        print(f"  events counted in profiles vs produced: {ok} "
              f"({kill['counted_in_profiles']} / {kill['produced']})")
    print()
    print(f"note: {os.cpu_count()} cores shared with other work (load average {loads[0]:.1f} at the start, "
          f"{loads[-1]:.1f} at the end). More worker processes than free cores add no capacity: "
          f"the events/s ratio shows the cost of coordination (a rebalance per joining member, "
          f"more and smaller batches, each process's fixed overhead) and, on a busy machine, how "
          f"much of the contended CPU k processes win from the others ('workers' column). The "
          f"µs CPU/ev column moves much less with the load: it is the measure of coordination "
          f"overhead here. The rate grows with workers only on a machine with a core per worker.")
    json_line({"bench": "scale", "redis": a.redis, "cores": os.cpu_count(), "partitions": a.partitions,
               "per_record": a.per_record, "events_per_run": n, "loadavg_before": loads[0],
               "loadavg_after": loads[-1], "session_timeout_s": session_ms / 1000,
               "runs": results, "kill": kill})
    return 0


if __name__ == "__main__":
    run_main(main)
