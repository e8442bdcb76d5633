"""Soak: the embedded default under a steady 1,000 events/s for N minutes.

    python bench/soak.py [--minutes 10] [--rate 1000] [--api-workers 1]

Starts the embedded default on 127.0.0.1 (Valkey with AOF, one Apache Kafka node, `kairos api`,
one `kairos worker`) and offers the load of bench/freshness.py (open loop: requests of 20
events of 20 different visitors every 20 ms, plus 10 freshness probes a second, each a new
visitor polled through GET /v1/profiles from its 2xx until readable: every `--poll-ms` at first,
then backing off; the probes' GETs per second and this process's own CPU are printed per window,
as the observer's share of the machine).

Per minute: freshness p50/p99, POST latency p50/p99, the worker's own lag, and RSS of Valkey,
the broker (java), the worker and the API. At the end it waits for the worker to drain (lag 0,
`--drain`, default at most 300 s) and compares the events the API accepted with the events counted in the
profiles (the sum of `event_count` over every profile this run wrote).
Targets: freshness p99 < 200 ms in the last minute as in the first, memory levels off, counts
equal. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import BenchStack, busy_note, json_line, loadavg, mib, run_main, say  # noqa: E402
from freshness import TARGET_P99_MS, Load, start_default_stack, wait_worker_ready, worker_view  # noqa: E402

PROCS = ("redis", "kafka", "worker", "api")


def commandstats(cli: Any) -> dict[str, tuple[int, int]]:
    """Valkey's INFO commandstats: command -> (calls, µs of its own CPU), scripts' inner
    calls included under their own names (a script counts as EVALSHA and as its commands)."""
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for k, v in cli.info("commandstats").items()}


def top_commands(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                 seconds: float, top: int = 6) -> list[dict[str, Any]]:
    """The commands that took the most of Valkey's time between two readings."""
    delta = {c: (after[c][0] - before.get(c, (0, 0))[0], after[c][1] - before.get(c, (0, 0))[1])
             for c in after}
    total = sum(u for _, u in delta.values()) or 1
    rows = sorted(delta.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"cmd": c, "share": u / total, "calls": n, "usec": u,
             "usec_per_call": u / n if n else 0.0, "calls_per_s": n / max(seconds, 1e-9)} for c, (n, u) in rows]


