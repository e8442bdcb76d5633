"""The OpenAPI document the engine serves at /openapi.json, and a self-contained /docs page."""

from __future__ import annotations

import functools
from typing import Any

from engine.logic import events as spec
from engine.logic import segment as seg


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
            "session": {"type": ["object", "null"], "description":
                        "the current (or last) session: seq, id, start, last, open, events, age_s, "
                        "viewed, carted, bought, return_gap_s (models/session.py)"},
            "segments": {"type": "array", "items": {"type": "string"}},
            "linked_visitors": {"type": "array", "items": {"type": "string"}},
        },
    }
    components.update(_rank_schemas())
    components.update(_segment_schemas())
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
    doc["paths"].update(dm_paths())
    doc["paths"].update(_segment_paths())
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


#: The distributed-marketing API (engine/routes/dm_api.py): (method, path, summary, body).
DM_OPERATIONS: list[tuple[str, str, str, str | None]] = [
    ("get", "/v1/dm/releases", "The journeys and templates released to the caller's partner", None),
    ("get", "/v1/dm/contacts", "The partner's contacts (?q= searches name and e-mail; limit, offset)", None),
    ("post", "/v1/dm/contacts", "Add a contact {email, first_name, last_name, user_id, visitor_id, attributes}", "object"),
    ("post", "/v1/dm/contacts/import", "Import a CSV (text/csv): a report per row (added, duplicate, bad email)", "csv"),
    ("get", "/v1/dm/contacts/{contact_id}", "One contact (another partner's id answers 404)", None),
    ("get", "/v1/dm/campaigns", "The partner's campaigns", None),
    ("post", "/v1/dm/campaigns", "A campaign from a released journey {journey, name, values, contact_ids}", "object"),
    ("get", "/v1/dm/campaigns/{campaign_id}", "A campaign: members, approval, status, sends", None),
    ("put", "/v1/dm/campaigns/{campaign_id}/values", "Personalise the allowed fields {values, contact_id?}; "
     "an undeclared field answers 422; an edit supersedes an approval", "object"),
    ("post", "/v1/dm/campaigns/{campaign_id}/members", "Add the partner's contacts {contact_ids}", "object"),
    ("get", "/v1/dm/campaigns/{campaign_id}/preview", "The rendered message for a member (?contact_id=, ?template=)", None),
    ("post", "/v1/dm/campaigns/{campaign_id}/submit", "Submit for the brand's approval", None),
    ("post", "/v1/dm/campaigns/{campaign_id}/send", "Send (a quick send) or enrol the members (a journey); once", None),
    ("get", "/v1/dm/campaigns/{campaign_id}/engagement", "Per member and message: delivered, opened, clicked, bounced, unsubscribed", None),
    ("get", "/v1/dm/engagement", "The partner's engagement per message", None),
    ("post", "/v1/dm/quick-sends", "One message from a released template to contacts now {template, contact_ids, "
     "values, test}; Idempotency-Key makes a repeat send nothing", "object"),
    ("get", "/v1/dm/brand/library", "The brand's templates and journeys (config/dm) and their problems", None),
    ("get", "/v1/dm/brand/approvals", "The approval queue (?state=pending|approved|rejected|superseded|all)", None),
    ("get", "/v1/dm/brand/approvals/{approval_id}", "One approval: the partner's values beside the defaults, flagged words", None),
    ("post", "/v1/dm/brand/approvals/{approval_id}/approve", "Approve (never one's own submission: 403)", None),
    ("post", "/v1/dm/brand/approvals/{approval_id}/reject", "Reject {reason} (a reason is required)", "object"),
    ("get", "/v1/dm/brand/releases", "Every release", None),
    ("post", "/v1/dm/brand/releases", "Release {kind: journey|template, subject, group_id | partner_id}", "object"),
    ("post", "/v1/dm/brand/releases/{release_id}/retire", "Retire a release", None),
    ("get", "/v1/dm/brand/results", "Results per journey, step, message and partner, and the totals", None),
    ("get", "/v1/dm/brand/partners", "Partners and partner groups", None),
    ("post", "/v1/dm/brand/groups", "Make or extend a partner group {name, partner_ids}", "object"),
    ("get", "/v1/dm/brand/suppressions", "The brand-wide suppression list (addresses masked without dm:contacts)", None),
    ("get", "/v1/dm/brand/contacts", "Every partner's contacts with their addresses (scope dm:contacts)", None),
]


