"""The sitemap compiler: ``config/sitemap.yaml`` -> the JSON-able dict the beacon reads.

The sitemap tells the browser beacon, for one site, without any per-page code:

- which page types exist and which URL paths they match (first match wins, in file order);
- how to read the item a product page shows (schema.org JSON-LD, CSS selectors);
- which clicks (CSS selectors) and which data-layer pushes mean add_to_cart, purchase, ...;
- which content zones each page type has (zone name -> CSS selector);
- exit-intent settings.

Pure: no I/O except reading the one file in :func:`load`; :func:`compile_sitemap` takes text.
Every error names the file, the line and the field (``config/sitemap.yaml:12: page_types.product.url:
...``); all errors of a file are reported together.

The engine serves the result in front of the static beacon, see :func:`beacon_bundle` and
``sdk_js/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from engine.logic.common import Problem

__all__ = [
    "KINDS",
    "SitemapError",
    "beacon_bundle",
    "compile_sitemap",
    "served_sitemap",
    "load",
]

#: Page kinds the beacon knows; any other page type name is a custom kind.
KINDS = ("home", "category", "product", "cart", "checkout", "search", "custom")
#: Item fields a product page can declare, and whether a selector collects every match.
ITEM_FIELDS = {
    "id": False,
    "name": False,
    "brand": False,
    "price": False,
    "categories": True,
    "tags": True,
}
#: Event types the click and data-layer rules may produce (the engine's standard types).
EVENT_TYPES = (
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "search",
    "identify",
    "conversion",
    "click",
)
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: The exit-intent settings the beacon assumes when the served sitemap leaves them out
#: (sdk_js/src/exit.js EXIT_DEFAULTS, sdk_js/src/config.js).
EXIT_DEFAULTS: dict[str, Any] = {"enabled": True, "scope": "session", "min_ms": 5000, "idle_ms": 30000}
SCOPES = ("session", "page")
#: Python-only regex syntax that JavaScript's RegExp would misread.
NOT_JS = re.compile(r"\(\?P|\(\?#|\(\?>|\\[AZz]|\(\?[aiLmsux-]+[:)]|[*+?}]\+")

Path_ = tuple[str | int, ...]


class SitemapError(ValueError):
    """The sitemap is invalid; ``issues`` lists every problem found, with its line."""

    def __init__(self, issues: list[Problem]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


# --- YAML with line numbers -------------------------------------------------------------------


def _plain(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    issues: list[tuple[Path_, int, str]],
    scalars: yaml.SafeLoader,
) -> Any:
    """A composed YAML node -> plain Python values; records each path's (1-based) line."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str) or not key:
                issues.append((path, k.start_mark.line + 1, "keys must be non-empty strings"))
                continue
            if key in out:
                issues.append((path + (key,), k.start_mark.line + 1, "duplicate key"))
            out[key] = _plain(v, path + (key,), lines, issues, scalars)
            lines[path + (key,)] = k.start_mark.line + 1  # a field's line is its key's line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, path + (i,), lines, issues, scalars) for i, v in enumerate(node.value)]
    return scalars.construct_object(node)  # ints, floats, bools, null, strings: YAML's safe rules


# --- validation --------------------------------------------------------------------------------


class _Checker:
    def __init__(self, file: str, lines: dict[Path_, int]):
        self.file = file
        self.lines = lines
        self.issues: list[Problem] = []

    def line(self, path: Path_) -> int:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def err(self, path: Path_, message: str, line: int | None = None) -> None:
        field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(
            ".[", "["
        )
        self.issues.append(Problem(self.file, line or self.line(path), message, field))

    # typed getters: return the value or None (after recording an error)
    def mapping(self, v: Any, path: Path_, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(v, dict):
            self.err(path, "must be a mapping")
            return None
        for k in v:
            if k not in allowed:
                self.err(path + (k,), f"unknown field (allowed: {', '.join(allowed)})")
        return v

    def string(self, v: Any, path: Path_) -> str | None:
        if not isinstance(v, str) or not v.strip():
            self.err(path, "must be a non-empty string")
            return None
        return v.strip()

    def strings(self, v: Any, path: Path_) -> list[str] | None:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items:
            self.err(path, "must be a string or a non-empty list of strings")
            return None
        out = [self.string(x, path + (i,)) for i, x in enumerate(items)]
        return None if None in out else [x for x in out if x]

    def name(self, v: Any, path: Path_, what: str) -> str | None:
        if not isinstance(v, str) or not NAME.match(v):
            self.err(path, f"{what} must match {NAME.pattern} (lower case, digits, _)")
            return None
        return v

    def selector(self, v: Any, path: Path_) -> str | None:
        s = self.string(v, path)
        if s is None:
            return None
        if not _balanced(s) or "{" in s or "}" in s or s.endswith((",", ">", "+", "~")):
            self.err(path, f"not a valid CSS selector: {s!r}")
            return None
        return s

    def number(self, v: Any, path: Path_, lo: float, hi: float) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            self.err(path, f"must be a number from {lo:g} to {hi:g}")
            return None
        return v


def _balanced(s: str) -> bool:
    """Brackets, parentheses and quotes of a CSS selector are closed."""
    stack: list[str] = []
    quote = ""
    pairs = {")": "(", "]": "["}
    for ch in s:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            stack.append(ch)
        elif ch in ")]" and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not quote


def _glob_to_regex(pattern: str) -> str:
    """A path glob -> a JavaScript-compatible anchored regex source.

    ``*`` matches one non-empty path segment (or part of one), ``**`` anything, across segments;
    a trailing slash is optional.
    """
    out = []
    i = 0
    body = pattern.rstrip("/") or "/"
    while i < len(body):
        if body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]+")
            i += 1
        else:
            out.append(re.escape(body[i]).replace("\\/", "/"))
            i += 1
    src = "".join(out)
    return "^" + src + ("$" if src == "/" else "/?$")


