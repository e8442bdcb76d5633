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
from collections.abc import Callable, Iterator, Mapping, Sequence
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


CACHE_SIZE = 16384  # outputs kept per template (a few hundred bytes each)
_NOT_PURE = frozenset({"random", "shuffle"})  # filters whose output is not a function of input


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A set of named fields (title, html, cta, ...) compiled once.

    Rendering is a pure function of the variables the fields use (found at compile time): a
    render reads only those from `variables` (so a lazy mapping such as `TemplateVars`
    computes nothing else), and the output is memoised per distinct value of them: many
    visitors share a top category, and the hot decision path then skips Jinja entirely.
    """

    source: Mapping[str, str]
    _compiled: Mapping[str, Any]
    _uses: tuple[str, ...] | None = None  # None: not memoisable
    _cache: dict[bytes, dict[str, str]] = field(default_factory=dict)
    _sanitise: bool = True  # campaign content: every rendered field through the allow-list
    _names: tuple[str, ...] = ()  # every variable the fields read
    # per name of `_uses`, the only members the fields read of it (`top.category`), or None
    _members: tuple[tuple[str, ...] | None, ...] = ()
    # (name, members, fronts) of `_names`: members None when a render needs the whole value
    # (none known, or one is also a dict attribute: `top.items` reads the method); fronts:
    # per member (else of the whole value: an int or None), the front of it the fields read
    # (`_prefix_read`), None for all of it
    _pairs: tuple[tuple[str, tuple[str, ...] | None,
                        tuple[int | None, ...] | int | None], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every variable the fields read."""
        return self._names

    def render(self, variables: Mapping[str, Any]) -> dict[str, str]:
        """Render every field with ``variables``; raises ``RenderError`` on failure."""
        lazy = type(variables) is TemplateVars  # of `top`, only the dimensions the fields read
        known = _FIELDS if lazy else variables
        used: dict[str, Any] = {}
        parts: list[Any] | None = None if self._uses is None else []
        for n, m, fronts in self._pairs:
            value = None
            if n in known:
                value = used[n] = variables.part(n, m) if lazy else variables[n]  # type: ignore[attr-defined]
            # the memo key: what the fields read of each, the members of a plain dict (the
            # variable `top` holds the top keys of every dimension, items included, which
            # differ for nearly every visitor; a field reading only `top.category` renders
            # alike for many), else the whole value
            # (of a list, only the front the fields read: `top.category[:3]`)
            if parts is None:
                continue
            if m is None:
                parts.append(_head(value, fronts))  # type: ignore[arg-type]
            elif type(value) is not dict or type(fronts) is not tuple:
                parts.append(value)
            else:
                parts.append([_head(value.get(x), b) for x, b in zip(m, fronts, strict=True)])
        key = None
        if parts is not None:
            try:
                key = orjson.dumps(parts)
            except TypeError:
                key = None
            if key is not None and (hit := self._cache.get(key)) is not None:
                return dict(hit)
        out: dict[str, str] = {}
        for name, template in self._compiled.items():
            try:
                text = template.render(used)
            except Exception as exc:  # sandbox violations, type errors in expressions
                raise RenderError(f"template.{name}: {exc}") from exc
            out[name] = sanitise(text[:MAX_OUTPUT_LEN]) if self._sanitise else text[:MAX_OUTPUT_LEN]
        if key is not None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = dict(out)
        return out


def _members_read(tree: nodes.Template, name: str) -> tuple[str, ...] | None:
    """The constant members (`x.a`, `x["a"]`) through which a template reads the variable
    `name`, when it reads it only that way (sorted); else None."""
    members: set[str] = set()
    wrapped = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        inner = getattr(node, "node", None)
        if not (isinstance(inner, nodes.Name) and inner.name == name):
            continue
        if isinstance(node, nodes.Getattr):
            members.add(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str):
            members.add(node.arg.value)
        else:
            return None
        wrapped += 1
    loads = sum(1 for n in tree.find_all(nodes.Name) if n.name == name)
    return tuple(sorted(members)) if members and loads == wrapped else None


def _member_node(node: Any, name: str, member: str | None) -> bool:
    """Whether ``node`` is `name.member` or `name["member"]` (the variable `name` itself
    when ``member`` is None)."""
    if member is None:
        return isinstance(node, nodes.Name) and node.name == name
    inner = getattr(node, "node", None)
    if not (isinstance(inner, nodes.Name) and inner.name == name):
        return False
    if isinstance(node, nodes.Getattr):
        return node.attr == member
    return isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
        and node.arg.value == member


def _const_int(node: Any) -> int | None:
    if isinstance(node, nodes.Const) and type(node.value) is int and node.value >= 0:
        return node.value
    return None


def _prefix_read(tree: nodes.Template, name: str, member: str | None) -> int | None:
    """How much of the front of `name.member` (of `name` when ``member`` is None) a
    template reads, when it reads it only through constant slices from the front or
    constant indexes (`top.category[:3]`, `top.brand[0]`, `cart[:3]`): the length of that
    front (the memo key then holds no more of it); else None."""
    kinds = nodes.Name if member is None else (nodes.Getattr, nodes.Getitem)
    reads = sum(1 for n in tree.find_all(kinds) if _member_node(n, name, member))
    bound = 0
    bounded = 0
    for n in tree.find_all(nodes.Getitem):
        if not _member_node(n.node, name, member):
            continue
        arg = n.arg
        if isinstance(arg, nodes.Slice):
            stop = _const_int(arg.stop)
            if arg.step is not None or stop is None or (arg.start is not None
                                                        and _const_int(arg.start) is None):
                return None
            bound = max(bound, stop)
        elif (i := _const_int(arg)) is not None:
            bound = max(bound, i + 1)
        else:
            return None
        bounded += 1
    return bound if reads and bounded == reads else None


