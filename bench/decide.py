"""Benchmark of POST /v1/decide against its floor, with `wrk` (Debian package `wrk`).

    python bench/decide.py [--profiles 100000] [--duration 10] [--connections 32]

Starts Valkey and Apache Kafka, loads `--profiles` visitor profiles (built with the real
affinity model and segment rules, written with the store's atomic commit), starts the API
(`kairos api`, 1 process) with 5 live campaigns and the floor app (bench/floor_app.py: parse
the same JSON, one Redis pipeline round trip) under the same uvicorn settings, then runs wrk:

1. each at its maximum rate (closed loop, `--connections` connections): throughput, p50, p99;
2. each paced at half of the floor's maximum rate (requests sent on a fixed schedule, not
   after the previous answer): p50, p99.

Targets (issue 4): decide throughput >= 0.6 x floor; at half the floor's max rate, decide p99
<= 2 x floor p99. The last line is one JSON object with every figure.

Before the servers start, the cost of a learning policy (issue 12), in process: `select()` for
one three-variant campaign (10 % holdout) with `policy: thompson`, `epsilon_greedy` and a fixed
split, interleaved rounds of `--policy-decisions` visitors, µs of process CPU per decision
(medians), the bandits with a model that learnt 3,000 rewards (its probabilities cached per
version, as the API keeps its loaded version) and the first decision on a freshly loaded version
(with and without the probabilities computed at load, `policy.warm`, which the API's reload does).
`--policy-only` prints that and stops (no servers).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _stack import (  # noqa: E402
    HOST,
    ROOT,
    BenchStack,
    busy_note,
    cpu_seconds,
    gate_cost_us,
    json_line,
    loadavg,
    say,
)

ZONES = ["home_hero", "exit_intent", "pdp_banner"]
PDP_BANNER = """\
id: pdp_banner
name: Top-brand banner (benchmark)
status: active
priority: 20
zones: [pdp_banner]
targeting:
  affinity: {dimension: brand, op: ">", value: 0}
control_percent: 20
variants:
  - id: plain
    template:
      title: "New from {{ top_brand }}"
  - id: rich
    template:
      title: "{{ top_brand | title }} picks"
      html: "<ul>{% for c in top.category[:3] %}<li>{{ c }}</li>{% endfor %}</ul>"
"""
WRK_SCRIPT = """\
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
local n = tonumber(os.getenv("BENCH_N"))
local zones = os.getenv("BENCH_ZONES")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
request = function()
  local body = '{"visitor_id":"b' .. math.random(0, n - 1) ..
    '","context":{"channel":"web","page_type":"home","url":"https://shop.example/",' ..
    '"zones":' .. zones .. '}}'
  return wrk.format(nil, "/v1/decide", nil, body)
end
-- answers that came back empty because the decision's deadline passed
local threads = {}
function setup(thread) table.insert(threads, thread) end
degraded = 0
function response(status, headers, body)
  if string.find(body, '"degraded"', 1, true) then degraded = degraded + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + (t:get("degraded") or 0) end
  io.write(string.format("Degraded: %d\\n", n))
end
-- paced runs: requests scheduled at fixed intervals (constant rate, not closed loop)
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef("typedef struct { long tv_sec; long tv_nsec; } bench_ts; int clock_gettime(int, bench_ts*);")
  local ts = ffi.new("bench_ts")
  local function now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval, next_t = 1000 / rate, nil
  delay = function()
    local t = now_ms()
    next_t = (next_t or t) + interval
    if next_t < t then next_t = t end
    return next_t - t
  end
