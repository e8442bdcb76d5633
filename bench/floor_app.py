"""The floor of `bench/decide.py`: a minimal ASGI app that does what any decision endpoint
must do at least — read the body, parse the same JSON, make one Redis pipeline round trip
for the visitor (alias, profile, campaign state, session) — and answers a small JSON.
It runs under the same uvicorn settings as `kairos api`:

    python bench/floor_app.py --port 8100 --redis redis://127.0.0.1:6379/0 [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.store import keys  # noqa: E402

STATE: dict[str, Any] = {}
_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                import os

                import redis.asyncio as aioredis

                STATE["r"] = aioredis.Redis.from_url(os.environ["FLOOR_REDIS_URL"], max_connections=64)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await STATE["r"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        await _answer(send, b'{"status":"ok"}')
        return
    chunks = []
    more = True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    doc = orjson.loads(b"".join(chunks))
    vid = doc["visitor_id"]
    pid = keys.visitor_pid(vid)
    pipe = STATE["r"].pipeline(transaction=False)
    pipe.get(keys.alias(vid))
    pipe.get(keys.profile(pid))
    pipe.hgetall(keys.campaign_state(pid))
    pipe.hgetall(keys.campaign_session(pid))
    _, blob, _, _ = await pipe.execute()
    await _answer(send, orjson.dumps({"visitor_id": vid, "decisions": [], "bytes": len(blob or b"")}))


async def _answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import os

    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    os.environ["FLOOR_REDIS_URL"] = a.redis
    # the same uvicorn settings as engine.cli.cmd_api
    uvicorn.run("floor_app:app", app_dir=str(Path(__file__).parent), host="127.0.0.1", port=a.port,
                workers=a.workers, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", timeout_graceful_shutdown=5, lifespan="on")


if __name__ == "__main__":
    main()
