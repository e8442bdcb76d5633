"""A route whose Redis call fails answers 503 + Retry-After with a JSON error (engine/api.py)."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from redis.exceptions import BusyLoadingError, ConnectionError, RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.api import create_app, store_unavailable
from engine.settings import Settings
from tests.unit.aio import run


class _Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


def _get(app: Starlette, path: str) -> _Answer:
    """One GET through the ASGI app, as a server hands it (no HTTP client needed)."""
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": [(b"host", b"127.0.0.1")], "root_path": "",
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                 "asgi": {"version": "3.0"}, "http_version": "1.1"}
        with contextlib.suppress(Exception):  # Starlette re-raises after sending its 500
            await app(scope, receive, send)

    run(call())
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return _Answer(start["status"], headers, body)


def _app(exc: Exception) -> Starlette:
    async def read(request: Request) -> Response:
        raise exc

    return Starlette(routes=[Route("/read", read)],
                     exception_handlers={RedisError: store_unavailable})


def test_a_redis_error_answers_503_json_with_retry_after() -> None:
    for exc in (ConnectionError("Connection refused"),
                BusyLoadingError("Redis is loading the dataset in memory")):
        r = _get(_app(exc), "/read")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["retry-after"]) > 0
        body = r.json()
        assert body["field"] == "store" and body["detail"] == type(exc).__name__
        assert "Connection refused" not in r.text  # the server's own message stays inside


def test_other_errors_are_not_taken_for_the_store() -> None:
    r = _get(_app(ValueError("bug")), "/read")
    assert r.status_code == 500


def test_the_engine_app_registers_the_handler() -> None:
    app = create_app(Settings(), "redis://127.0.0.1:1", "127.0.0.1:1")
    assert app.exception_handlers[RedisError] is store_unavailable
