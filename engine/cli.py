"""`kairos`: the command line. The one place that reads the environment (into Settings)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    env = dict(os.environ)
    if parent := env.get("KAIROS_SETTINGS_JSON"):
        return Settings.from_json(parent)
    s = load_settings(env, Path(args.config) if getattr(args, "config", None) else None)
    if getattr(args, "port", None):
        s = s.with_(port=args.port)
    return s


def _say(msg: str) -> None:
    print(f"kairos: {msg}", file=sys.stderr, flush=True)


# -- setup ----------------------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace) -> int:
    from engine.embedded import ensure_kafka_libs

    s = _settings(args)
    ensure_kafka_libs(s.var_dir / "kafka" / "libs", progress=_say)
    _say("the Apache Kafka broker is installed")
    _migrate(s)
    sdk = Path(__file__).resolve().parent.parent / "sdk_js"
    if (sdk / "package.json").exists() and not args.skip_js:
        _say("building the JS beacon (npm ci && npm run build)…")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=sdk, check=True)
        subprocess.run(["npm", "run", "build"], cwd=sdk, check=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    return _migrate(_settings(args))


def _migrate(s: Settings) -> int:
    """The control plane's Alembic migrations: KAIROS_DATABASE_URL, else the embedded server."""
    from engine.db import migrate

    if s.embedded_postgres:
        from engine.embedded import EmbeddedPostgres

        fresh = not (s.var_dir / "pg" / "PG_VERSION").exists()
        _say("creating the embedded PostgreSQL in var/pg (initdb, once)…" if fresh else
             "migrating the embedded PostgreSQL…")
        pg = EmbeddedPostgres(s.var_dir / "pg").start()
        try:
            migrate(pg.url)
        finally:
            pg.stop()
    else:
        _say("migrating the control-plane database (KAIROS_DATABASE_URL)…")
        migrate(s.database_url or "")
    _say("the control-plane database is at the newest schema")
    return 0


