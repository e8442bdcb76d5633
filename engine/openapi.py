"""The OpenAPI document the engine serves at /openapi.json, and a self-contained /docs page."""

from __future__ import annotations

import functools
from typing import Any

from engine.logic import events as spec


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


@functools.cache
def openapi() -> dict[str, Any]:
    ev = spec.event_json_schema()
    components = ev["components"]
    components["Error"] = {
        "type": "object",
        "required": ["error", "field", "reason"],
        "properties": {
            "error": {"type": "string", "example": "visitor_id must be a string"},
            "field": {"type": "string", "example": "visitor_id"},
            "reason": {"type": "string", "example": "must be a string"},
        },
    }
    components["IngestResult"] = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}}}},
        },
    }
    batch = {"oneOf": [
        {"$ref": "#/components/schemas/Event"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "maxItems": spec.MAX_EVENTS_PER_REQUEST},
        {"type": "object", "required": ["events"], "properties": {"events": {
            "type": "array", "items": {"$ref": "#/components/schemas/Event"}, "maxItems": spec.MAX_EVENTS_PER_REQUEST}}},
    ]}
    score = {"type": "object", "properties": {"key": {"type": "string"}, "score": {"type": "number"},
                                              "by_type": {"type": "object", "additionalProperties": {"type": "number"}}}}
    components["Profile"] = {
        "type": "object",
        "properties": {
            "profile_id": {"type": "string"}, "visitor_id": {"type": ["string", "null"]},
            "user_id": {"type": ["string", "null"]}, "event_count": {"type": "integer"},
            "first_seen": {"type": "integer", "description": "epoch ms"},
            "last_seen": {"type": "integer", "description": "epoch ms"},
            "affinities": {"type": "object", "properties": {
                d: {"type": "array", "items": score} for d in ("category", "brand", "tag", "item")}},
            "recent_items": {"type": "array", "items": {"type": "string"}},
            "cart": {"type": "array", "items": {"type": "string"}},
            "purchased": {"type": "array", "items": {"type": "string"}},
            "segments": {"type": "array", "items": {"type": "string"}},
            "linked_visitors": {"type": "array", "items": {"type": "string"}},
        },
    }
    components.update(_rank_schemas())
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Kairos", "version": "0.1.0",
                 "description": "Real-time personalization engine: event ingest and visitor profiles."},
        "paths": {
            "/v1/events": {"post": {
                "summary": "Ingest events (one, an array, or {events: [...]}, up to 500)",
                "description": "Each event is validated on its own; the good ones are accepted even when "
                               "others are rejected. Acknowledged only after the broker has acknowledged. "
                               "Content types: application/json, text/plain (sendBeacon), application/msgpack.",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": batch}, "text/plain": {"schema": batch},
                    "application/msgpack": {"schema": batch}}},
                "responses": {
                    "200": {"description": "At least one event accepted",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}},
                    "400": _err("Nothing valid: names the first bad field"),
                    "413": _err("Body over 1 MiB or more than 500 events"),
                    "415": _err("Unknown content type"),
                    "503": _err("Broker unavailable; resend after Retry-After (dedupe by event_id)"),
                }}},
            "/v1/profiles/{visitor_id}": {"get": {
                "summary": "A visitor's (or a user's) profile with decayed affinities",
                "parameters": [
                    {"name": "visitor_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}},
                    {"name": "explain", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                ],
                "responses": {"200": {"description": "The profile", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Profile"}}}}, "404": _err("Unknown visitor")},
            }},
            **_rank_paths(),
            "/healthz": {"get": {"summary": "Process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Redis and the broker are reachable",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/v1/privacy/subjects/{subject_id}": {
                "get": {"summary": "Everything held about a visitor or user, as one document (audited)",
                        "parameters": [_subject()],
                        "responses": {"200": {"description": "The export"},
                                      "404": _err("Nothing is held about this id")}},
                "delete": {"summary": "Erase a visitor or user within seconds, with tombstones so "
                                      "events still in Kafka never bring it back (audited, idempotent)",
                           "parameters": [_subject()],
                           "responses": {"200": {"description": "What was erased"}}},
            },
        },
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
    _secure(doc)
    return doc


def _rank_schemas() -> dict[str, Any]:
    from engine.logic.rank import MAX_ACTIONS, MAX_SLOTS

    feats = {"type": "object", "description": "features: strings (categorical), numbers, "
             "booleans or lists of strings", "additionalProperties": True}
    return {
        "RankRequest": {"type": "object", "required": ["actions"], "properties": {
            "event_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_\\-:]{0,63}$",
                         "description": "Your id for this decision (generated when absent); "
                                        "rewards and activation name it"},
            "context": feats,
            "actions": {"type": "array", "minItems": 1, "maxItems": MAX_ACTIONS, "items": {
                "type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string", "maxLength": 256}, "features": feats}}},
            "excluded_actions": {"type": "array", "items": {"type": "string"}},
            "slots": {"type": "array", "minItems": 1, "maxItems": MAX_SLOTS, "items": {
                "type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string"}, "features": feats,
                    "baseline": {"type": "string", "description": "The action shown in "
                                 "apprentice mode (default: the actions in request order)"}}}},
            "defer_activation": {"type": "boolean", "description": "Learn from this "
                                    "decision only once POST /v1/rank/{event_id}/activate says "
                                    "its content was really shown"},
        }},
        "RankResponse": {"type": "object", "properties": {
            "event_id": {"type": "string"},
            "mode": {"enum": ["online", "apprentice"]},
            "reward_action_id": {"type": "string", "description": "the first slot's action"},
            "ranking": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "probability": {"type": "number"}}},
                "description": "the chosen actions, then the others by probability"},
            "slots": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "reward_action_id": {"type": "string"},
                "probability": {"type": "number", "description": "of the action shown, "
                                "given the earlier slots' choices"},
                "probabilities": {"type": "object", "additionalProperties": {"type": "number"},
                                  "description": "every action's, in this slot"}}}},
            "defer_activation": {"type": "boolean"},
            "model_version": {"type": "integer", "description": "0: the prior"},
        }},
        "Reward": {"type": "object", "required": ["value"], "properties": {
            "value": {"type": "number", "minimum": 0, "maximum": 1},
            "slot": {"type": "string", "description": "multi-slot: the slot rewarded "
                     "(absent: every slot of the event)"},
            "reward_id": {"type": "string", "description": "a retried call with the same "
                          "reward_id counts once"}}},
    }