def dm_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, body in DM_OPERATIONS:
        op: dict[str, Any] = {"summary": summary, "tags": ["distributed marketing"], "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
            "403": _err("Not the caller's to do (a partner route without a partner; a brand route)"),
            "404": _err("Not found, or not this partner's"),
        }}
        if method in ("post", "put"):
            op["responses"]["409"] = _err("Not now: pending approval, sent already")
            op["responses"]["422"] = _err("A field is wrong: problems name each one")
        if body == "object":
            op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
        elif body == "csv":
            op["requestBody"] = {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
        params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                for n in params]
        if path == "/v1/dm/quick-sends" or path == "/v1/dm/campaigns":
            op.setdefault("parameters", []).append({"name": "Idempotency-Key", "in": "header",
                                                    "schema": {"type": "string", "maxLength": 200}})
        paths.setdefault(path, {})[method] = op
    return paths


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
    "writeKey": {"type": "http", "scheme": "basic", "description":
                 "Segment's tracking API: a Kairos key (kp_… or ks_…) as the HTTP Basic user name "
                 "with an empty password, as every Segment client sends it; or, with no "
                 "Authorization header, as `writeKey` in the JSON body (analytics-swift, "
                 "analytics-kotlin). No key anywhere: 401"},
}


def _segment_schemas() -> dict[str, Any]:
    obj = {"type": "object"}
    message = {
        "type": "object",
        "description": "One Segment message (docs/segment.md has the mapping onto the event "
                       f"spec); at most {seg.MAX_MESSAGE_BYTES} bytes as JSON",
        "properties": {
            "type": {"enum": sorted(seg.MESSAGE_TYPES), "description": "required in a batch"},
            "messageId": {"type": "string", "description": "the dedupe key"},
            "anonymousId": {"type": "string", "maxLength": 128},
            "userId": {"type": "string", "maxLength": 128},
            "previousId": {"type": "string", "description": "alias"},
            "groupId": {"type": "string", "description": "group"},
            "event": {"type": "string", "maxLength": 256, "description": "track: the event's name"},
            "name": {"type": "string"}, "category": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "originalTimestamp": {"type": "string", "format": "date-time"},
            "sentAt": {"type": "string", "format": "date-time"},
            "properties": obj, "traits": obj,
            "context": {"type": "object", "description":
                        "page, device, os, app, library, locale, timezone, campaign, location; "
                        "`context.kairos`: {user_hash, zones, channel}"},
            "integrations": {"type": "object", "description": "`integrations.Kairos`: as context.kairos"},
        },
    }
    return {
        "SegmentMessage": message,
        "SegmentBatch": {"type": "object", "required": ["batch"], "properties": {
            "batch": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentMessage"},
                      "minItems": 1, "maxItems": seg.MAX_BATCH_MESSAGES},
            "sentAt": {"type": "string", "format": "date-time"},
            "writeKey": {"type": "string"}, "context": obj, "integrations": obj}},
        "SegmentResult": {"type": "object", "properties": {
            "success": {"type": "boolean"}, "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "field": {"type": "string"},
                "reason": {"type": "string"}}}},
            "decisions": {"type": "array", "items": obj,
                          "description": "when a page or screen asked for context.kairos.zones"}}},
    }


def _segment_paths() -> dict[str, Any]:
    """Segment's tracking API: the long names documented, their aliases said."""
    aliases: dict[str, list[str]] = {}
    for name, kind in seg.ENDPOINTS.items():
        aliases.setdefault(kind or "batch", []).append(name)
    out: dict[str, Any] = {}
    for kind, names in aliases.items():
        others = [f"/v1/{n}" for n in names if n != kind] + [f"/segment/v1/{n}" for n in names]
        limit = seg.body_limit(kind)
        ref = "SegmentBatch" if kind == "batch" else "SegmentMessage"
        body = {"schema": {"$ref": f"#/components/schemas/{ref}"}}
        out[f"/v1/{kind}"] = {"post": {
            "summary": ("Segment batch: many messages" if kind == "batch" else
                        f"Segment {kind} call (one message; `type` may be left out)"),
            "description": (f"Segment's HTTP Tracking API (docs/segment.md). Also at "
                            f"{', '.join(others)}. Body: JSON, `text/plain` or gzip "
                            f"(Content-Encoding), at most {limit} bytes once decompressed. "
                            "Each message is checked on its own: a bad one is reported by "
                            "index and field, the others are accepted."),
            "requestBody": {"required": True, "content": {"application/json": body,
                                                          "text/plain": body}},
            "responses": {
                "200": {"description": "At least one message accepted (`success: true`)",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/SegmentResult"}}}},
                "400": _err("Nothing usable: names the first bad field (the clients drop a 400)"),
                "401": _err("No key in the Authorization header or the body, or an unknown one"),
                "403": _err("The key's origin or scope refuses it"),
                "413": _err(f"Over {limit} bytes, or a single message over {seg.MAX_MESSAGE_BYTES}"),
                "415": _err("Another content type or encoding"),
                "429": _err("Over the key's or the visitor's rate (Retry-After)"),
                "503": _err("Broker unavailable; resend after Retry-After (messageId dedupes)"),
            }}}
    out["/v1/m"] = {"post": {"summary": "analytics-next's own counters: answered 200, dropped",
                             "responses": {"200": {"description": "ok"}}}}
    return out


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
            elif pol.body_key:
                op["security"] = [{"writeKey": []}, {"publicKey": []}, {"secretKey": []}]
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