# -- up -------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    """Everything embedded, under the supervisor (engine/supervisor.py): a child that dies is
    restarted with a backoff; one that keeps dying ends the run with code 1, naming it;
    SIGTERM or Ctrl-C stops everything; no child outlives this process, even a SIGKILLed one."""
    from engine import stackfile
    from engine.embedded import (
        EmbeddedKafka,
        EmbeddedPostgres,
        EmbeddedRedis,
        ensure_kafka_libs,
    )
    from engine.logic.restarts import PROCESS, SERVER
    from engine.supervisor import Command, GaveUp, Supervisor

    s = _settings(args)
    sup = Supervisor(_say)
    code = 0

    sup.catch_signals()  # SIGTERM raises KeyboardInterrupt, as Ctrl-C does
    try:
        if s.embedded_redis:
            _say("starting Valkey…")
            r = sup.start(EmbeddedRedis(s.var_dir / "redis", maxmemory=s.redis_maxmemory,
                                        maxmemory_policy=s.redis_maxmemory_policy), SERVER)
            s = s.with_(redis_url=r.url)
        if s.embedded_kafka:
            ensure_kafka_libs(s.var_dir / "kafka" / "libs", progress=_say)
            _say("starting Apache Kafka (KRaft, one node)…")
            k = sup.start(EmbeddedKafka(s.var_dir / "kafka" / "node", s.var_dir / "kafka" / "libs",
                                        partitions=s.partitions), SERVER)
            s = s.with_(kafka_bootstrap=k.bootstrap)
        if s.embedded_postgres:
            _say("starting PostgreSQL (the control plane)…")
            pg = sup.start(EmbeddedPostgres(s.var_dir / "pg"), SERVER)
            s = s.with_(database_url=pg.url)
        import asyncio

        from engine.db import migrate
        from engine.eventlog import ensure_topics

        migrate(s.database_url or "")
        first = asyncio.run(_first_start(s))
        asyncio.run(ensure_topics(s.kafka_bootstrap or "", {s.events_topic: s.partitions,
                                                           s.decisions_topic: s.partitions,
                                                           s.dm_sends_topic: s.partitions}))
        stackfile.write(s.var_dir, {"api_url": s.base_url, "redis_url": s.redis_url,
                                    "kafka_bootstrap": s.kafka_bootstrap,
                                    "database_url": s.database_url})
        env = {**os.environ, "KAIROS_SETTINGS_JSON": s.to_json()}
        me = [sys.executable, "-m", "engine.cli"]
        # the processes of `kairos up`, one line each: name, command, restart policy
        sup.start(Command("worker", [*me, "worker"], env), PROCESS)
        sup.start(Command("api", [*me, "api", "--workers", str(s.api_workers)], env), PROCESS)
        sup.start(Command("learner", [*me, "learner"], env), PROCESS)  # the learning loop
        if s.embedded_outbox:  # distributed-marketing mail stops in var/mail (the Outbox page)
            sup.start(Command("outbox", [sys.executable, "-m", "engine.mail.outbox", "--dir",
                                         str(s.outbox_dir), "--port", str(s.outbox_port)], env),
                      PROCESS)
        sup.start(Command("mailer", [*me, "mailer"], env), PROCESS)
        base = s.base_url
        _wait_http(f"http://{s.host}:{s.port}/healthz", 60, sup.poll)
        login = (f"    sign in    {base}/login/once/{first['login_token']}\n"
                 f"               (one-time link for {first['admin_email']}; `kairos users passwd "
                 f"{first['admin_email']}` sets a password)\n") if first.get("login_token") else ""
        print(
            "\n  Kairos is running\n"
            f"    demo shop  {base}/demo\n"
            f"    dashboard  {base}/dashboard\n"
            f"{login}"
            f"{_dm_logins(base, first)}"
            f"    API        {base}/v1/events   (docs {base}/docs)\n"
            f"    keys       kairos keys create secret --scope events:write,profiles:read\n"
            f"    health     {base}/readyz   metrics {base}/metrics\n"
            f"    Redis      {s.redis_url}\n"
            f"    Kafka      {s.kafka_bootstrap}\n"
            f"    PostgreSQL {_hide_password(s.database_url or '')}\n"
            f"    supervised {', '.join(sup.names())}: restarted when they die\n"
            f"    mail       {'outbox ' + s.relay_url + ' -> ' + str(s.outbox_dir) if s.embedded_outbox else _hide_password(s.relay_url)}\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        sup.watch()
    except KeyboardInterrupt:
        pass
    except GaveUp as exc:
        _say(f"{exc}; stopping everything")
        code = 1
    finally:
        sup.shutdown()  # "stopping…": the processes, then the servers; within 30 s
        stackfile.remove(s.var_dir)
    return code


FIRST_ADMIN = "admin@kairos.local"


async def _first_start(s: Settings) -> dict[str, object]:
    """The first admin and the demo shop's key on a fresh control plane; a one-time sign-in
    link for the first admin at every start."""
    from engine.db import new_engine
    from engine.db.control import ControlPlane
    from engine.flows.admin import seed_first_start
    from engine.flows.dm.seed import seed_demo
    from engine.services import DEMO_KEY_SECRET, own_origins

    cp = ControlPlane(new_engine(s.database_url or "", pool_size=1))
    try:
        made = await seed_first_start(cp, admin_email=FIRST_ADMIN, demo_origins=own_origins(s),
                                      demo_secret_name=DEMO_KEY_SECRET)
        made.update(await seed_demo(cp))
        return made
    finally:
        await cp.close()


def _dm_logins(base: str, first: dict[str, object]) -> str:
    """The demo brand's one-time sign-in links (distributed marketing)."""
    logins = first.get("logins") or []
    if not logins:
        return ""
    lines = ["    portal     distributed marketing, one-time sign-in links (24 h):\n"]
    for who, email, token in logins:  # type: ignore[attr-defined]
        lines.append(f"      {who:<22} {base}/login/once/{token}  ({email})\n")
    lines.append(f"               send a mail at {base}/portal/quick, read it at {base}/portal/outbox\n")
    return "".join(lines)