end
"""
CATS = ["shoes/running", "shoes/trail", "books/sf", "books/crime", "garden/tools", "toys", "audio/headphones"]
BRANDS = ["acme", "zeta", "nova", "orbit", "kite", "lumen"]


def make_config(cdir: Path) -> None:
    for kind in ("segments", "campaigns"):
        (cdir / kind).mkdir(parents=True, exist_ok=True)
        for f in (ROOT / "config" / kind).glob("*.yaml"):
            shutil.copy(f, cdir / kind / f.name)
    (cdir / "campaigns" / "pdp_banner.yaml").write_text(PDP_BANNER)


async def load_profiles(redis_url: str, n: int, cdir: Path, ttl_ms: int) -> None:
    from engine.logic.decisions.config import load_config
    from engine.logic.decisions.state import rule_view
    from engine.store import keys
    from engine.store.profiles import ProfileStore, new_client
    from engine.store.writes import Write
    from models.affinity import AffinityConfig, Profile, apply_event

    config = load_config(cdir)
    live = [c for c in config.campaigns.values() if c.status == "active"]
    say(f"{len(live)} live campaigns: {', '.join(c.id for c in live)}")
    cfg = AffinityConfig()
    rng = random.Random(1)
    now = int(time.time() * 1000)
    client = new_client(redis_url, timeout=30)
    store = ProfileStore(client, ttl_ms)
    t0 = time.perf_counter()
    chunk: list[Write] = []
    for i in range(n):
        p = Profile()
        vid = f"b{i}"
        start = now - rng.randrange(0, 20 * 86_400_000)
        for k in range(rng.randrange(1, 8)):
            etype = rng.choice(["item_view"] * 5 + ["add_to_cart", "page_view", "purchase"])
            item = {"id": f"i{rng.randrange(500)}", "brand": rng.choice(BRANDS),
                    "categories": [rng.choice(CATS)]}
            apply_event(p, {"event_id": f"{vid}-{k}", "type": etype, "visitor_id": vid,
                            "ts": start + k * 60_000, "item": item,
                            "channel": rng.choice(["web", "web", "app"])}, cfg)
        if rng.random() < 0.2:
            p.traits["first_name"] = rng.choice(["Ada", "Linus", "Grace"])
        p.segments = config.evaluate_segments(rule_view(p, keys.visitor_pid(vid), now, cfg), {}, now)
        chunk.append(Write(keys.visitor_pid(vid), b"", p))
        if len(chunk) == 2000:
            await store.commit(chunk, None, {})  # no shared tables, no offsets
            chunk = []
    if chunk:
        await store.commit(chunk, None, {})
    await client.aclose()
    say(f"loaded {n} profiles in {time.perf_counter() - t0:.1f}s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, script: Path, env: dict[str, str], duration: int, connections: int,
            rate: float = 0.0, pid: int | None = None) -> dict[str, float]:
    """One wrk run; with `pid`, also the CPU that process (and its children) spent per request:
    on a machine other work shares, CPU per request moves much less than requests per second."""
    import os

    e = {**os.environ, **env, "BENCH_RATE": f"{rate:.1f}"}
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, env=e, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {q: _ms(v) for q, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    degraded = re.search(r"Degraded: (\d+)", out)
    return {"rps": round(rps, 1), "p50_ms": round(lat["50"], 3), "p99_ms": round(lat["99"], 3),
            "requests": total, "non_2xx": int(errors.group(1)) if errors else 0,
            "degraded": int(degraded.group(1)) if degraded else 0,
            "cpu_us_per_request": round(cpu / max(total, 1) * 1e6, 1), "load": loadavg()}


def profile_api(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (PyPI `py-spy`) sampling the API process while the load runs: a collapsed-stack
    file, summarised by `summarise_profile`."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        say("py-spy is not installed (pip install py-spy): no profile")
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: what the summary names on its own line (inclusive share), where the decide path's time goes
STAGES = {
    "uvicorn: parse the request, start its task": ("data_received (uvicorn/", "_start_asgi_task (uvicorn"),
    "the ASGI app (middleware, routing, gate and route)": ("run_asgi (uvicorn/",),
    "the route (post_decide)": ("post_decide (engine/routes/decide.py",),
    "  answer written (uvicorn send: the socket write)": ("send (uvicorn/protocols/http/httptools_impl.py",),
    "  request parsed and checked": ("parse_request (engine/logic/decide_request.py",),
    "  decision flow (Decider.decide)": ("decide (engine/flows/decide.py",),
    "    Redis read (call, reply, profile decoded)": ("read (engine/flows/decide.py",),
    "    selection (segments, rules, caps, arms, content)": ("select (engine/logic/decisions/select.py",),
    "      content (templates, memo hits mostly)": ("render (engine/logic/decisions/templates.py",),
    "      live segments": ("evaluate_segments (engine/logic/decisions/config.py",),
    "      arm assignment": ("assign (engine/logic/decisions/assign.py",),
    "    decision ids signed (HMAC)": ("sign_decision (engine/flows/access.py",),
    "Redis writes of the read (one per loop turn)": ("_flush (engine/store/direct.py",),
    "decision log (per-partition records, produce)": ("_flush (engine/eventlog.py", "aiokafka/producer/sender.py"),
}


def summarise_profile(path: Path, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks (py-spy leaves idle samples out): the share of samples
    in each of `STAGES` (the function on the stack), and the functions with the most samples
    of their own (self). py-spy samples wall time of a busy thread: a system call that wakes
    another process (a socket write) also counts the time the kernel ran that one instead."""
    stage: dict[str, int] = dict.fromkeys(STAGES, 0)
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        total += int(n)
        for name, marks in STAGES.items():
            if any(m in f for f in frames for m in marks):
                stage[name] += int(n)
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        own[leaf] = own.get(leaf, 0) + int(n)
    t = max(total, 1)
    return {"stages": [(k, v / t) for k, v in stage.items()],
            "self": [(f, c / t) for f, c in sorted(own.items(), key=lambda x: -x[1])[:top]]}


