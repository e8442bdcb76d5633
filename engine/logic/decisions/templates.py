"""Campaign content templates: Jinja2 in a sandbox with autoescape, compiled once at load.

Every rendered field is an HTML-escaped string (profile values can never inject markup or
script); the renderer in the browser inserts fields as HTML. Three more guards:

- the escape hatches (`|safe`, `{% autoescape false %}`) are refused when the config loads;
- the template's own markup must keep to an allow-list of tags and attributes (`TAGS`,
  `ATTRIBUTES`, URLs http(s), mailto or a path; never `//host`), checked when the config
  loads with the line of the template that breaks it;
- every rendered field is sanitised by `nh3` (ammonia) with the same allow-list, which also
  catches what only exists once rendered (a trait in an `href`).

The beacon's `clean()` (sdk_js/src/render.js) keeps to the same list in the browser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import nh3
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


#: What campaign markup may hold (the beacon's clean() keeps the same).
TAGS = frozenset({
    "a", "b", "i", "em", "strong", "u", "s", "small", "mark", "sub", "sup", "br", "hr", "p",
    "div", "span", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "img", "figure",
    "figcaption", "blockquote", "button", "form", "input", "label",
})
_GLOBAL_ATTRIBUTES = frozenset({"class", "title", "lang", "dir"})
ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "*": _GLOBAL_ATTRIBUTES,
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "input": frozenset({"type", "name", "placeholder", "required", "value", "autocomplete",
                        "maxlength"}),
    "button": frozenset({"type"}),
}
ATTRIBUTE_PREFIXES = frozenset({"data-", "aria-"})
URL_ATTRIBUTES = frozenset({"href", "src"})
URL_SCHEMES = frozenset({"http", "https", "mailto"})


def url_allowed(value: str) -> bool:
    """http(s):, mailto:, a path or a fragment; never protocol-relative (`//host`, `/\\host`,
    which browsers read as another host) nor any other scheme (`javascript:`, `data:`)."""
    v = re.sub(r"[\x00-\x20]", "", value)  # browsers drop these inside a scheme
    if v.startswith(("//", "/\\", "\\")):
        return False
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", v)
    return scheme is None or scheme.group(1).lower() in URL_SCHEMES


def _relative(url: str) -> str | None:
    return url if url_allowed(url) else None


_CLEANER = nh3.Cleaner(
    tags=set(TAGS), attributes={k: set(v) for k, v in ATTRIBUTES.items()},
    generic_attribute_prefixes=set(ATTRIBUTE_PREFIXES), url_schemes=set(URL_SCHEMES),
    url_relative=_relative, link_rel="noopener noreferrer",
    clean_content_tags={"script", "style", "template", "svg", "math", "noscript", "iframe",
                        "object", "textarea", "select"},
)


def sanitise(html: str) -> str:
    """A rendered field through the allow-list (tags, attributes, URLs)."""
    return _CLEANER.clean(html)


_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_HOLE = "\ue000"  # what a Jinja expression becomes in the static markup checked at load


class _MarkupCheck(HTMLParser):
    """The first tag, attribute or URL of a template's static markup that the allow-list
    refuses: (line, reason)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problem: tuple[int, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.problem is not None:
            return
        line = self.getpos()[0]
        if _HOLE in tag:
            return  # a tag named by an expression: the render-time sanitiser decides
        if tag not in TAGS:
            self.problem = (line, f"<{tag}> is not allowed in campaign HTML "
                                  f"(allowed: {', '.join(sorted(TAGS))})")
            return
        allowed = ATTRIBUTES["*"] | ATTRIBUTES.get(tag, frozenset())
        for name, value in attrs:
            if _HOLE in name:
                continue
            if name not in allowed and not name.startswith(tuple(ATTRIBUTE_PREFIXES)):
                self.problem = (line, f"attribute {name!r} is not allowed on <{tag}>"
                                      + (" (event handlers never are)" if name.startswith("on")
                                         else ""))
                return
            static = (value or "").split(_HOLE, 1)[0]  # what the template itself fixes
            if name in URL_ATTRIBUTES and not url_allowed(static):
                self.problem = (line, f"<{tag} {name}> must be an http(s) or mailto URL or a "
                                      f"path, not {value!r}")
                return

    handle_startendtag = handle_starttag


def markup_problem(text: str) -> tuple[int, str] | None:
    """(line, reason) for the first thing in the template's own markup outside the
    allow-list, or None. Jinja expressions are holes (checked once rendered)."""
    masked = _CODE.sub(lambda m: re.sub(r"[^\n]", _HOLE, m.group(0)), text)
    check = _MarkupCheck()
    check.feed(masked)
    check.close()
    return check.problem


def escape_hatch(tree: nodes.Template) -> tuple[int, str] | None:
    """(line, reason) for the first `|safe` or `{% autoescape false %}` (or any autoescape
    block not plainly true) in a parsed template."""
    for f in tree.find_all(nodes.Filter):
        if f.name == "safe":
            return f.lineno, "the safe filter is not allowed (values are always escaped)"
    for m in tree.find_all((nodes.ScopedEvalContextModifier, nodes.EvalContextModifier)):
        for kw in m.options:
            if kw.key == "autoescape" and not (isinstance(kw.value, nodes.Const)
                                               and kw.value.value is True):
                return m.lineno, "autoescape cannot be turned off"
    return None


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
    _sanitise: bool = True  # campaign content: every rendered field through the allow-list

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
            out[name] = sanitise(text[:MAX_OUTPUT_LEN]) if self._sanitise else text[:MAX_OUTPUT_LEN]
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


def compile_template(fields: Mapping[str, Any], *, memoise: bool = True,
                     campaign: bool = True) -> CompiledTemplate:
    """Compile every string field; non-string or oversized fields raise ``TemplateError``.

    ``memoise=False`` skips the per-variables output cache, for templates whose variables
    differ on every render (a mail to each contact). ``campaign=False`` is for a brand's
    e-mail templates (engine/logic/dm): a whole HTML document with tables and inline styles,
    written by the brand, whose partner-editable values are checked per kind there; the
    campaign allow-list (markup at load, every field at render) and the refusal of the escape
    hatches (`|safe`, autoescape off) are for content the beacon places inside a customer's
    page. A mail's text parts are plain text (autoescape off is right there), and its HTML is
    the brand's own; engine/logic/dm checks every partner value per kind (nh3 for rich text)."""
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
        hatch = (escape_hatch(tree) or markup_problem(text)) if campaign else None
        if hatch is not None:
            raise TemplateError(name, *hatch)
        uses |= meta.find_undeclared_variables(tree)
        pure = pure and not any(f.name in _NOT_PURE for f in tree.find_all(nodes.Filter))
        source[name] = text
    memo = pure and memoise
    return CompiledTemplate(source, compiled, tuple(sorted(uses)) if memo else None,
                            _sanitise=campaign)


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