def _hide_password(url: str) -> str:
    import re

    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def _wait_http(url: str, timeout: float, poll: Callable[[], None]) -> None:
    """Until `url` answers 200; `poll` meanwhile (the supervisor's: it restarts a child that
    died, or raises when one is given up)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"kairos: {url} did not answer within {timeout:.0f}s")


# -- api ------------------------------------------------------------------------------------
def _resolved(s: Settings, *, database: bool = False) -> Settings:
    if not s.redis_url or not s.kafka_bootstrap or (database and not s.database_url):
        need = "KAIROS_REDIS_URL, KAIROS_KAFKA_BOOTSTRAP" + (" and KAIROS_DATABASE_URL" if database else "")
        raise SystemExit(f"kairos: set {need} (or use `kairos up`, which starts them)")
    return s


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    s = _resolved(_settings(args), database=True)
    workers = args.workers or s.api_workers
    os.environ["KAIROS_SETTINGS_JSON"] = s.to_json()
    if workers > 1:
        mdir = Path(tempfile.mkdtemp(prefix="kairos-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    uvicorn.run(
        "engine.api:app_from_env", factory=True, host=s.host, port=s.port, workers=workers,
        log_level="warning", access_log=False, loop="uvloop", http="httptools",
        timeout_graceful_shutdown=5,
    )
    return 0


# -- worker ---------------------------------------------------------------------------------
def _wait_for_broker(bootstrap: str) -> None:
    """Block until a broker answers: a worker started during an outage waits, it does not die."""
    import socket

    delay, said = 0.2, False
    while True:
        for hostport in bootstrap.split(","):
            host, _, port = hostport.strip().rpartition(":")
            with contextlib.suppress(OSError), socket.create_connection((host or "127.0.0.1", int(port)), 2):
                return
        if not said:
            _say(f"waiting for the Kafka broker at {bootstrap}…")
            said = True
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def cmd_worker(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.app import create_app

    s = _resolved(_settings(args))
    assert s.kafka_bootstrap and s.redis_url
    _wait_for_broker(s.kafka_bootstrap)
    app = create_app(s, s.kafka_bootstrap, s.redis_url)
    worker = Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


# -- learner --------------------------------------------------------------------------------
def cmd_learner(args: argparse.Namespace) -> int:
    """The one process that learns the campaigns' bandits (streams/learner.py)."""
    import logging

    from streams.learner import run

    s = _resolved(_settings(args))
    assert s.kafka_bootstrap and s.redis_url
    logging.basicConfig(level=getattr(logging, args.loglevel.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _wait_for_broker(s.kafka_bootstrap)
    return run(s, s.redis_url, s.kafka_bootstrap)


# -- evaluate -------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Off-policy evaluation of a log file (JSON lines with arm, probability, reward) or of a
    learning campaign's logged decisions; a table, then one JSON line."""
    import asyncio
    import json

    from engine.logic.decisions.evaluation import (
        Candidate,
        bandit_candidate,
        candidates_for,
        evaluate_log,
    )

    s = _settings(args)
    extra: dict[str, Candidate] = {}
    for spec_ in args.candidate or []:
        name, _, dist = spec_.partition("=")
        try:
            extra[name] = {a: float(p) for a, _, p in (x.partition(":") for x in dist.split(","))}
        except ValueError:
            print(f"kairos evaluate: --candidate {spec_!r} must be NAME=ARM:P,ARM:P", file=sys.stderr)
            return 2
    bandit = None
    if args.campaign:
        from engine import stackfile
        from engine.logic.decisions.config import ConfigError, load_config
        from engine.logic.decisions.policy import restore_model
        from engine.store import keys
        from engine.store.learning import ModelStore
        from engine.store.profiles import new_client

        try:
            campaign = load_config(s.config_dir).campaigns.get(args.campaign)
        except ConfigError as exc:
            print(f"kairos evaluate: the configuration is invalid:\n{exc}", file=sys.stderr)
            return 1
        if campaign is None or not campaign.learns:
            print(f"kairos evaluate: {args.campaign!r} is not a learning campaign of "
                  f"{s.config_dir}", file=sys.stderr)
            return 2
        url = s.redis_url or (stackfile.read(s.var_dir) or {}).get("redis_url")
        if not url:
            print("kairos evaluate --campaign: needs KAIROS_REDIS_URL (or a running `kairos up`)",
                  file=sys.stderr)
            return 2

        async def read() -> tuple[list[dict[str, object]], bytes | None]:
            client = new_client(str(url))
            try:
                rows = await ModelStore(client, s.group_id).logged(args.campaign, args.last)
                return rows, await client.get(keys.model(s.group_id, args.campaign))
            finally:
                await client.aclose()

        rows, blob = asyncio.run(read())
        arms = [v.id for v in campaign.variants]
        control = campaign.control_percent / 100.0
        weights = dict(campaign.weights)
        bandit = bandit_candidate(restore_model(campaign.policy, blob), arms)
    elif args.file:
        with open(args.file, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()][-args.last:]
        arms = sorted({str(r["arm"]) for r in rows})
        control = args.control_share
        weights = dict.fromkeys(arms, 1.0)
    else:
        print("kairos evaluate: give a FILE or --campaign ID", file=sys.stderr)
        return 2
    cands = {**candidates_for(arms, weights, bandit, rows), **extra}
    doc = evaluate_log(rows, arms, control, cands, args.bootstrap, args.seed)
    print(f"{doc['rows']} rows over {arms}; traffic "
          + ", ".join(f"{a} {x:.1%}" for a, x in doc["traffic"].items()))
    print(f"{'policy':14s} {'IPS':>8s} {'SNIPS':>8s} {'95% CI (SNIPS)':>20s} {'DR':>8s} {'ESS':>8s}")
    for name, p in doc["policies"].items():
        sn = p["snips"]
        ci = f"[{sn['ci'][0]:.4f}, {sn['ci'][1]:.4f}]"
        print(f"{name:14s} {p['ips']['value']:8.4f} {sn['value']:8.4f} {ci:>20s} "
              f"{p['dr']['value']:8.4f} {sn['ess']:8.0f}")
    if "replay" in doc:
        r = doc["replay"]
        print(f"replay ({r['policy']}): {r['value']:.4f} over {r['matched']} matched rows"
              + ("" if r["valid"] else " (not valid: the log is not uniformly random)"))
    print(json.dumps(doc))
    return 0


# -- mailer ---------------------------------------------------------------------------------
def cmd_mailer(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from engine.flows.dm.mailer import serve

    s = _resolved(_settings(args), database=True)
    assert s.kafka_bootstrap
    _wait_for_broker(s.kafka_bootstrap)
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(s, stop)

    asyncio.run(main())
    return 0


# -- replay ---------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from streams.replay import replay

    s = _settings(args)
    return replay(s, args)


# -- check-config ---------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    from engine.configcheck import check_all

    try:
        s = _settings(args)
    except SettingsError as exc:
        print(f"error: {exc}")
        return 1
    problems = check_all(s.config_dir)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {s.config_dir}")
        return 1
    print(f"{s.config_dir}: configuration is valid")
    return 0


# -- preview --------------------------------------------------------------------------------
def cmd_preview(args: argparse.Namespace) -> int:
    from engine.flows.preview import preview
    from engine.logic.decisions.config import ConfigError
    from engine.logic.preview import PreviewError, parse_context

    s = _settings(args)
    try:
        print(preview(s, args.campaign, args.visitor, args.variant, parse_context(args.context)))
    except ConfigError as exc:
        print(f"kairos: the decision configuration is invalid:\n{exc}", file=sys.stderr)
        return 1
    except PreviewError as exc:
        print(f"kairos: {exc}", file=sys.stderr)
        return 1
    return 0


# -- catalog --------------------------------------------------------------------------------
def cmd_catalog(args: argparse.Namespace) -> int:
    import asyncio
    import json
    from pathlib import Path

    from tqdm import tqdm

    from engine.flows.catalog import load_feed, rees46_records
    from engine.logic.catalog import count_rows, iter_feed
    from engine.store.catalog import CatalogStore
    from engine.store.profiles import new_client

    s = _settings(args)
    if args.action == "demo":
        source = Path(args.file or s.demo_catalog)
        if not source.is_absolute():
            source = Path(__file__).resolve().parent.parent / source
        records = rees46_records(source)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r) + "\n")
            print(f"wrote {len(records)} items to {args.out}")
            return 0
        rows: list[tuple[int, object]] = list(enumerate(records, start=1))
        total = len(rows)
    else:
        if not args.file:
            print("kairos catalog load: a FILE is required", file=sys.stderr)
            return 2
        path = Path(args.file)
        if not path.exists():
            print(f"kairos catalog load: {path} does not exist", file=sys.stderr)
            return 2
        rows, total = iter_feed(path), count_rows(path)  # type: ignore[assignment]
    if not s.redis_url:
        print("kairos catalog: needs KAIROS_REDIS_URL (or a running `kairos up`)", file=sys.stderr)
        return 2

    async def run() -> tuple[int, list[str]]:
        client = new_client(s.redis_url)  # type: ignore[arg-type]
        try:
            with tqdm(total=total, unit="item", disable=args.quiet) as bar:
                return await load_feed(CatalogStore(client), rows, on_row=lambda: bar.update(1))
        finally:
            await client.aclose()

    written, errors = asyncio.run(run())
    for e in errors[:50]:
        print(e, file=sys.stderr)
    if len(errors) > 50:
        print(f"... and {len(errors) - 50} more", file=sys.stderr)
    print(f"{written} item(s) written, {len(errors)} row(s) rejected")
    return 1 if errors and not written else 0

# -- control plane: keys, users -----------------------------------------------------------
@contextlib.contextmanager
def _control_plane(s: Settings):  # type: ignore[no-untyped-def]
    """The control-plane database: KAIROS_DATABASE_URL, else the running `kairos up`'s
    embedded server (var/run/stack.json), else the embedded server started for this command."""
    from engine import stackfile
    from engine.db import migrate

    url = s.database_url
    started = None
    if url is None:
        info = stackfile.read(s.var_dir)
        url = info.get("database_url") if info else None
    if url is None:
        from engine.embedded import EmbeddedPostgres

        _say("no running stack found; starting the embedded PostgreSQL for this command…")
        started = EmbeddedPostgres(s.var_dir / "pg").start()
        url = started.url
    try:
        migrate(url)
        yield url
    finally:
        if started is not None:
            started.stop()


def _run_control(s: Settings, fn):  # type: ignore[no-untyped-def]
    import asyncio

    from engine.db import new_engine
    from engine.db.control import ControlPlane

    with _control_plane(s) as url:
        async def go():  # type: ignore[no-untyped-def]
            cp = ControlPlane(new_engine(url, pool_size=1))
            try:
                return await fn(cp)
            finally:
                await cp.close()

        return asyncio.run(go())


def cmd_keys(args: argparse.Namespace) -> int:
    s = _settings(args)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"

    if args.action == "create":
        scopes = [x.strip() for x in (args.scope or "").split(",") if x.strip()]

        async def create(cp):  # type: ignore[no-untyped-def]
            rec, plain = await cp.create_key(args.kind, name=args.name or "", scopes=scopes,
                                             origins=args.origin or [], partner_id=args.partner,
                                             created_by=actor)
            await cp.audit(actor, "key.create", rec.id,
                           detail={"kind": rec.kind, "scopes": list(rec.scopes),
                                   "origins": list(rec.origins), "name": rec.name},
                           partner_id=rec.partner_id)
            return rec, plain

        try:
            rec, plain = _run_control(s, create)
        except ValueError as exc:
            print(f"kairos keys create: {exc}", file=sys.stderr)
            return 2
        what = ", ".join(rec.origins) if rec.kind == "public" else ", ".join(rec.scopes)
        print(f"created {rec.kind} key {rec.id}… ({what}); it is shown this once:", file=sys.stderr)
        print(plain)
        return 0
    if args.action == "list":
        recs = _run_control(s, lambda cp: cp.list_keys())
        print(f"{'prefix':<12} {'kind':<7} {'status':<8} {'name':<16} scopes / origins")
        for r in recs:
            what = ",".join(r.origins) if r.kind == "public" else ",".join(r.scopes)
            if r.partner_id:
                what += f" (partner {r.partner_id})"
            status = "revoked" if r.revoked_at else "active"
            print(f"{r.id:<12} {r.kind:<7} {status:<8} {r.name[:16]:<16} {what}")
        return 0
    if args.action == "revoke":
        prefix = args.prefix.strip().rstrip("…")[:11]

        async def revoke(cp):  # type: ignore[no-untyped-def]
            rec = await cp.revoke_key(prefix, by=actor)
            if rec is not None:
                await cp.audit(actor, "key.revoke", rec.id, partner_id=rec.partner_id)
            return rec

        rec = _run_control(s, revoke)
        if rec is None:
            print(f"kairos keys revoke: no key {prefix}", file=sys.stderr)
            return 1
        print(f"revoked {rec.id}")
        return 0
    if args.action == "identity-secret":
        print(_run_control(s, lambda cp: cp.secret("identity")))
        return 0
    return 2


def _read_password(confirm: bool) -> str:
    import getpass

    if sys.stdin.isatty():
        pw = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != pw:
            raise SystemExit("kairos: the passwords differ")
        return pw
    return sys.stdin.readline().rstrip("\n")


def cmd_users(args: argparse.Namespace) -> int:
    from engine.logic.passwords import PasswordError, hash_password

    s = _settings(args)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    if args.action == "add":
        try:
            pw_hash = hash_password(_read_password(True))
        except PasswordError as exc:
            print(f"kairos users add: the password {exc}", file=sys.stderr)
            return 2

        async def add(cp):  # type: ignore[no-untyped-def]
            u = await cp.add_user(args.email, args.role, pw_hash, partner_id=args.partner)
            await cp.audit(actor, "user.add", u.email, detail={"role": u.role},
                           partner_id=u.partner_id)
            return u

        try:
            u = _run_control(s, add)
        except ValueError as exc:
            print(f"kairos users add: {exc}", file=sys.stderr)
            return 2
        print(f"added {u.role} {u.email} ({u.id})")
        return 0
    if args.action == "list":
        for u in _run_control(s, lambda cp: cp.list_users()):
            extra = f" partner={u.partner_id}" if u.partner_id else ""
            state = " (disabled)" if u.disabled_at else ""
            print(f"{u.id:<20} {u.role:<9} {u.email}{extra}{state}")
        return 0
    if args.action == "passwd":
        try:
            pw_hash = hash_password(_read_password(True))
        except PasswordError as exc:
            print(f"kairos users passwd: the password {exc}", file=sys.stderr)
            return 2

        async def passwd(cp):  # type: ignore[no-untyped-def]
            u = await cp.user_by_email(args.email)
            if u is None:
                return None
            await cp.set_password(u.id, pw_hash)
            await cp.audit(actor, "user.password", u.email, partner_id=u.partner_id)
            return u

        if _run_control(s, passwd) is None:
            print(f"kairos users passwd: no user {args.email}", file=sys.stderr)
            return 1
        print("password changed; the user's sessions were ended")
        return 0
    if args.action == "login-link":
        from datetime import timedelta

        async def link(cp):  # type: ignore[no-untyped-def]
            u = await cp.user_by_email(args.email)
            if u is None:
                return None
            token = await cp.create_login_link(u.id, timedelta(hours=24))
            await cp.audit(actor, "user.login_link", u.email, partner_id=u.partner_id)
            return token

        token = _run_control(s, link)
        if token is None:
            print(f"kairos users login-link: no user {args.email}", file=sys.stderr)
            return 1
        print(f"{s.base_url}/login/once/{token}")
        return 0
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kairos", description="Kairos real-time personalization engine")
    parser.add_argument("--config", help="config folder (default ./config or KAIROS_CONFIG_DIR)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("setup", help="fetch the Kafka broker jars and build the JS beacon")
    p.add_argument("--skip-js", action="store_true")
    p.set_defaults(fn=cmd_setup)

    p = sub.add_parser("migrate", help="bring the control-plane database to the newest schema")
    p.set_defaults(fn=cmd_migrate)

    p = sub.add_parser("up", help="run everything: embedded Valkey and Kafka, a worker, the API")
    p.add_argument("--port", type=int)
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("api", help="run the HTTP API (needs KAIROS_REDIS_URL and KAIROS_KAFKA_BOOTSTRAP)")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=0, help="processes (default: settings api_workers)")
    p.set_defaults(fn=cmd_api)

    p = sub.add_parser("worker", help="run a stream worker (faust)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("evaluate", help="off-policy evaluation (IPS, SNIPS, DR, replay) of a log or a campaign")
    p.add_argument("file", nargs="?", help="JSON lines: arm, probability, reward")
    p.add_argument("--campaign", help="a learning campaign's logged decisions (from Redis)")
    p.add_argument("--last", type=int, default=100_000, help="the newest N rows")
    p.add_argument("--control-share", type=float, default=0.0,
                   help="FILE: the held-out share the probabilities include")
    p.add_argument("--candidate", action="append", help="NAME=ARM:P,ARM:P (repeatable)")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("learner", help="run the learner: the campaigns' bandits, from decisions and rewards")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(fn=cmd_learner)
    p = sub.add_parser("mailer", help="run a mail worker (distributed marketing: dm.sends -> SMTP)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(fn=cmd_mailer)

    p = sub.add_parser("replay", help="feed a log of events into the API or the topic")
    p.add_argument("file", help="JSON-lines in the event spec, or a Taobao / REES46 CSV")
    p.add_argument("--format", choices=["auto", "jsonl", "taobao", "rees46"], default="auto")
    p.add_argument("--to", choices=["api", "topic"], default="api")
    p.add_argument("--url", help="API base URL (default http://HOST:PORT from settings)")
    p.add_argument("--batch", type=int, default=100, help="events per request or per produce batch")
    p.add_argument("--rate", type=float, default=0, help="events/s (0 = as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="stop after N events")
    p.add_argument("--key", help="--to api: a secret key with events:write (or KAIROS_API_KEY)")
    p.add_argument("--keep-time", action="store_true",
                   help="keep the log's timestamps (default: shift them so the log ends now)")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("preview", help="print a campaign's rendered content for a visitor")
    p.add_argument("campaign", help="campaign id")
    p.add_argument("--visitor", required=True, help="visitor (or user) id whose profile to use")
    p.add_argument("--variant", help="render this variant (default: the visitor's arm)")
    p.add_argument("--context", help='page context as JSON, e.g. \'{"page_type": "home"}\'')
    p.set_defaults(fn=cmd_preview)

    p = sub.add_parser("check-config", help="validate everything under the config folder")
    p.set_defaults(fn=cmd_check_config)

    p = sub.add_parser("catalog", help="load a catalog feed (CSV or JSON-lines) or the demo catalog")
    p.add_argument("action", choices=["load", "demo"],
                   help="load FILE, or demo: the catalog built from the REES46 sample")
    p.add_argument("file", nargs="?", help="feed file (load) or REES46 CSV (demo; default: settings)")
    p.add_argument("--out", help="demo: write JSON-lines here instead of loading into Redis")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_catalog)

    p = sub.add_parser("keys", help="API keys: create public|secret, list, revoke PREFIX, identity-secret")
    ksub = p.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create", help="create a key; prints it alone on the last line")
    kc.add_argument("kind", choices=["public", "secret"])
    kc.add_argument("--origin", action="append", help="public key: an allowed origin (repeatable)")
    kc.add_argument("--scope", help="secret key: comma-separated scopes, e.g. events:write,profiles:read")
    kc.add_argument("--name", help="a name to tell the key apart")
    kc.add_argument("--partner", help="secret key: tie it to one partner (scope dm)")
    ksub.add_parser("list", help="every key: prefix, kind, status, scopes or origins")
    kr = ksub.add_parser("revoke", help="revoke a key by its prefix (every API process within 5 s)")
    kr.add_argument("prefix")
    ksub.add_parser("identity-secret", help="print the secret for user_hash = HMAC-SHA256(secret, user_id)")
    p.set_defaults(fn=cmd_keys)

    p = sub.add_parser("users", help="users: add --role ROLE EMAIL (password on stdin), list, passwd EMAIL, login-link EMAIL")
    usub = p.add_subparsers(dest="action", required=True)
    ua = usub.add_parser("add", help="add a user; the password is read from standard input")
    ua.add_argument("email")
    ua.add_argument("--role", required=True, choices=["admin", "marketer", "analyst", "partner"])
    ua.add_argument("--partner", help="the partner id of a partner user")
    usub.add_parser("list", help="every user")
    up_ = usub.add_parser("passwd", help="set a user's password (from standard input)")
    up_.add_argument("email")
    ul = usub.add_parser("login-link", help="print a one-time login link (valid 24 h)")
    ul.add_argument("email")
    p.set_defaults(fn=cmd_users)

    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except SettingsError as exc:
        print(f"kairos: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