def _url_patterns(c: _Checker, pt: dict[str, Any], path: Path_) -> list[str]:
    out: list[str] = []
    if "url" in pt:
        for i, g in enumerate(c.strings(pt["url"], path + ("url",)) or []):
            p = path + ("url",) + ((i,) if isinstance(pt["url"], list) else ())
            if not g.startswith("/"):
                c.err(p, f"a URL pattern is a path starting with '/': {g!r}")
            elif "?" in g or "#" in g:
                c.err(p, "URL patterns match the path only (use query_param for the query)")
            else:
                out.append(_glob_to_regex(g))
    if "url_regex" in pt:
        for i, r in enumerate(c.strings(pt["url_regex"], path + ("url_regex",)) or []):
            p = path + ("url_regex",) + ((i,) if isinstance(pt["url_regex"], list) else ())
            try:
                re.compile(r)
            except re.error as e:
                c.err(p, f"invalid regex: {e}")
                continue
            if NOT_JS.search(r):
                c.err(
                    p,
                    "uses regex syntax JavaScript doesn't support (named (?P, inline flags, \\A, \\Z, atomic or possessive)",
                )
                continue
            out.append(r)
    if "url" not in pt and "url_regex" not in pt:
        c.err(path, "needs url (path patterns) or url_regex")
    return out


def _item(c: _Checker, v: Any, path: Path_) -> dict[str, Any] | None:
    m = c.mapping(v, path, ("json_ld", "selectors"))
    if m is None:
        return None
    json_ld = m.get("json_ld", False)
    if not isinstance(json_ld, bool):
        c.err(path + ("json_ld",), "must be true or false")
    fields: dict[str, Any] = {}
    sels = m.get("selectors", {})
    if c.mapping(sels, path + ("selectors",), tuple(ITEM_FIELDS)) is not None:
        for k, raw in sels.items():
            if k not in ITEM_FIELDS:
                continue
            s = c.string(raw, path + ("selectors", k))
            if s is None:
                continue
            # "css selector @attribute" reads an attribute instead of the text
            sel, _, attr = s.partition(" @") if " @" in s else (s, "", "")
            if s.startswith("@"):
                c.err(path + ("selectors", k), "a selector comes before @attribute")
                continue
            checked = c.selector(sel, path + ("selectors", k))
            if checked is None:
                continue
            f: dict[str, Any] = {"sel": checked}
            if attr:
                if not re.match(r"^[A-Za-z_:][-A-Za-z0-9_:.]*$", attr.strip()):
                    c.err(path + ("selectors", k), f"not an attribute name: {attr!r}")
                    continue
                f["attr"] = attr.strip()
            if ITEM_FIELDS[k]:
                f["all"] = True
            fields[k] = f
    if not json_ld and not fields:
        c.err(path, "needs json_ld: true or selectors")
    return {"json_ld": json_ld is True, "fields": fields}


