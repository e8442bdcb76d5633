"""The catalog API: POST /v1/catalog/items (bulk upsert), GET and DELETE /v1/catalog/items/{id}."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.flows.catalog import Catalog
from engine.logic.catalog import MAX_PER_REQUEST
from engine.logic.events import BodyError
from engine.routes import MAX_REQUEST_BYTES, error, json_response, read_body, svc

MAX_BODY_BYTES = MAX_REQUEST_BYTES


def catalog(request: Request) -> Catalog:
    return svc(request).catalog


async def post_items(request: Request) -> Response:
    try:
        body = await read_body(request, MAX_BODY_BYTES)  # measured while it streams in
    except BodyError as exc:
        return error(exc.status, exc.field, exc.reason)
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error(400, "body", f"is not valid JSON ({exc})")
    if isinstance(doc, dict):
        doc = doc.get("items", [doc] if "id" in doc else None)
    if not isinstance(doc, list) or not doc:
        return error(400, "body", "must be an item, a list of items or {\"items\": [...]}")
    if len(doc) > MAX_PER_REQUEST:
        return error(413, "items", f"must be at most {MAX_PER_REQUEST} per request")
    written, rejected = await catalog(request).upsert(doc)
    return json_response({"accepted": written, "rejected": rejected})


async def get_item(request: Request) -> Response:
    record = await catalog(request).get(request.path_params["item_id"])
    if record is None:
        return error(404, "item_id", "is not in the catalog")
    return json_response(record)


async def delete_item(request: Request) -> Response:
    if not await catalog(request).delete(request.path_params["item_id"]):
        return error(404, "item_id", "is not in the catalog")
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/catalog/items", post_items, methods=["POST"]),
        Route("/v1/catalog/items/{item_id:path}", get_item, methods=["GET"]),
        Route("/v1/catalog/items/{item_id:path}", delete_item, methods=["DELETE"]),
    ]