def settings_of(pairs: list[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` pairs as settings, each value of its field's type."""
    import dataclasses

    from engine.settings import Settings

    defaults = {f.name: getattr(Settings(), f.name) for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        kind = type(defaults.get(name))
        if not sep or name not in defaults or kind not in (bool, int, float, str):
            raise SystemExit(f"--set {pair!r}: expected NAME=VALUE, NAME a setting of a bool, "
                             "number or text")
        try:
            out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise SystemExit(f"--set {pair!r}: {value!r} is not a {kind.__name__}") from None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--probes", type=float, default=10.0, help="freshness probes per second")
    ap.add_argument("--poll-ms", type=float, default=2.0,
                    help="how often a probe polls its profile at first (ms): the figure's resolution, "
                         "and the observer's load on the API (printed per window as probe GETs/s)")
    ap.add_argument("--api-workers", type=int, default=1)
    ap.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    ap.add_argument("--chain-s", type=float, default=None,
                    help="the worker's batch_chain_s (default: the settings'; 0 = no chaining of batches)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a worker/API setting of engine/settings.py for this run (repeatable), "
                         "e.g. --set commit_max_events=250")
    ap.add_argument("--drain", type=float, default=300.0, help="seconds at most to wait for the worker to catch up")
    a = ap.parse_args()
    load_before = loadavg()
    note = busy_note()
    if note:
        say(note)
    rows: list[dict[str, Any]] = []
    with BenchStack("soak") as st:
        overrides = settings_of(a.set)
        if a.chain_s is not None:
            overrides["batch_chain_s"] = a.chain_s
        start_default_stack(st, a.api_workers, **overrides)
        wait_worker_ready(st)
        load = Load(st.base_url, rate=a.rate, probes_per_s=a.probes, key=st.key,
                    poll_s=a.poll_ms / 1000.0)
        t_start = time.monotonic()
        last = [t_start]
        observer = [time.process_time(), 0]  # this process's CPU (load + probes), polls sent
        cpu_last = {n: st.cpu(n) for n in PROCS}
        import redis as redis_sync

        rcli = redis_sync.Redis.from_url(st.redis.url)
        cmd_last = [commandstats(rcli)]

        def minute() -> None:
            now = time.monotonic()
            st.check_alive()
            w = load.window(last[0], now)
            cpu = {n: st.cpu(n) for n in PROCS}
            row = {
                "minute": len(rows) + 1,
                "fresh_p50_ms": w["freshness"]["p50_ms"], "fresh_p99_ms": w["freshness"]["p99_ms"],
                "fresh_max_ms": w["freshness"]["max_ms"], "probes": w["freshness"]["n"],
                "post_p50_ms": w["post"]["p50_ms"], "post_p99_ms": w["post"]["p99_ms"],
                "lag": (wv := worker_view(st)).get("lag"),
                "worker_fresh_p99_ms": wv.get("freshness_p99_ms"),
                "probe_gets_per_s": round((load.polls - observer[1]) / (now - last[0])),
                "cpu_bench": round((time.process_time() - observer[0]) / (now - last[0]), 2),
                **{f"rss_{n}_mib": mib(st.rss(n)) for n in PROCS},
                **{f"cpu_{n}": round((cpu[n] - cpu_last[n]) / (now - last[0]), 2) for n in PROCS},
            }
            cmds = commandstats(rcli)
            row["valkey_top"] = top_commands(cmd_last[0], cmds, now - last[0])
            cmd_last[0] = cmds
            cpu_last.update(cpu)
            observer[:] = [time.process_time(), load.polls]
            last[0] = now
            rows.append(row)
            say(f"minute {row['minute']}: freshness p50 {row['fresh_p50_ms']} p99 {row['fresh_p99_ms']} ms; "
                f"POST p99 {row['post_p99_ms']} ms; lag {row['lag']}; RSS valkey {row['rss_redis_mib']} "
                f"kafka {row['rss_kafka_mib']} worker {row['rss_worker_mib']} api {row['rss_api_mib']} MiB; "
                f"CPU valkey {row['cpu_redis']} worker {row['cpu_worker']} api {row['cpu_api']} kafka {row['cpu_kafka']} "
                f"bench {row['cpu_bench']}; probe GETs {row['probe_gets_per_s']}/s; "
                f"worker's own freshness p99 {row['worker_fresh_p99_ms']} ms; load {loadavg()}")
            say("  valkey's time: " + ", ".join(
                f"{c['cmd']} {c['share']:.0%} ({c['calls_per_s']:.0f}/s, {c['usec_per_call']:.0f} µs)"
                for c in row["valkey_top"]))

        say(f"offering {a.rate:.0f} events/s for {a.minutes:g} min…")
        asyncio.run(load.run(a.minutes * 60, 0.0, every=(a.window, minute)))
        # drain: wait until the worker has caught up and the count stops moving
        say("load stopped; waiting for the worker to drain…")
        t_drain = time.monotonic()
        deadline = t_drain + a.drain
        counted, progress_at, drained = (0, 0), time.monotonic(), False
        while time.monotonic() < deadline:
            now_counted = st.count_profiles(load.prefix)
            if now_counted[1] > counted[1]:
                progress_at = time.monotonic()
            counted = now_counted
            if counted[1] >= load.accepted:
                drained = True
                break
            if time.monotonic() - progress_at > 30:  # no progress at all: stop waiting
                break
            time.sleep(2)
        drain_s = time.monotonic() - t_drain
        w_end = worker_view(st)
        st.check_alive()
    profiles, events_counted = counted
    print()
    print(f"soak: {a.rate:.0f} events/s offered for {a.minutes:g} min; API on {a.api_workers} process(es), one worker")
    print(f"{'win':>3} {'fresh p50':>9} {'p99':>8} {'max':>8} {'POST p99':>8} {'lag':>6} {'valkey':>7} "
          f"{'kafka':>7} {'worker':>7} {'api':>6}  (ms, events, MiB RSS; one row per {a.window:g} s)"
          f" | worker's fresh p99 ms, probe GETs/s, cores: worker valkey api kafka bench")
    for r in rows:
        print(f"{r['minute']:>3} {r['fresh_p50_ms']:>9.1f} {r['fresh_p99_ms']:>8.1f} {r['fresh_max_ms']:>8.1f} "
              f"{r['post_p99_ms']:>8.1f} {str(r['lag']):>6} {r['rss_redis_mib']:>7.1f} {r['rss_kafka_mib']:>7.1f} "
              f"{r['rss_worker_mib']:>7.1f} {r['rss_api_mib']:>6.1f} | {r['worker_fresh_p99_ms']} "
              f"{r['probe_gets_per_s']} {r['cpu_worker']} {r['cpu_redis']} {r['cpu_api']} {r['cpu_kafka']} "
              f"{r['cpu_bench']}")
    equal = events_counted == load.accepted
    if drained:
        print(f"the worker caught up {drain_s:.0f}s after the load stopped")
    else:
        print(f"the worker had NOT caught up {drain_s:.0f}s after the load stopped (last lag {w_end.get('lag')}): "
              "the counts below compare a backlog, not a loss")
    print(f"events: sent {load.sent_events}, accepted (2xx) {load.accepted}, counted in {profiles} profiles "
          f"{events_counted} -> {'equal' if equal else 'DIFFERENT'}; failed requests {load.failed_requests}"
          f"{' ' + str(dict(load.fail_reasons)) if load.fail_reasons else ''}, "
          f"probe timeouts {load.probe_timeouts}, probes skipped {load.probes_skipped}; worker duplicates {w_end.get('duplicates_total')}")
    full = [r for r in rows if r["probes"]]
    first, lastrow = (full[0], full[-1]) if full else ({}, {})
    p99_ok = bool(full) and first["fresh_p99_ms"] < TARGET_P99_MS and lastrow["fresh_p99_ms"] < TARGET_P99_MS
    print(f"target freshness p99 < {TARGET_P99_MS:.0f} ms in the first and the last minute: "
          f"{'met' if p99_ok else 'MISSED'} ({first.get('fresh_p99_ms')} / {lastrow.get('fresh_p99_ms')} ms)")
    growth = {}
    if len(rows) >= 3:
        for n in PROCS:
            half = rows[len(rows) // 2][f"rss_{n}_mib"]
            growth[n] = round(rows[-1][f"rss_{n}_mib"] - half, 1)
        print("memory growth over the second half (MiB): " + ", ".join(f"{n} {v:+}" for n, v in growth.items())
              + "  (Valkey grows with the profiles of new visitors: that is data, not a leak)")
    print(f"target counts equal: {'met' if equal else 'MISSED'}")
    if note:
        print(f"note: {note}")
    json_line({"bench": "soak", "minutes": a.minutes, "rate_offered": a.rate, "api_workers": a.api_workers,
               "batch_chain_s": a.chain_s, "settings": a.set,
               "loadavg_before": load_before, "minutes_rows": rows, "sent": load.sent_events,
               "accepted": load.accepted, "counted": events_counted, "profiles": profiles,
               "counts_equal": equal, "drained": drained, "drain_s": round(drain_s, 1), "failed_requests": load.failed_requests,
               "probe_timeouts": load.probe_timeouts, "probes_skipped": load.probes_skipped, "p99_first_last_met": p99_ok,
               "rss_growth_second_half_mib": growth, "worker_end": w_end})
    return 0


if __name__ == "__main__":
    run_main(main)
