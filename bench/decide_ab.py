"""Two versions of `POST /v1/decide` and the floor on ONE stack, measured in alternating rounds.

    python bench/decide_ab.py --base DIR [--rounds 3] [--duration 6] [--profiles 20000]

`DIR` is another source tree of Kairos (for example `git archive <commit> | tar -x -C DIR`):
its API runs from there (`python -m engine.cli api` with DIR as the working directory, this
tree's virtualenv), this tree's API beside it, and the floor app (bench/floor_app.py), all on
the same Valkey, Kafka and PostgreSQL, with the same profiles and campaigns as
bench/decide.py. Each round runs wrk at the maximum rate on the floor, then the two APIs in
an order that alternates from round to round (A B, then B A), then each paced at half the
floor's maximum rate of that round; it prints each run's req/s, p50/p99, CPU µs per request
of the serving process (from /proc) and the load average beside it. On a shared machine
compare the figures of one round, and CPU per request above all. The last line is one JSON
object with every run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _stack import HOST, BenchStack, json_line, loadavg, say  # noqa: E402
from decide import (  # noqa: E402
    WRK_SCRIPT,
    ZONES,
    load_profiles,
    make_config,
    profile_api,
    run_wrk,
    summarise_profile,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path, help="the other source tree (before)")
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--paced-connections", type=int, default=64)
    ap.add_argument("--no-paced", action="store_true", help="only the max-rate runs")
    ap.add_argument("--spy", choices=("before", "after"), default=None,
                    help="py-spy on that API during its max-rate run of the last round")
    a = ap.parse_args()
    base = a.base.resolve()
    if not (base / "engine" / "cli.py").exists():
        raise SystemExit(f"{base} is not a Kairos source tree")
    import orjson

    from engine.embedded import free_port

    with BenchStack("decide_ab") as st:
        cdir = st.dir / "config"
        make_config(cdir)
        redis_url = st.start_redis(appendonly=False)
        st.start_kafka(partitions=4)
        s = st.configure(config_dir=cdir, rate_per_key=1e9)
        st.ensure_topics()
        asyncio.run(load_profiles(redis_url, a.profiles, cdir, s.profile_ttl_ms))
        after = st.start_api(workers=1, name="after")
        after_url = st.base_url
        bport = free_port()
        before_settings = dataclasses.replace(s, port=bport)
        env = {**st._env(), "KAIROS_SETTINGS_JSON": before_settings.to_json()}
        # the other tree's API, from its own working directory
        import subprocess

        log = (st.dir / "before.log").open("ab")
        before = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, runpy; sys.path.insert(0, '.'); import engine; "
             "print('engine from', engine.__file__, flush=True); "
             "sys.argv = ['kairos', 'api', '--workers', '1']; "
             "runpy.run_module('engine.cli', run_name='__main__')"],
            stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env, start_new_session=True)
        log.close()
        st.procs["before"] = before
        before_url = f"http://{HOST}:{bport}"
        st.wait_http(before_url + "/healthz", before, "before")
        say((st.dir / "before.log").read_text().splitlines()[0])
        fport = free_port()
        floor = st.spawn("floor", [sys.executable, str(BENCH / "floor_app.py"), "--port",
                                   str(fport), "--redis", redis_url, "--workers", "1"])
        st.wait_http(f"http://{HOST}:{fport}/healthz", floor, "floor")
        import httpx

        for name, url in (("before", before_url), ("after", after_url)):
            with httpx.Client(base_url=url, headers=st.headers) as http:
                shown = 0
                for i in range(200):
                    r = http.post("/v1/decide", content=orjson.dumps(
                        {"visitor_id": f"b{i}",
                         "context": {"channel": "web", "page_type": "home", "zones": ZONES}}))
                    r.raise_for_status()
                    shown += len(r.json()["decisions"])
                say(f"{name}: {shown / 200:.2f} decisions per call over 200 visitors")
        script = st.dir / "decide.lua"
        script.write_text(WRK_SCRIPT)
        wenv = {"BENCH_N": str(a.profiles), "BENCH_ZONES": orjson.dumps(ZONES).decode(),
                "BENCH_AUTH": st.headers["Authorization"]}
        targets = {"floor": (f"http://{HOST}:{fport}/v1/decide", floor.pid),
                   "before": (before_url + "/v1/decide", before.pid),
                   "after": (after_url + "/v1/decide", after.pid)}
        for url, _ in targets.values():  # warm up
            run_wrk(url, script, wenv, 3, a.connections)
        runs: list[dict[str, Any]] = []
        profile: dict[str, Any] = {}
        print(f"{'round':>5} {'run':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'CPU µs/req':>12}{'degraded':>10}{'load':>7}", flush=True)
        for rnd in range(a.rounds):
            order = ["floor", "before", "after"] if rnd % 2 == 0 else ["floor", "after", "before"]
            got: dict[str, Any] = {}
            for name in order:
                url, pid = targets[name]
                spy = None
                if a.spy == name and rnd == a.rounds - 1:
                    spy = profile_api(pid, a.duration, st.dir / "spy.raw")
                got[name] = run_wrk(url, script, wenv, a.duration, a.connections, pid=pid)
                if spy is not None:
                    spy.wait(30)
                    profile = summarise_profile(st.dir / "spy.raw", top=40)
                r = got[name]
                runs.append({"round": rnd, "run": f"{name}_max", **r})
                print(f"{rnd:>5} {name + ' max':<14}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
                      f"{r['p99_ms']:>9.2f}{r['cpu_us_per_request']:>12.0f}"
                      f"{r['degraded']:>10}{r['load']:>7.1f}", flush=True)
            if a.no_paced:
                continue
            half = got["floor"]["rps"] / 2
            for name in order:
                url, pid = targets[name]
                r = run_wrk(url, script, wenv, a.duration, a.paced_connections, half, pid=pid)
                runs.append({"round": rnd, "run": f"{name}_half", "asked_rps": half, **r})
                print(f"{rnd:>5} {name + ' half':<14}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
                      f"{r['p99_ms']:>9.2f}{r['cpu_us_per_request']:>12.0f}"
                      f"{r['degraded']:>10}{r['load']:>7.1f}  (asked {half:.0f}/s)", flush=True)
        st.check_alive("after", "floor")
    if profile:
        print(f"where {a.spy}'s time goes (py-spy, share of busy samples with it on the stack):")
        for f, share in profile["stages"]:
            print(f"  {share:6.1%}  {f}")
        print("functions with the most samples of their own:")
        for f, share in profile["self"]:
            print(f"  {share:6.1%}  {f[:150]}")
    summary: dict[str, Any] = {}
    for name in ("before", "after"):
        mx = [r for r in runs if r["run"] == f"{name}_max"]
        fl = {r["round"]: r for r in runs if r["run"] == "floor_max"}
        ratios = [r["rps"] / fl[r["round"]]["rps"] for r in mx]
        cpu = [fl[r["round"]]["cpu_us_per_request"] / r["cpu_us_per_request"] for r in mx]
        summary[name] = {"throughput_ratio": [round(x, 3) for x in ratios],
                         "cpu_ratio": [round(x, 3) for x in cpu],
                         "cpu_us": statistics.median(r["cpu_us_per_request"] for r in mx)}
        half = [r for r in runs if r["run"] == f"{name}_half"]
        fh = {r["round"]: r for r in runs if r["run"] == "floor_half"}
        if half:
            summary[name]["p99_ratio_half_rate"] = [
                round(r["p99_ms"] / max(fh[r["round"]]["p99_ms"], 1e-9), 2) for r in half]
        print(f"{name}: throughput ratio {summary[name]['throughput_ratio']}, CPU ratio "
              f"{summary[name]['cpu_ratio']}, median {summary[name]['cpu_us']:.0f} µs/request"
              + (f", p99 ratio at half the floor's rate {summary[name]['p99_ratio_half_rate']}"
                 if half else ""))
    json_line({"bench": "decide_ab", "base": str(base), "profiles": a.profiles, "runs": runs,
               "summary": summary, "profile": profile, "load": loadavg()})


if __name__ == "__main__":
    main()