POLICY_CAMPAIGN = """\
id: offer
name: Offer (policy benchmark)
status: active
zones: [hero]
control_percent: 10
{policy}
variants:
  - id: a
    template: {{title: "Offer A for {{{{ top_category | default('you', true) }}}}"}}
  - id: b
    template: {{title: "Offer B"}}
  - id: c
    template: {{title: "Offer C"}}
"""


def policy_cost(n: int, rounds: int) -> dict[str, Any]:
    """µs CPU per decision of `select()` with each policy (see the module docstring)."""
    import random as _random
    import statistics
    import tempfile

    from engine.logic.decisions.config import load_config
    from engine.logic.decisions.policy import new_model, restore_model, warm
    from engine.logic.decisions.select import select

    policies = {"fixed": "", "thompson": "policy: thompson", "epsilon_greedy": "policy: epsilon_greedy"}
    configs, models = {}, {}
    rng = _random.Random(3)
    for name, line in policies.items():
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "campaigns").mkdir()
            (Path(d) / "campaigns" / "offer.yaml").write_text(POLICY_CAMPAIGN.format(policy=line))
            configs[name] = load_config(Path(d))
        c = configs[name].campaigns["offer"]
        if c.learns:
            m = new_model(c.policy)
            for _ in range(3000):
                arm = rng.choice("abc")
                m.update(arm, 1.0 if rng.random() < {"a": 0.05, "b": 0.06, "c": 0.04}[arm] else 0.0)
            models[name] = m
    profiles = [{"profile_id": f"v:b{i}"} for i in range(n)]
    tokens = [f"{i:010d}" for i in range(n)]
    now = int(time.time() * 1000)
    per: dict[str, list[float]] = {k: [] for k in [*policies, "thompson_new_version",
                                                   "epsilon_greedy_new_version",
                                                   "thompson_new_version_cold",
                                                   "thompson_warm_per_version"]}
    shown = 0

    def run(name: str, model_of: Any) -> float:
        nonlocal shown
        config = configs[name]
        it = iter(tokens)
        t0 = time.process_time()
        for i, prof in enumerate(profiles):
            got = select(config, prof, {}, now, zones=["hero"], models=model_of(i),
                         token=lambda: next(it))
            shown += len(got)
        return 1e6 * (time.process_time() - t0) / len(profiles)

    for name in policies:  # warm up
        run(name, lambda i, name=name: {"offer": models[name]} if name in models else None)
    for _ in range(rounds):
        for name in policies:
            per[name].append(run(name, lambda i, name=name: {"offer": models[name]}
                                 if name in models else None))
        for name in ("thompson", "epsilon_greedy"):  # every decision on a just-loaded version
            campaign = configs[name].campaigns["offer"]
            blob = models[name].snapshot()
            fresh = [restore_model(campaign.policy, blob) for _ in range(min(n, 300))]
            if name == "thompson":  # as restored, probabilities not computed yet
                cold = [restore_model(campaign.policy, blob) for _ in range(len(fresh))]
                per["thompson_new_version_cold"].append(_first_use(configs[name], cold, now))
            t0 = time.process_time()  # what the API's reload task does per version
            for m in fresh:
                warm(campaign, m)
            if name == "thompson":
                per["thompson_warm_per_version"].append(
                    1e6 * (time.process_time() - t0) / len(fresh))
            per[f"{name}_new_version"].append(_first_use(configs[name], fresh, now))
    calls = (rounds + 1) * len(policies) * n
    if shown != calls:  # one decision (a variant or the holdout) per call, else not comparable
        raise SystemExit(f"policy cost: {shown} decisions for {calls} calls")
    out = {k: round(statistics.median(v), 1) for k, v in per.items()}
    out["thompson_minus_fixed"] = round(out["thompson"] - out["fixed"], 1)
    out["epsilon_greedy_minus_fixed"] = round(out["epsilon_greedy"] - out["fixed"], 1)
    out["decisions_per_round"] = n
    out["rounds"] = rounds
    out["load"] = loadavg()
    return out