def _page_types(c: _Checker, v: Any) -> list[dict[str, Any]]:
    path: Path_ = ("page_types",)
    if not isinstance(v, dict) or not v:
        c.err(path, "must be a non-empty mapping of page type name -> rules")
        return []
    out = []
    for name, raw in v.items():
        p = path + (name,)
        if c.name(name, p, "a page type name") is None:
            continue
        pt = c.mapping(raw, p, ("kind", "url", "url_regex", "item", "zones", "query_param"))
        if pt is None:
            continue
        kind = pt.get("kind", name if name in KINDS else "custom")
        if kind not in KINDS:
            c.err(p + ("kind",), f"must be one of {', '.join(KINDS)}")
        entry: dict[str, Any] = {"name": name, "kind": kind, "match": _url_patterns(c, pt, p)}
        if "item" in pt:
            item = _item(c, pt["item"], p + ("item",))
            if item is not None:
                entry["item"] = item
        elif kind == "product":
            entry["item"] = {"json_ld": True, "fields": {}}
        if "query_param" in pt:
            qp = c.string(pt["query_param"], p + ("query_param",))
            if qp:
                entry["query_param"] = qp
        elif kind == "search":
            entry["query_param"] = "q"
        zones: dict[str, str] = {}
        raw_zones = pt.get("zones", {})
        if not isinstance(raw_zones, dict):
            c.err(p + ("zones",), "must be a mapping of zone name -> CSS selector")
        else:
            for z, sel in raw_zones.items():
                zp = p + ("zones", z)
                if c.name(z, zp, "a zone name") is None:
                    continue
                if z == "exit_intent":
                    c.err(zp, "exit_intent is the popup zone; configure it under exit_intent:")
                    continue
                s = c.selector(sel, zp)
                if s:
                    zones[z] = s
        entry["zones"] = zones
        out.append(entry)
    return out


def _events(c: _Checker, v: Any, page_types: set[str]) -> list[dict[str, Any]]:
    path: Path_ = ("events",)
    if not isinstance(v, list):
        c.err(path, "must be a list of {type, click, page_types?}")
        return []
    out = []
    for i, raw in enumerate(v):
        p = path + (i,)
        r = c.mapping(raw, p, ("type", "click", "page_types"))
        if r is None:
            continue
        t = r.get("type")
        if t not in EVENT_TYPES:
            c.err(p + ("type",), f"must be one of {', '.join(EVENT_TYPES)}")
            continue
        if "click" not in r:
            c.err(p, "needs click (a CSS selector)")
            continue
        sel = c.selector(r["click"], p + ("click",))
        if sel is None:
            continue
        rule: dict[str, Any] = {"type": t, "click": sel}
        if "page_types" in r:
            pts = _page_type_refs(c, r["page_types"], p + ("page_types",), page_types)
            if pts is not None:
                rule["page_types"] = pts
        out.append(rule)
    return out


def _page_type_refs(c: _Checker, v: Any, path: Path_, known: set[str]) -> list[str] | None:
    names = c.strings(v, path)
    if names is None:
        return None
    for i, n in enumerate(names):
        if n not in known:
            c.err(path + ((i,) if isinstance(v, list) else ()), f"unknown page type {n!r}")
    return names


def _data_layer(c: _Checker, v: Any) -> dict[str, Any] | None:
    path: Path_ = ("data_layer",)
    m = c.mapping(v, path, ("name", "events"))
    if m is None:
        return None
    name = m.get("name", "dataLayer")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z_$][A-Za-z0-9_$]*$", name):
        c.err(
            path + ("name",), "must be a JavaScript identifier (the global array, e.g. dataLayer)"
        )
    events = m.get("events")
    out: dict[str, str] = {}
    if not isinstance(events, dict) or not events:
        c.err(path + ("events",), "must map data-layer event names to Kairos event types")
    else:
        for k, t in events.items():
            if t not in EVENT_TYPES:
                c.err(path + ("events", k), f"must be one of {', '.join(EVENT_TYPES)}")
            else:
                out[k] = t
    return {"name": name, "events": out}


def _exit_intent(c: _Checker, v: Any, page_types: set[str]) -> dict[str, Any]:
    path: Path_ = ("exit_intent",)
    m = c.mapping(v, path, ("enabled", "scope", "min_seconds", "idle_seconds", "page_types"))
    out: dict[str, Any] = dict(EXIT_DEFAULTS)
    if m is None:
        return out
    if "enabled" in m:
        if not isinstance(m["enabled"], bool):
            c.err(path + ("enabled",), "must be true or false")
        else:
            out["enabled"] = m["enabled"]
    if "scope" in m:
        if m["scope"] not in SCOPES:
            c.err(path + ("scope",), f"must be one of {', '.join(SCOPES)}")
        else:
            out["scope"] = m["scope"]
    for key, dst, hi in (("min_seconds", "min_ms", 600), ("idle_seconds", "idle_ms", 3600)):
        if key in m:
            n = c.number(m[key], path + (key,), 0, hi)
            if n is not None:
                out[dst] = int(n * 1000)
    if "page_types" in m:
        pts = _page_type_refs(c, m["page_types"], path + ("page_types",), page_types)
        if pts is not None:
            out["page_types"] = pts
    return out


# --- entry points -------------------------------------------------------------------------------