def _head(value: Any, bound: int | None) -> Any:
    """The front of a sequence that a template reads (`_prefix_read`), else the value."""
    if bound is None or not isinstance(value, list | tuple | str):
        return value
    return value[:bound]


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
    members: dict[str, tuple[str, ...] | None] = {}
    fronts: dict[tuple[str, str | None], int | None] = {}  # (name, member) -> `_prefix_read`
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
        found = meta.find_undeclared_variables(tree)
        for n in found:  # over the fields: the members every field reads, or None
            got = _members_read(tree, n)
            if n in members:
                prev = members[n]
                got = None if prev is None or got is None else tuple(sorted({*prev, *got}))
            members[n] = got
            for m in got or (None,):
                front = _prefix_read(tree, n, m)
                if (n, m) in fronts:
                    prev_front = fronts[(n, m)]
                    front = None if prev_front is None or front is None else max(prev_front,
                                                                                 front)
                fronts[(n, m)] = front
        uses |= found
        pure = pure and not any(f.name in _NOT_PURE for f in tree.find_all(nodes.Filter))
        source[name] = text
    memo = pure and memoise
    names = tuple(sorted(uses))
    kept = tuple(members[n] for n in names)
    pairs = tuple((n, None, fronts.get((n, None))) if m is None else
                  (n, None, None) if any(hasattr(dict, x) for x in m) else
                  (n, m, tuple(fronts.get((n, x)) for x in m))
                  for n, m in zip(names, kept, strict=True))
    return CompiledTemplate(source, compiled, names if memo else None, _sanitise=campaign,
                            _names=names, _members=kept, _pairs=pairs)


def _strings(profile: Mapping[str, Any], key: str) -> list[str]:
    value = profile.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


def _top_of(v: TemplateVars, dim: str) -> list[str]:
    scores = v.affinities.get(dim)
    return top_keys(scores, v.top_n) if isinstance(scores, Mapping) else []


def _first(keys: list[str]) -> str | None:
    return keys[0] if keys else None


def _top(v: TemplateVars) -> dict[str, list[str]]:
    top = {dim: v.top_dim(dim) for dim in v.affinities}
    for dim in DIMENSIONS:
        top.setdefault(dim, [])
    return top


def _page(v: TemplateVars) -> dict[str, Any]:
    return {k: v.context.get(k) for k in ("page_type", "device", "channel", "locale", "url")}


class TemplateVars(Mapping[str, Any]):
    """The variables a template sees, from a profile view (plain data only), each computed
    when a template first reads it: a render reads only the names its fields use."""

    __slots__ = ("profile", "context", "recommendations", "top_n", "affinities", "_done",
                 "_tops")

    def __init__(self, profile: Mapping[str, Any], context: Mapping[str, Any] | None,
                 recommendations: Sequence[Mapping[str, Any]], top_n: int) -> None:
        self.profile = profile
        self.context = context or {}
        self.recommendations = recommendations
        self.top_n = top_n
        aff = profile.get("affinities")
        self.affinities: Mapping[str, Any] = aff if isinstance(aff, Mapping) else {}
        self._done: dict[str, Any] = {}
        self._tops: dict[str, list[str]] = {}

    def top_dim(self, dim: str) -> list[str]:
        hit = self._tops.get(dim)
        if hit is None:
            hit = self._tops[dim] = _top_of(self, dim)
        return hit

    def part(self, name: str, members: tuple[str, ...] | None) -> Any:
        """What a template that reads `name` only through the constant `members` (none a dict
        attribute: `_pairs`) needs of it: of `top`, those dimensions alone (each sorts the visitor's keys of
        a dimension, items included); else the whole value. The fields render alike: they
        read nothing else of it."""
        if name == "top" and members is not None and "top" not in self._done:
            return {m: self.top_dim(m) for m in members if m in DIMENSIONS or m in self.affinities}
        return self[name]

    def __getitem__(self, name: str) -> Any:
        if name in self._done:
            return self._done[name]
        make = _FIELDS.get(name)
        if make is None:
            raise KeyError(name)
        value = self._done[name] = make(self)
        return value

    def __contains__(self, name: object) -> bool:
        return name in _FIELDS

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)


_FIELDS: dict[str, Callable[[TemplateVars], Any]] = {
    "top": _top,
    "top_category": lambda v: _first(v.top_dim("category")),
    "top_brand": lambda v: _first(v.top_dim("brand")),
    "traits": lambda v: dict(t) if isinstance(t := v.profile.get("traits"), Mapping) else {},
    "known": lambda v: isinstance(u := v.profile.get("user_id"), str) and bool(u),
    "user_id": lambda v: v.profile.get("user_id"),
    "event_count": lambda v: v.profile.get("event_count", 0),
    "segments": lambda v: _strings(v.profile, "segments"),
    "recent_items": lambda v: _strings(v.profile, "recent_items"),
    "cart": lambda v: _strings(v.profile, "cart"),
    "cart_count": lambda v: len(_strings(v.profile, "cart")),
    "purchased": lambda v: _strings(v.profile, "purchased"),
    "recommendations": lambda v: [dict(r) for r in v.recommendations if isinstance(r, Mapping)],
    "page": _page,
}


def template_vars(
    profile: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    recommendations: Sequence[Mapping[str, Any]] = (),
    top_n: int = TOP_N,
) -> TemplateVars:
    """The variables a template sees, built from a profile view (plain data only); computed
    lazily, name by name (`dict(template_vars(...))` computes them all)."""
    return TemplateVars(profile, context, recommendations, top_n)