def _first_use(config: Any, fresh: list[Any], now: int) -> float:
    """µs CPU of the first decision on each freshly loaded model: what the first decision after
    a new version costs."""
    from engine.logic.decisions.select import select

    t0 = time.process_time()
    for i, m in enumerate(fresh):
        select(config, {"profile_id": f"v:n{i}"}, {}, now, zones=["hero"], models={"offer": m},
               token=lambda i=i: f"{i:010d}")
    return 1e6 * (time.process_time() - t0) / len(fresh)


def print_policy_cost(res: dict[str, Any]) -> None:
    print(f"policy cost: select() for one 3-variant campaign, µs CPU per decision (medians of "
          f"{res['rounds']} interleaved rounds of {res['decisions_per_round']}; load {res['load']:.1f})")
    print(f"  fixed split {res['fixed']:.0f}, thompson {res['thompson']:.0f} "
          f"(+{res['thompson_minus_fixed']:.0f}), epsilon_greedy {res['epsilon_greedy']:.0f} "
          f"(+{res['epsilon_greedy_minus_fixed']:.0f}); first decision on a new version as the "
          f"API loads it: thompson {res['thompson_new_version']:.0f}, epsilon_greedy "
          f"{res['epsilon_greedy_new_version']:.0f} (thompson's probabilities computed at load, "
          f"off the request path: {res['thompson_warm_per_version']:.0f} per version; without "
          f"that its first decision cost {res['thompson_new_version_cold']:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=16,
                    help="connections of the max-rate runs (more only adds queueing)")
    ap.add_argument("--paced-connections", type=int, default=64,
                    help="connections of the paced runs (enough that none waits for a free one)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the API with py-spy during its max-rate run and print where the time goes")
    ap.add_argument("--policy-decisions", type=int, default=3000,
                    help="decisions per round of the policy cost (in process)")
    ap.add_argument("--policy-rounds", type=int, default=5)
    ap.add_argument("--policy-only", action="store_true",
                    help="only the policy cost (in process, no servers)")
    a = ap.parse_args()
    policy = policy_cost(a.policy_decisions, a.policy_rounds)
    print_policy_cost(policy)
    if a.policy_only:
        json_line({"bench": "decide", "policy_us": policy})
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    if note := busy_note():
        say(note)
    with BenchStack("decide") as st:
        cdir = st.dir / "config"
        make_config(cdir)
        redis_url = st.start_redis(appendonly=False)
        st.start_kafka(partitions=4)
        # the per-key limit (1,000/s by default) off: this measures the decision, not the
        # limiter (whose check costs the same whatever its rate; see the key check below)
        s = st.configure(config_dir=cdir, rate_per_key=1e9)
        st.ensure_topics()
        asyncio.run(load_profiles(redis_url, a.profiles, cdir, s.profile_ttl_ms))
        api = st.start_api(workers=1)
        from engine.embedded import free_port

        fport = free_port()
        floor = st.spawn("floor", [sys.executable, str(BENCH / "floor_app.py"), "--port", str(fport),
                                   "--redis", redis_url, "--workers", "1"])
        st.wait_http(f"http://{HOST}:{fport}/healthz", floor, "floor")
        import httpx
        import orjson

        shown = 0
        with httpx.Client(base_url=st.base_url, headers=st.headers) as http:
            for i in range(200):
                r = http.post("/v1/decide", content=orjson.dumps(
                    {"visitor_id": f"b{i}", "context": {"channel": "web", "page_type": "home", "zones": ZONES}}))
                shown += len(r.json()["decisions"])
                if i == 1:
                    say(f"sample decision: {r.text[:300]}")
        say(f"{shown / 200:.2f} decisions per call over 200 visitors")
        script = st.dir / "decide.lua"
        script.write_text(WRK_SCRIPT)
        env = {"BENCH_N": str(a.profiles), "BENCH_ZONES": orjson.dumps(ZONES).decode(),
               "BENCH_AUTH": st.headers["Authorization"]}
        targets = {"decide": st.base_url + "/v1/decide", "floor": f"http://{HOST}:{fport}/v1/decide"}
        pids = {"decide": api.pid, "floor": floor.pid}
        for url in targets.values():  # warm up
            run_wrk(url, script, env, 3, a.connections)
        res: dict[str, Any] = {}
        profile: dict[str, list[tuple[str, float]]] = {}
        for name, url in targets.items():
            say(f"{name}: max rate, {a.connections} connections, {a.duration}s (load {loadavg():.1f})")
            spy = None
            if a.profile and name == "decide":
                spy = profile_api(api.pid, a.duration, st.dir / "decide.pyspy")
            res[f"{name}_max"] = run_wrk(url, script, env, a.duration, a.connections, pid=pids[name])
            if spy is not None:
                spy.wait(30)
                profile = summarise_profile(st.dir / "decide.pyspy")
            say(f"  {res[f'{name}_max']}")
        half = res["floor_max"]["rps"] / 2
        for name, url in targets.items():
            say(f"{name}: paced at {half:.0f}/s (half the floor's max), {a.paced_connections} connections")
            res[f"{name}_half"] = run_wrk(url, script, env, a.duration, a.paced_connections, half,
                                          pid=pids[name])
            say(f"  {res[f'{name}_half']}")
        st.check_alive("api", "floor")
        gate = gate_cost_us(s.database_url, st.key)
    # degraded answers (empty because the deadline passed) do not count as decisions made
    dm = res["decide_max"]
    decided_rps = dm["rps"] * (1 - dm["degraded"] / max(dm["requests"], 1))
    ratio = decided_rps / res["floor_max"]["rps"]
    p99_ratio = res["decide_half"]["p99_ms"] / max(res["floor_half"]["p99_ms"], 1e-9)
    print()
    if profile:
        print("where the API's time goes (py-spy, share of busy samples with it on the stack):")
        for f, share in profile["stages"]:
            print(f"  {share:6.1%}  {f}")
        print("functions with the most samples of their own:")
        for f, share in profile["self"]:
            print(f"  {share:6.1%}  {f[:130]}")
        print()
    print(f"{'':18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU µs/req':>12}{'load':>7}")
    for key, label in [("floor_max", "floor, max"), ("decide_max", "decide, max"),
                       ("floor_half", "floor, half rate"), ("decide_half", "decide, half rate")]:
        r = res[key]
        print(f"{label:18}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['cpu_us_per_request']:>12.0f}{r['load']:>7.1f}")
    cpu_ratio = res["floor_max"]["cpu_us_per_request"] / max(dm_cpu := res["decide_max"]["cpu_us_per_request"], 1e-9)
    print(f"CPU per request: decide {dm_cpu:.0f} µs, floor {res['floor_max']['cpu_us_per_request']:.0f} µs: "
          f"the throughput one core allows, decide/floor = {cpu_ratio:.2f}")
    for key in ("decide_max", "decide_half"):
        r = res[key]
        if r["degraded"]:
            print(f"note: {key}: {r['degraded']} of {r['requests']} answers degraded "
                  "(state not read within the decide deadline)")
    print(f"throughput ratio decide/floor  {ratio:.2f} (non-degraded decisions: {decided_rps:.0f}/s)  (target >= 0.6: {'ok' if ratio >= 0.6 else 'MISSED'})")
    print(f"p99 ratio at half floor rate   {p99_ratio:.2f}  (target <= 2: {'ok' if p99_ratio <= 2 else 'MISSED'})")
    # one API process: each request costs at most 1/rps of a core
    per_request_us = 1e6 / max(dm["rps"], 1e-9)
    share = gate["gate_us_per_request"] / per_request_us
    print(f"key check                      {gate['gate_us_per_request']} µs of ≤ {per_request_us:.0f} µs "
          f"per decide request = {share:.1%} of throughput (target < 5 %)")
    json_line({"bench": "decide", "profiles": a.profiles, **res, "throughput_ratio": round(ratio, 3),
               "p99_ratio_half_rate": round(p99_ratio, 3), "cpu_ratio": round(cpu_ratio, 3),
               "key_check": gate,
               "key_check_share": round(share, 4), "policy_us": policy, "busy": busy_note(),
               "profile": profile})


if __name__ == "__main__":
    main()