def compile_sitemap(text: str, file: str = "config/sitemap.yaml") -> dict[str, Any]:
    """Validate sitemap YAML text; return the compiled, JSON-able sitemap or raise SitemapError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(e, "problem", None) or str(e)
        raise SitemapError([Problem(file, line, field="", message=f"YAML syntax: {problem}")]) from None
    if node is None:
        raise SitemapError([Problem(file, 1, field="", message="the file is empty")])
    lines: dict[Path_, int] = {}
    raw_issues: list[tuple[Path_, int, str]] = []
    try:
        data = _plain(node, (), lines, raw_issues, yaml.SafeLoader(""))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SitemapError([Problem(file, mark.line + 1 if mark else 1, field="", message=str(e))]) from None
    c = _Checker(file, lines)
    for path, line, msg in raw_issues:
        c.err(path, msg, line)
    top = c.mapping(data, (), ("version", "page_types", "events", "data_layer", "exit_intent"))
    if top is None:
        raise SitemapError(c.issues)
    if top.get("version", 1) != 1:
        c.err(("version",), "only version 1 is supported")
    if "page_types" not in top:
        c.err((), "page_types is required")
    page_types = _page_types(c, top.get("page_types")) if "page_types" in top else []
    names = {p["name"] for p in page_types} | (
        set(top["page_types"]) if isinstance(top.get("page_types"), dict) else set()
    )
    out: dict[str, Any] = {
        "version": 1,
        "page_types": page_types,
        "events": _events(c, top["events"], names) if "events" in top else [],
        "exit_intent": _exit_intent(c, top.get("exit_intent", {}), names),
    }
    if "data_layer" in top:
        out["data_layer"] = _data_layer(c, top["data_layer"])
    if c.issues:
        raise SitemapError(c.issues)
    return out


def load(path: str | Path) -> dict[str, Any]:
    """Read and compile a sitemap file; errors name this file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SitemapError([Problem(str(p), 1, f"cannot read: {e.strerror}", field="")]) from None
    return compile_sitemap(text, str(p))


def served_sitemap(sitemap: dict[str, Any]) -> dict[str, Any]:
    """What the beacon reads of a compiled sitemap: without what it never looks at (`version`,
    each page type's `kind`, empty `zones`) nor the exit-intent settings equal to the beacon's
    own defaults (`EXIT_DEFAULTS`), so that every site downloads fewer bytes. Item selectors go
    back to their YAML form, ``"css selector"`` or ``"css selector @attribute"`` (the beacon
    knows that categories and tags collect every match, as `ITEM_FIELDS` says)."""
    out = {k: v for k, v in sitemap.items() if k != "version"}
    served: dict[str, Callable[[Any], Any]] = {"item": _served_item, "match": _served_match}
    out["page_types"] = [{k: served[k](v) if k in served else v for k, v in pt.items()
                          if k != "kind" and (k != "zones" or v)}
                         for pt in sitemap.get("page_types", [])]
    if isinstance(ex := sitemap.get("exit_intent"), dict):
        out["exit_intent"] = {k: v for k, v in ex.items()
                              if k not in EXIT_DEFAULTS or EXIT_DEFAULTS[k] != v}
    return out


#: A literal path prefix (what a glob such as /demo/c/** starts with once compiled).
_LITERAL = re.compile(r"(?:/(?:[A-Za-z0-9_]|\\[-.~])+)+")


def _served_match(patterns: list[str]) -> list[str]:
    """URL patterns with the same matches in fewer bytes: ``^/demo/c/.*/?$`` beside ``^/c/.*/?$``
    becomes ``^(/demo)?/c/.*/?$`` (the union of the two, whatever follows the prefix). Not when
    the rest has a back-reference, which the new group would renumber."""
    out = list(patterns)
    for p in patterns:
        for i in range(2, len(p)):
            rest = "^" + p[i:]
            if (p[i] == "/" and p.startswith("^") and _LITERAL.fullmatch(p[1:i]) and rest in out
                    and p in out and not re.search(r"\\[1-9k]", rest)):
                out[out.index(rest)] = f"^({p[1:i]})?{p[i:]}"
                out.remove(p)
                break
    return out


def _served_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item rule as the beacon reads it: each field ``{"sel", "attr"?, "all"?}`` as one string."""
    fields = {k: f["sel"] + (" @" + f["attr"] if f.get("attr") else "")
              for k, f in item.get("fields", {}).items()}
    return {**item, "fields": fields}


def beacon_bundle(sitemap: dict[str, Any], beacon_js: bytes) -> tuple[bytes, str]:
    """The body the engine serves at ``GET /sdk/kairos.js``, and its strong ETag.

    ``window.__kairosSitemap=<json>;`` (the `served_sitemap`) followed by the static beacon
    bytes. The JSON is ASCII-only and has ``<`` escaped, so it is safe as JavaScript source in
    any context.
    """
    js = json.dumps(served_sitemap(sitemap), separators=(",", ":"), ensure_ascii=True,
                    sort_keys=False)
    head = ("window.__kairosSitemap=" + js.replace("<", "\\u003c") + ";\n").encode("ascii")
    body = head + beacon_js
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
