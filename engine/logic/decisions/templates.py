"""Campaign content templates: Jinja2 in a sandbox with autoescape, compiled once at load.

Every rendered field is an HTML-escaped string (profile values can never inject markup or
script); the renderer in the browser inserts fields as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from jinja2 import ChainableUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.logic.decisions.rules import top_keys

MAX_TEMPLATE_LEN = 64_000
MAX_OUTPUT_LEN = 256_000
TOP_N = 5
DIMENSIONS = ("category", "brand", "tag", "item")

_ENV = ImmutableSandboxedEnvironment(
    autoescape=True,
    undefined=ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class TemplateError(ValueError):
    """A template field does not compile; ``field`` and ``lineno`` locate it."""

    def __init__(self, field: str, lineno: int, message: str) -> None:
        self.field = field
        self.lineno = lineno
        self.reason = message
        super().__init__(f"template.{field} line {lineno}: {message}")


class RenderError(RuntimeError):
    """A template failed at render time (e.g. a sandbox violation)."""


CACHE_SIZE = 4096
_NOT_PURE = frozenset({"random", "shuffle"})  # filters whose output is not a function of input


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A set of named fields (title, html, cta, ...) compiled once.

    Rendering is a pure function of the variables the fields use (found at compile time), so
    the output is memoised per distinct value of those variables: many visitors share a top
    category, and the hot decision path then skips Jinja entirely.
    """

    source: Mapping[str, str]
    _compiled: Mapping[str, Any]
    _uses: tuple[str, ...] | None = None  # None: not memoisable
    _cache: dict[bytes, dict[str, str]] = field(default_factory=dict)

    def render(self, variables: Mapping[str, Any]) -> dict[str, str]:
        """Render every field with ``variables``; raises ``RenderError`` on failure."""
        key = None
        if self._uses is not None:
            try:
                key = orjson.dumps([variables.get(n) for n in self._uses])
            except TypeError:
                key = None
            if key is not None and (hit := self._cache.get(key)) is not None:
                return dict(hit)
        out: dict[str, str] = {}
        for name, template in self._compiled.items():
            try:
                text = template.render(variables)
            except Exception as exc:  # sandbox violations, type errors in expressions
                raise RenderError(f"template.{name}: {exc}") from exc
            out[name] = text[:MAX_OUTPUT_LEN]
        if key is not None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = dict(out)
        return out


def parse_template(text: str) -> nodes.Template:
    """The syntax tree of ``text`` as the sandbox parses it, for checks made at load time
    (distributed-marketing templates look for links, loops and filters); raises Jinja's
    ``TemplateSyntaxError``."""
    return _ENV.parse(text)


def compile_template(fields: Mapping[str, Any], *, memoise: bool = True) -> CompiledTemplate:
    """Compile every string field; non-string or oversized fields raise ``TemplateError``.

    ``memoise=False`` skips the per-variables output cache, for templates whose variables
    differ on every render (a mail to each contact)."""
    compiled: dict[str, Any] = {}
    source: dict[str, str] = {}
    uses: set[str] = set()
    pure = True
    for name, text in fields.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TemplateError(str(name), 1, "field names must be identifiers")
        if not isinstance(text, str):
            raise TemplateError(name, 1, "must be a string")
        if len(text) > MAX_TEMPLATE_LEN:
            raise TemplateError(name, 1, f"is longer than {MAX_TEMPLATE_LEN} characters")
        try:
            compiled[name] = _ENV.from_string(text)
            tree = _ENV.parse(text)
        except TemplateSyntaxError as exc:
            raise TemplateError(name, exc.lineno or 1, exc.message or "syntax error") from None
        uses |= meta.find_undeclared_variables(tree)
        pure = pure and not any(f.name in _NOT_PURE for f in tree.find_all(nodes.Filter))
        source[name] = text
    memo = pure and memoise
    return CompiledTemplate(source, compiled, tuple(sorted(uses)) if memo else None)


def template_vars(
    profile: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    recommendations: Sequence[Mapping[str, Any]] = (),
    top_n: int = TOP_N,
) -> dict[str, Any]:
    """The variables a template sees, built from a profile view (plain data only)."""
    affinities = profile.get("affinities")
    affinities = affinities if isinstance(affinities, Mapping) else {}
    top = {
        dim: top_keys(scores, top_n) if isinstance(scores, Mapping) else []
        for dim, scores in affinities.items()
    }
    for dim in DIMENSIONS:
        top.setdefault(dim, [])
    traits = profile.get("traits")
    context = context or {}

    def strings(key: str) -> list[str]:
        value = profile.get(key)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []

    return {
        "top": top,
        "top_category": top["category"][0] if top["category"] else None,
        "top_brand": top["brand"][0] if top["brand"] else None,
        "traits": dict(traits) if isinstance(traits, Mapping) else {},
        "known": isinstance(profile.get("user_id"), str) and bool(profile.get("user_id")),
        "user_id": profile.get("user_id"),
        "event_count": profile.get("event_count", 0),
        "segments": strings("segments"),
        "recent_items": strings("recent_items"),
        "cart": strings("cart"),
        "cart_count": len(strings("cart")),
        "purchased": strings("purchased"),
        "recommendations": [dict(r) for r in recommendations if isinstance(r, Mapping)],
        "page": {k: context.get(k) for k in ("page_type", "device", "channel", "locale", "url")},
    }
