"""HTTP route modules, one per capability.

Each module has `routes() -> list[BaseRoute]` and may have `async startup(svc)` and
`async shutdown(svc)`; handlers reach the shared `Services` as `request.app.state.svc`.
`engine.api.create_app` mounts the modules listed in `MODULES`, in order.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine.services import Services

JSON = "application/json"


def svc(request: Request) -> Services:
    return request.app.state.svc  # type: ignore[no-any-return]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def error(status: int, field: str, reason: str, **extra: Any) -> Response:
    body = {"error": f"{field} {reason}".strip(), "field": field, "reason": reason, **extra}
    return json_response(body, status)


MODULES = [
    "engine.routes.ingest",
    "engine.routes.profiles",
    "engine.routes.ops",
    "engine.routes.stats",
    "engine.routes.sdk",
    "engine.routes.demo",
    "engine.routes.decide",
    "engine.routes.dashboard",
    "engine.routes.catalog",
    "engine.routes.trending",
    "engine.routes.recommendations",
]
