"""Distributed-marketing mail: how fast `kairos mailer` renders messages with per-recipient
recommendations and hands them to the local SMTP outbox, and how soon an e-mail click shows
in the contact's affinities.

    python bench/mail.py [--contacts 2000] [--clicks 60] [--profile]

1. Valkey, Kafka, PostgreSQL, the API, a stream worker, the local outbox (aiosmtpd) and a
   mailer on 127.0.0.1. A catalog of 300 items with https URLs; each contact is linked to a
   user whose profile has a few item views (so the recommendations differ per recipient).
2. Baseline, in this process: compose the same template (with recommendations given) and
   hand it over one SMTP connection, no database, no recommendation look-up: what the SMTP
   hand-over and the MIME build cost alone.
3. The mailer: a released, approved campaign of the `seasonal-picks` template (it asks for
   `recommendations(n=3)`) to every contact; time from the send until every send is `sent`.
4. Round trip: clicks on a recommended item's tracked link (as a browser would), each timed
   until the item's category shows in the contact's profile (the stream applied the event).

Prints figures and ends with one JSON line, with the CPU time per message of the mailer
process and of the outbox (from /proc: the figure to compare on a shared machine). Measured
under the machine's current load (printed beside it). `--profile` runs the mailer and the
outbox under cProfile with a CPU-time clock (bench/_cpuprof.py) and prints where their CPU
went (the top functions by own time and by cumulative time).
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
from _stack import BenchStack, busy_note, json_line, loadavg, quantile, run_main, say  # noqa: E402

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"
CATEGORIES = ["audio.headphones", "audio.speakers", "tv.oled", "tv.led", "computers.laptops",
              "computers.tablets", "phones.smartphones", "cameras.mirrorless", "home.vacuums", "games.consoles"]


def catalog(n: int) -> list[dict[str, Any]]:
    return [{"id": f"sku-{i}", "name": f"Product {i}", "categories": [CATEGORIES[i % len(CATEGORIES)]],
             "brand": f"brand{i % 7}", "price": 20.0 + i, "currency": "GBP", "in_stock": True,
             "url": f"https://www.northgate.example/p/sku-{i}"} for i in range(n)]


async def db(url: str, fn: Any) -> Any:
    from engine.db import new_engine
    from engine.db.control import ControlPlane

    cp = ControlPlane(new_engine(url, pool_size=2))
    try:
        return await fn(cp)
    finally:
        await cp.close()


def baseline(st: BenchStack, outbox_url: str, n: int) -> tuple[float, float]:
    """Messages/s of compose + SMTP hand-over alone (one connection, no DB, no look-ups), and
    this process's µs of CPU per message."""
    from datetime import UTC, datetime

    from engine.logic.dm.config import load_dm
    from engine.logic.dm.sending import Partner, Recipient, TokenSigner, TrackingUrls, compose_mail
    from engine.mail.sender import Relay, SmtpSender

    tv = load_dm(st.settings.config_dir).templates["seasonal-picks"]
    urls = TrackingUrls("https://kairos.example", TokenSigner([b"k" * 32]))
    items = [{"id": f"sku-{i}", "name": f"Product {i}", "url": f"https://www.northgate.example/p/sku-{i}",
              "image_url": None, "price": 10.0, "currency": "GBP", "categories": ["tv.oled"], "brand": "x"}
             for i in range(3)]

    async def go() -> tuple[float, float]:
        async with SmtpSender(Relay.from_url(outbox_url)) as sender:
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                env, _ = compose_mail(tv, {}, send_id=f"baseline{i:08d}", to=Recipient(f"b{i}@example.com", "B"),
                                      partner=Partner("Bench store", "store@example.com"), urls=urls,
                                      verp_key=b"v" * 32, now=datetime.now(UTC), items=items)
                d = await sender.send(env)
                assert d.outcome == "sent", d
            return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contacts", type=int, default=2000)
    ap.add_argument("--clicks", type=int, default=60)
    ap.add_argument("--profile", action="store_true", help="run the mailer and the outbox under cProfile")
    args = ap.parse_args()
    import httpx

    from engine.embedded import free_port

    with BenchStack("mail") as st:
        st.start_redis()
        st.start_kafka()
        outbox_port, bounce_port = free_port(), free_port()
        mail_dir = st.dir / "mail"
        st.configure(smtp_url=f"smtp://127.0.0.1:{outbox_port}", mail_dir=str(mail_dir), bounce_port=bounce_port,
                     dm_partner_rate=1e6, dm_global_rate=1e6, dm_bot_click_delay_s=0.0, dm_senders=8,
                     dm_sweep_s=0.5)
        st.ensure_topics()
        def run(name: str, module: str) -> list[str]:
            if args.profile:  # CPU-time cProfile (bench/_cpuprof.py)
                return [sys.executable, str(Path(__file__).parent / "_cpuprof.py"), str(st.dir / f"{name}.prof"), module]
            return [sys.executable, "-m", module]

        st.spawn("outbox", [*run("outbox", "engine.mail.outbox"), "--dir", str(mail_dir), "--port", str(outbox_port)])
        st.start_api()
        st.start_worker()
        http = httpx.Client(base_url=st.base_url, timeout=30, headers=st.headers)
        items = catalog(300)
        assert http.post("/v1/catalog/items", json=items).status_code == 200
        url = st.settings.database_url

        async def seed(cp: Any) -> tuple[str, str]:
            from engine.db.dm import DmStore

            pid = await cp.create_partner("Bench store")
            _, key = await cp.create_key("secret", scopes=["dm"], partner_id=pid, name="bench partner")
            await DmStore(cp.engine).release("template", "seasonal-picks", by="bench", partner_id=pid)
            return pid, key

        pid, pkey = asyncio.run(db(url, seed))
        partner = httpx.Client(base_url=st.base_url, timeout=60, headers={"Authorization": f"Bearer {pkey}"})
        n = args.contacts
        csv = "email,first_name,user_id\n" + "".join(f"c{i}@example.com,C{i},bench-u{i}\n" for i in range(n))
        assert partner.post("/v1/dm/contacts/import", content=csv, headers={"content-type": "text/csv"}).json()["added"] == n
        rng = random.Random(7)
        say(f"seeding {n} profiles with item views…")
        events = [{"event_id": f"bv{i}-{j}", "type": "item_view", "visitor_id": f"bv{i}", "user_id": f"bench-u{i}",
                   "item": {"id": it["id"], "categories": it["categories"], "brand": it["brand"]}}
                  for i in range(n) for j, it in enumerate(rng.sample(items, 3))]
        for k in range(0, len(events), 500):
            assert http.post("/v1/events", json=events[k:k + 500]).status_code == 200
        deadline = time.monotonic() + 120
        while http.get(f"/v1/profiles/bench-u{n - 1}").status_code != 200:
            assert time.monotonic() < deadline, "the worker did not apply the seed events"
            time.sleep(0.5)

        say("baseline: compose + SMTP hand-over in this process…")
        outbox_cpu0 = st.cpu("outbox")
        base_rate, base_cpu = baseline(st, f"smtp://127.0.0.1:{outbox_port}?starttls=off", min(n, 1000))

        ids = [c["id"] for c in partner.get("/v1/dm/contacts", params={"limit": 500}).json()["contacts"]]
        offset = 500
        while len(ids) < n:
            ids += [c["id"] for c in partner.get("/v1/dm/contacts", params={"limit": 500, "offset": offset}).json()["contacts"]]
            offset += 500
        r = partner.post("/v1/dm/quick-sends", json={"template": "seasonal-picks", "contact_ids": ids})
        assert r.status_code == 201, r.text
        cid = r.json()["campaign"]["id"]
        aid = partner.post(f"/v1/dm/campaigns/{cid}/submit").json()["approval"]["id"]
        assert http.post(f"/v1/dm/brand/approvals/{aid}/approve").status_code == 200

        from sqlalchemy import text

        async def count_sent(cp: Any) -> tuple[int, int]:
            async with cp.engine.connect() as c:
                row = (await c.execute(text(
                    "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'sent' AND "
                    "links::text LIKE '%recommendation%') FROM dm_sends WHERE campaign_id = :c"), {"c": cid})).one()
            return int(row[0]), int(row[1])

        say("starting the mailer…")
        base_outbox_cpu = (st.cpu("outbox") - outbox_cpu0) / min(n, 1000) * 1e6
        st.spawn("mailer", [*run("mailer", "engine.cli"), "mailer", "--loglevel", "warning"], st._env())
        # started (it prints its relay when it is wired; on a loaded machine its imports alone
        # can take seconds, which the idle figure must not count), then let it join its
        # consumer groups before the clock starts
        ready_by = time.monotonic() + 120
        while "mailer: relay" not in (st.dir / "mailer.log").read_text(errors="replace"):
            st.check_alive("mailer")
            assert time.monotonic() < ready_by, "the mailer did not start in 120 s"
            time.sleep(0.2)
        time.sleep(3.0)
        idle0 = st.cpu("mailer")
        time.sleep(2.0)
        idle_ms_s = (st.cpu("mailer") - idle0) / 2.0 * 1000  # its fixed cost: sweeps, consumers' polls
        mailer_cpu0, outbox_cpu0 = st.cpu("mailer"), st.cpu("outbox")
        load_before = loadavg()
        t0 = time.perf_counter()
        assert partner.post(f"/v1/dm/campaigns/{cid}/send").status_code == 200
        first_at = None
        while True:
            sent, with_reco = asyncio.run(db(url, count_sent))
            if sent and first_at is None:
                first_at = time.perf_counter()
            if sent >= n:
                break
            st.check_alive("mailer", "api", "worker")
            assert time.perf_counter() - t0 < 600, f"only {sent}/{n} sent in 10 minutes"
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        mailer_cpu = (st.cpu("mailer") - mailer_cpu0) / n * 1e6
        outbox_cpu = (st.cpu("outbox") - outbox_cpu0) / n * 1e6
        load_during = loadavg()
        rate = n / elapsed
        steady = (n - 1) / (time.perf_counter() - first_at) if first_at else rate
        say(f"mailer: {n} messages in {elapsed:.1f}s = {rate:.0f}/s ({with_reco} with recommendations)")

        # click -> affinity round trip
        async def reco_links(cp: Any) -> list[tuple[str, int, str, str]]:
            async with cp.engine.connect() as c:
                rows = (await c.execute(text(
                    "SELECT s.id, s.links, ct.user_id FROM dm_sends s JOIN dm_contacts ct ON ct.id = s.contact_id "
                    "WHERE s.campaign_id = :c ORDER BY s.id LIMIT :n"), {"c": cid, "n": args.clicks})).all()
            out = []
            for sid, links, user in rows:
                lk = next((x for x in links if x["kind"] == "recommendation" and x.get("item")), None)
                if lk:
                    out.append((sid, lk["index"], lk["item"]["categories"][0], user))
            return out

        from engine.logic.dm.sending import TokenSigner, TrackingUrls

        signer = TokenSigner([asyncio.run(db(url, lambda cp: cp.secret("tracking"))).encode()])
        urls = TrackingUrls(st.base_url, signer)
        trips: list[float] = []
        for sid, index, category, user in asyncio.run(db(url, reco_links)):
            before = {a["key"]: a["score"] for a in http.get(f"/v1/profiles/{user}").json()["affinities"]["category"]}
            t = time.perf_counter()
            r = httpx.get(urls.click(sid, index), headers={"User-Agent": BROWSER}, timeout=10)
            assert r.status_code == 302, r.text
            while True:
                now = {a["key"]: a["score"] for a in http.get(f"/v1/profiles/{user}").json()["affinities"]["category"]}
                if now.get(category, 0) > before.get(category, 0) + 1e-9:
                    trips.append(time.perf_counter() - t)
                    break
                assert time.perf_counter() - t < 30, "a click did not reach the profile in 30 s"
                time.sleep(0.01)
        p50, p99 = quantile(trips, 0.5) * 1000, quantile(trips, 0.99) * 1000
        load = loadavg()
        if args.profile:
            for name in ("mailer", "outbox"):
                st.stop_proc(name)  # SIGTERM: a clean exit, so cProfile writes its file
                report(name, st.dir / f"{name}.prof")
        print(f"load average {load:.1f}{' (' + busy_note() + ')' if busy_note() else ''}; "
              f"{load_before:.1f} when the send began, {load_during:.1f} when it ended")
        print(f"baseline compose + SMTP hand-over, one connection: {base_rate:.0f} messages/s, "
              f"{base_cpu:.0f} µs CPU/message in the sender, {base_outbox_cpu:.0f} in the outbox")
        print(f"kairos mailer, claim -> recommendations -> render -> SMTP -> mark sent: {rate:.0f} messages/s "
              f"over {n} ({steady:.0f}/s after the first), {with_reco} of {n} with per-recipient recommendations "
              f"(target >= 200/s); ratio to the baseline {rate / base_rate:.2f}")
        print(f"CPU per message: mailer {mailer_cpu:.0f} µs, outbox {outbox_cpu:.0f} µs; the mailer idle: "
              f"{idle_ms_s:.0f} ms CPU/s ({idle_ms_s * 1000 / max(rate, 1e-9):.0f} µs of each message at this rate)"
              f"{' (under cProfile: inflated)' if args.profile else ''}")
        print(f"e-mail click -> affinity visible: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(trips)} clicks")
        json_line({"bench": "mail", "messages": n, "messages_per_s": round(rate, 1),
                   "steady_messages_per_s": round(steady, 1), "with_recommendations": with_reco,
                   "baseline_messages_per_s": round(base_rate, 1), "ratio_vs_baseline": round(rate / base_rate, 3),
                   "cpu_us_per_message": {"mailer": round(mailer_cpu), "outbox": round(outbox_cpu),
                                          "baseline_sender": round(base_cpu), "baseline_outbox": round(base_outbox_cpu),
                                          "mailer_idle_ms_per_s": round(idle_ms_s, 1)},
                   "click_to_affinity_ms": {"p50": round(p50, 1), "p99": round(p99, 1), "n": len(trips)},
                   "load": round(load, 2), "load_send": [round(load_before, 2), round(load_during, 2)],
                   "profiled": args.profile, "target_messages_per_s": 200})


def report(name: str, path: Path, top: int = 22) -> None:
    """The functions that took the most own time and the most cumulative time in a profile."""
    import io
    import pstats

    if not path.exists():
        say(f"no profile of the {name} was written")
        return
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats(order).print_stats(top)
        body = buf.getvalue()
        print(f"--- {name}: top {top} by {order} ---")
        print(body[body.find("   ncalls"):].rstrip())


if __name__ == "__main__":
    run_main(main)