def _rank_paths() -> dict[str, Any]:
    eid = {"name": "event_id", "in": "path", "required": True,
           "schema": {"type": "string", "maxLength": 64}}
    ref = "#/components/schemas/"
    return {
        "/v1/rank": {"post": {
            "summary": "Rank actions for a context (Rank/Reward, as Azure Personalizer's)",
            "description": "Up to 50 actions with their own features; the answer carries the "
                           "probability of every action shown, which the learner logs. Rewards "
                           "arriving within reward_window_s after the decision (or after its "
                           "activation) are learnt; none: default_reward.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": ref + "RankRequest"}}}},
            "responses": {"200": {"description": "The ranking", "content": {"application/json": {
                "schema": {"$ref": ref + "RankResponse"}}}},
                "400": _err("Names the bad field"), "413": _err("Body over 256 KiB"),
                "503": _err("The decision could not be logged; retry after Retry-After")}}},
        "/v1/rank/{event_id}/reward": {"post": {
            "summary": "The reward of a ranked event, in [0, 1]",
            "parameters": [eid],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": ref + "Reward"}}}},
            "responses": {"202": {"description": "Logged; learnt when the window closes"},
                          "400": _err("Names the bad field"),
                          "503": _err("Not logged; retry after Retry-After")}}},
        "/v1/rank/{event_id}/activate": {"post": {
            "summary": "Deferred activation: the content of this event was really shown",
            "parameters": [eid],
            "responses": {"202": {"description": "Logged"}, "400": _err("Bad event id"),
                          "503": _err("Not logged; retry after Retry-After")}}},
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "secretKey": {"type": "http", "scheme": "bearer", "description":
                  "A secret key (ks_…) for servers, with scopes; `kairos keys create secret --scope …`"},
    "publicKey": {"type": "http", "scheme": "bearer", "description":
                  "A public write key (kp_…), safe in a page or an app: events, decisions, "
                  "recommendations and the beacon, from its allowed origins only"},
    "publicKeyInUrl": {"type": "apiKey", "in": "query", "name": "key", "description":
                       "The public key as ?key=kp_… where a request cannot carry headers "
                       "(navigator.sendBeacon); secret keys are refused in URLs"},
    "session": {"type": "apiKey", "in": "cookie", "name": "kairos_session",
                "description": "A signed-in user's session (the dashboard, the admin pages); "
                               "state changes also need X-CSRF-Token"},
    "metricsToken": {"type": "http", "scheme": "bearer", "description": "KAIROS_METRICS_TOKEN"},
}


def _subject() -> dict[str, Any]:
    return {"name": "subject_id", "in": "path", "required": True,
            "schema": {"type": "string", "maxLength": 256}}


def _secure(doc: dict[str, Any]) -> None:
    """Each documented operation's `security` and a line saying who may call it, from the
    route policy table (engine/api.py POLICY)."""
    from engine.api import POLICY

    by_route = {(m, path.replace(":path", "")): pol for (m, path), pol in POLICY.items()}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            pol = by_route.get((method.upper(), path))
            if pol is None:
                continue
            if pol.open:
                op["security"] = []
            elif pol.metrics:
                op["security"] = [{"metricsToken": []}, {}]
            else:
                op["security"] = ([{"publicKey": []}, {"publicKeyInUrl": []}] if pol.public else []) + \
                    [{"secretKey": []}] + ([{"session": []}] if pol.session else [])
            op["x-kairos-policy"] = pol.describe()


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kairos API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{color-scheme:light dark;font-family:system-ui,sans-serif}
body{max-width:960px;margin:2rem auto;padding:0 1rem;line-height:1.45}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:color-mix(in srgb,currentColor 8%,transparent);padding:.8rem;border-radius:6px;overflow:auto}
.m{display:inline-block;min-width:3.5rem;font-weight:700}
section{border-top:1px solid color-mix(in srgb,currentColor 20%,transparent);padding:.5rem 0}
</style></head><body>
<h1>Kairos API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>
<div id="paths"></div><h2>Schemas</h2><div id="schemas"></div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
  let h='';
  for(const [p,ops] of Object.entries(doc.paths)) for(const [m,op] of Object.entries(ops)){
    h+='<section><h3><span class=m>'+m.toUpperCase()+'</span><code>'+esc(p)+'</code></h3><p>'+esc(op.summary||'')+'</p>';
    if(op.description) h+='<p>'+esc(op.description)+'</p>';
    h+='<ul>'+Object.entries(op.responses).map(([c,r])=>'<li><b>'+c+'</b> '+esc(r.description)+'</li>').join('')+'</ul></section>';
  }
  document.getElementById('paths').innerHTML=h;
  document.getElementById('schemas').innerHTML=Object.entries(doc.components.schemas).map(([n,s])=>
    '<h3>'+esc(n)+'</h3><pre>'+esc(JSON.stringify(s,null,2))+'</pre>').join('');
});
</script></body></html>"""
