"""Distributed-marketing templates: the brand's locked e-mail, the partner's editable fields.

A template file (``config/dm/templates/<id>.yaml``) is one mapping::

    id: thank-you                      # a-z, 0-9, '_' or '-'
    name: Thank you for your visit
    description: Quick send after a store visit.
    approval: none                     # none | required (a partner's values need a brand approver)
    subject: "Thank you, {{ contact.first_name | default('there', true) }}"
    html: |                            # Jinja, autoescaped: every value is text unless declared
      <p>{{ fields.message }}</p>
      <a href="{{ fields.cta_url }}">{{ fields.cta_label }}</a>
      {{ recommendations(n=3, recipe="default") }}
    text: |                            # the text/plain alternative (no HTML escaping)
      {{ fields.message }} {{ fields.cta_url }}
    fields:                            # what a partner may edit; everything else is locked
      - {id: message, kind: rich_text, label: Message, max_length: 1500, required: true,
         default: "<p>It was great to see you.</p>", help: Two or three sentences.}
      - {id: cta_url, kind: url, domains: [shop.example.com], default: "https://shop.example.com/"}
      - {id: tone, kind: choice, choices: [warm, formal], default: warm}
    restricted: {words: [guarantee], patterns: ['\\bfree\\s+money\\b']}   # block a submit
    flagged: {words: [discount]}       # shown to the approver as hits; do not block
    images: {allowed_domains: [cdn.example.com]}   # added to the brand's list
    sending: {from_name: "{partner_name} at {brand_name}"}
    recommendations:                   # optional: how one recommended item renders
      item_html: '<td><a href="{{ item.url }}">{{ item.name }}</a></td>'
      item_text: "{{ item.name }}: {{ item.url }}"

Field kinds: ``text`` (plain, escaped), ``rich_text`` (HTML cleaned by ``nh3`` to a small
allow-list: paragraphs, line breaks, bold, italics, lists; no links, no attributes), ``url`` and
``image_url`` (``https`` only, no credentials, no quotes/brackets/spaces; ``image_url`` on the
allowed image domains, ``url`` on the field's ``domains`` when given), ``choice`` (one of
``choices``).

A template loads as an immutable :class:`TemplateVersion` whose ``version`` is the SHA-256 of the
template document and the brand document together (canonical JSON): a send pins the version, so
what was approved is what goes out, even after the file changes. ``TemplateVersion.document``
is what to store to render that version again later (:func:`version_from_document`).

Rendering uses the engine's one sandboxed, autoescaping Jinja setup
(``engine.logic.decisions.templates``); the text part and the subject are wrapped in
``{% autoescape false %}`` (they are not HTML). Partner values are data: they are never compiled,
so ``{{7*7}}`` in a value prints as typed. The brand's sources may not use ``|safe``,
``{% autoescape %}``, ``{% include %}``/``{% import %}``/``{% extends %}``, undeclared fields, or
variables other than :data:`VARIABLES`.

Links: every ``<a href>`` in the HTML part is enumerated at load into :attr:`TemplateVersion.links`
(an index each). An href is a literal ``https://`` URL, ``{{ fields.<url field> }}``,
``{{ unsubscribe_url }}``, or a ``mailto:``/``tel:`` link. The recommendation block's links take
the indices after the template's own (one per slot). A click token names a link index, and the
redirect target comes from the rendered, pinned content, never from the request: no open
redirect. Links may not sit inside ``{% for %}``, macros or call blocks (each needs one index).
An anchor may name the catalog item it is about with a literal ``data-item="<item id>"``.
"""

from __future__ import annotations

import hashlib
import html as htmllib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import nh3
from jinja2 import TemplateSyntaxError, nodes
from markupsafe import Markup, escape

from engine.logic.decisions.config import FieldError
from engine.logic.decisions.rules import Path
from engine.logic.decisions.templates import (
    MAX_OUTPUT_LEN,
    MAX_TEMPLATE_LEN,
    CompiledTemplate,
    RenderError,
    TemplateError,
    compile_template,
    parse_template,
)

KINDS = ("text", "rich_text", "url", "image_url", "choice")
APPROVAL_POLICIES = ("none", "required")
#: Names a template may use; anything else is a load error.
VARIABLES = frozenset({"fields", "contact", "partner", "brand", "unsubscribe_url", "recommendations"})
ITEM_VARIABLES = frozenset({"item", "contact", "partner", "brand", "kairos_link"})
LINK_KINDS = ("static", "field", "recommendation", "unsubscribe", "contact")
TRACKED_KINDS = frozenset({"static", "field", "recommendation"})
MAX_FIELDS = 40
MAX_LINKS = 200
MAX_RECOMMENDATIONS = 12
MAX_SUBJECT = 300
DEFAULT_MAX_LENGTH = {"text": 200, "rich_text": 2000, "url": 2048, "image_url": 2048, "choice": 200}
RICH_TEXT_TAGS = frozenset({"p", "br", "strong", "b", "em", "i", "u", "ul", "ol", "li"})
DEFAULT_FROM_NAME = "{partner_name} via {brand_name}"
FROM_NAME_PLACEHOLDERS = ("{partner_name}", "{brand_name}")
LINK_ATTR = "data-kairos-link"

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_FIELD_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_URL_BAD_CHARS = re.compile(r"[\s\"'<>()\\`\x00-\x1f\x7f]")
_TEXT_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")
_RECO_DEFAULT_HTML = (
    '<td class="kairos-reco" style="padding:8px;vertical-align:top;width:33%">'
    '<a href="{{ item.url }}" style="text-decoration:none;color:inherit">'
    '{% if item.image_url %}<img src="{{ item.image_url }}" alt="{{ item.name }}" width="160" '
    'style="display:block;width:100%;max-width:160px;border:0">{% endif %}'
    '<div style="font-weight:bold;padding-top:6px">{{ item.name }}</div></a>'
    '{% if item.price_text %}<div>{{ item.price_text }}</div>{% endif %}</td>'
)
_RECO_DEFAULT_TEXT = "- {{ item.name }}{% if item.price_text %} ({{ item.price_text }}){% endif %}: {{ item.url }}\n"


# --- data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One editable field: what a partner may change, within which bounds."""

    id: str
    kind: str
    label: str
    help: str
    max_length: int
    required: bool
    default: str | None
    choices: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # url: allowed link domains (empty: any https host)

    def as_dict(self) -> dict[str, Any]:
        """The field as the portal's form (and the API) describes it."""
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "label": self.label, "help": self.help,
            "max_length": self.max_length, "required": self.required, "default": self.default,
        }  # fmt: skip
        if self.choices:
            out["choices"] = list(self.choices)
        if self.domains:
            out["domains"] = list(self.domains)
        return out


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a template version, known at load; a click token names its ``index``."""

    index: int
    kind: str  # one of LINK_KINDS
    url: str | None = None  # the target of a static link
    field: str | None = None  # the url field of a field link
    slot: int | None = None  # the recommendation slot of a recommendation link
    item: str | None = None  # the catalog item a static or field link is about (data-item)
    line: int = 1  # line in the html part

    @property
    def tracked(self) -> bool:
        """Whether clicks on this link go through the click redirect."""
        return self.kind in TRACKED_KINDS


@dataclass(frozen=True, slots=True)
class RecoRequest:
    """What ``recommendations(n=..., recipe=...)`` in a template asks the caller to supply."""

    recipe: str
    n: int


@dataclass(frozen=True, slots=True)
class Restrictions:
    """Words (whole words, any case) and regular expressions searched in partner text."""

    words: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    def __add__(self, other: Restrictions) -> Restrictions:
        return Restrictions(
            tuple(dict.fromkeys(self.words + other.words)),
            tuple(dict.fromkeys(self.patterns + other.patterns)),
        )

    def hits(self, text: str) -> list[str]:
        """The words and patterns found in ``text`` (normalised: NFKC, case-folded)."""
        norm = unicodedata.normalize("NFKC", text).casefold()
        found = [w for w in self.words if re.search(rf"(?<!\w){re.escape(w.casefold())}(?!\w)", norm)]
        found += [p.pattern for p in self.patterns if p.search(norm) or p.search(text)]
        return found


@dataclass(frozen=True, slots=True)
class Brand:
    """The brand's sending identity and brand-wide rules (``config/dm/brand.yaml``)."""

    name: str
    sending_domain: str  # From: and Message-ID domain
    from_local: str = "partners"  # From: <from_local>@<sending_domain>
    bounce_domain: str = ""  # VERP Return-Path domain (empty: the sending domain)
    postal_address: str = ""
    website: str = ""
    image_domains: tuple[str, ...] = ()
    restricted: Restrictions = Restrictions()
    flagged: Restrictions = Restrictions()
    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def from_address(self) -> str:
        return f"{self.from_local}@{self.sending_domain}"

    @property
    def return_domain(self) -> str:
        return self.bounce_domain or self.sending_domain

    def variables(self) -> dict[str, str]:
        """What templates see as ``brand``."""
        return {"name": self.name, "website": self.website, "postal_address": self.postal_address,
                "sending_domain": self.sending_domain}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why one partner value was refused; ``field`` is ``fields.<id>``."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class ValuesError(ValueError):
    """Partner values do not fit the template (the API answers 422 with ``problems``)."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field} {p.reason}" for p in problems))


@dataclass(frozen=True, slots=True)
class RenderedLink:
    """A link as rendered for one recipient: where a click on ``index`` goes."""

    index: int
    kind: str
    url: str
    item: Mapping[str, Any] | None = None  # {"id", "categories", "brand"} when the link names one


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str
    text: str
    links: tuple[RenderedLink, ...]

    def link(self, index: int) -> RenderedLink | None:
        return next((lk for lk in self.links if lk.index == index), None)


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One immutable version of a template: compiled parts, fields, links, rules."""

    id: str
    name: str
    description: str
    version: str  # sha256 hex of the canonical template + brand documents
    approval: str
    fields: Mapping[str, Field]
    links: tuple[Link, ...]
    recommendation: RecoRequest | None
    restricted: Restrictions
    flagged: Restrictions
    image_domains: tuple[str, ...]
    from_name: str
    brand: Brand
    document: Mapping[str, Any]
    source: str
    _html: CompiledTemplate  # {"html"}
    _plain: CompiledTemplate  # {"subject", "text"}, not escaped
    _item_html: CompiledTemplate  # {"html"}: one recommended item
    _item_text: CompiledTemplate  # {"text"}
    _item_reads_contact: bool = True  # whether an item's render depends on the recipient

    @property
    def short_version(self) -> str:
        return self.version[:12]

    def defaults(self) -> dict[str, str]:
        """The brand's default answer of every field that has one."""
        return {f.id: f.default for f in self.fields.values() if f.default is not None}

    def validate(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Every field's final value (the partner's, else the default), cleaned; raises
        ``ValuesError`` naming each bad field. Undeclared fields are refused."""
        return validate_values(self, values)

    def flagged_hits(self, values: Mapping[str, Any]) -> dict[str, list[str]]:
        """``{field id: [flagged words and patterns found]}`` for the approver."""
        clean = self.validate(values)
        out: dict[str, list[str]] = {}
        for fid, value in clean.items():
            f = self.fields[fid]
            if f.kind in ("text", "rich_text") and (hits := self.flagged.hits(_plain(value, f.kind))):
                out[fid] = hits
        return out

    def render(
        self,
        values: Mapping[str, Any],
        *,
        contact: Mapping[str, Any] | None = None,
        partner: Mapping[str, Any] | None = None,
        items: Sequence[Mapping[str, Any]] = (),
        unsubscribe_url: str = "",
        link_url: Callable[[int], str] | None = None,
    ) -> RenderedMessage:
        """Render subject, HTML and text for one recipient.

        ``values`` are validated first (``ValuesError``); ``items`` are the recommended items
        for :attr:`recommendation` (``{"id", "name", "url", "image_url", "price", "currency",
        "categories", "brand"}``; items without an https url are skipped). With ``link_url``,
        every tracked link's href becomes ``link_url(index)`` (the click redirect); without, the
        targets stay (preview). Raises ``RenderError`` on a sandbox violation or an oversize
        message."""
        return _render(self, _validated(self, values), contact, partner, items, unsubscribe_url, link_url, False)

    def skeleton(
        self,
        values: Mapping[str, Any],
        *,
        contact: Mapping[str, Any] | None = None,
        partner: Mapping[str, Any] | None = None,
    ) -> RenderedMessage:
        """The locked part: a render in which each editable value (but choices, which select
        brand content) is the placeholder ``⟦id⟧``. Equal for any two sets of values that
        pick the same choices, which is what "everything not declared is locked" means."""
        clean = self.validate(values)
        return _render(self, clean, contact, partner, (), "", None, True)


# --- partner values --------------------------------------------------------------------------


def clean_rich_text(value: str) -> str:
    """Partner HTML reduced to :data:`RICH_TEXT_TAGS`, no attributes, scripts and styles
    dropped with their content."""
    return nh3.clean(
        value,
        tags=set(RICH_TEXT_TAGS),
        attributes={},
        clean_content_tags={"script", "style"},
        strip_comments=True,
        link_rel=None,
    )


def rich_to_text(value: str) -> str:
    """Cleaned rich text as plain text for the text part (paragraphs and breaks kept)."""
    value = re.sub(r"(?i)<br\s*/?>", "\n", value)
    value = re.sub(r"(?i)</(p|li|ul|ol)>", "\n", value)
    value = re.sub(r"(?i)<li>", "- ", value)
    text = htmllib.unescape(nh3.clean(value, tags=set(), clean_content_tags={"script", "style"}))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _plain(value: str, kind: str) -> str:
    return rich_to_text(value) if kind == "rich_text" else value


def _host_allowed(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def check_url(value: str, domains: Sequence[str] = ()) -> str | None:
    """Why ``value`` is not an acceptable https URL (None: it is)."""
    if value[:8].lower() != "https://":
        return "must be an https:// URL"
    if _URL_BAD_CHARS.search(value):
        return "must be an https URL without spaces, quotes or brackets"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "must be a valid https URL"
    del port
    host = (parts.hostname or "").lower()
    if not host or not _DOMAIN_RE.match(host):
        return "must name a host (https://host/...)"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if domains and not _host_allowed(host, domains):
        return f"must be on {', '.join(domains)}"
    return None


def check_value(
    f: Field, value: Any, image_domains: Sequence[str], restricted: Restrictions
) -> tuple[str | None, str | None]:
    """(cleaned value, None) or (None, why not) for one field's value."""
    if not isinstance(value, str):
        return None, "must be a string"
    if len(value) > f.max_length:
        return None, f"must be at most {f.max_length} characters"
    if f.kind == "choice":
        return (value, None) if value in f.choices else (None, f"must be one of {list(f.choices)}")
    if f.kind in ("url", "image_url"):
        value = value.strip()
        if not value:
            return "", None
        if f.kind == "url":
            reason = check_url(value, f.domains)
        else:
            reason = check_url(value, image_domains)
            if reason and reason.startswith("must be on"):
                reason = f"must be an image on an allowed domain ({', '.join(image_domains)})"
        return (None, reason) if reason else (value, None)
    if _TEXT_BAD_CHARS.search(value):
        return None, "must not contain control characters"
    if f.kind == "rich_text":
        value = clean_rich_text(value)
    plain = _plain(value, f.kind)
    if hits := restricted.hits(plain):
        return None, f"contains restricted wording: {', '.join(hits)}"
    return value, None


def validate_values(version: TemplateVersion, values: Mapping[str, Any]) -> dict[str, str]:
    """See :meth:`TemplateVersion.validate`."""
    if not isinstance(values, Mapping):
        raise ValuesError([FieldProblem("fields", "must be an object of field id to value")])
    problems: list[FieldProblem] = []
    for key in values:
        if key not in version.fields:
            problems.append(FieldProblem(f"fields.{key}", "is not an editable field of this template"))
    out: dict[str, str] = {}
    for fid, f in version.fields.items():
        raw = values.get(fid)
        if raw is None:  # absent (or null): the brand's default
            raw = f.default
        if raw is None:
            if f.required:
                problems.append(FieldProblem(f"fields.{fid}", "is required"))
            else:
                out[fid] = ""
            continue
        clean, reason = check_value(f, raw, version.image_domains, version.restricted)
        if reason is None and f.required and not (clean or "").strip():
            reason = "is required"
        if reason is not None:
            problems.append(FieldProblem(f"fields.{fid}", reason))
        else:
            out[fid] = clean or ""
    if problems:
        raise ValuesError(problems)
    return out


# --- rendering -----------------------------------------------------------------------------

_MARKED_A = re.compile(rf'<a {LINK_ATTR}="(\d+)"((?:[^>"\']|"[^"]*"|\'[^\']*\')*)>')
_HREF_ATTR = re.compile(r'(\shref=")([^"]*)(")', re.IGNORECASE)


def _price_text(item: Mapping[str, Any]) -> str:
    price = item.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        return ""
    currency = item.get("currency")
    return f"{price:,.2f} {currency}" if isinstance(currency, str) and currency else f"{price:,.2f}"


def reco_items(items: Sequence[Mapping[str, Any]], n: int, image_domains: Sequence[str]) -> list[dict[str, Any]]:
    """The first ``n`` usable items: an https url required, an image kept only on an allowed
    image domain, strings only."""
    out: list[dict[str, Any]] = []
    for raw in items:
        if len(out) >= n:
            break
        if not isinstance(raw, Mapping):
            continue
        item_id, url = raw.get("id"), raw.get("url")
        if not isinstance(item_id, str) or not isinstance(url, str) or check_url(url):
            continue
        image = raw.get("image_url")
        if not isinstance(image, str) or check_url(image, image_domains):
            image = None
        name = raw.get("name")
        cats = raw.get("categories")
        out.append({
            "id": item_id,
            "name": name if isinstance(name, str) and name else item_id,
            "url": url,
            "image_url": image,
            "price": raw.get("price") if isinstance(raw.get("price"), int | float) else None,
            "currency": raw.get("currency") if isinstance(raw.get("currency"), str) else None,
            "price_text": _price_text(raw),
            "categories": [c for c in cats if isinstance(c, str)] if isinstance(cats, list | tuple) else [],
            "brand": raw.get("brand") if isinstance(raw.get("brand"), str) else None,
        })  # fmt: skip
    return out


_CACHE_MAX = 2048
_VALIDATED: dict[tuple[str, str], dict[str, str]] = {}
_ITEM_PARTS: dict[tuple[Any, ...], str] = {}


def _validated(version: TemplateVersion, values: Mapping[str, Any]) -> dict[str, str]:
    """`version.validate(values)`, remembered: a campaign's thousands of sends carry the same
    values (a ValuesError is not remembered). The result is shared: read it, never change it."""
    try:
        key = (version.version, repr(sorted(values.items())))
    except TypeError:  # keys that do not sort: validate (and refuse) them each time
        return version.validate(values)
    got = _VALIDATED.get(key)
    if got is None:
        got = version.validate(values)
        if len(_VALIDATED) >= _CACHE_MAX:
            _VALIDATED.clear()
        _VALIDATED[key] = got
    return got


_TEXT_OF: dict[str, str] = {}


def _rich_text_of(value: str) -> str:
    """`rich_to_text(value)`, remembered (a campaign's sends carry the same rich text)."""
    got = _TEXT_OF.get(value)
    if got is None:
        got = rich_to_text(value)
        if len(_TEXT_OF) >= _CACHE_MAX:
            _TEXT_OF.clear()
        _TEXT_OF[value] = got
    return got


def _strings(data: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str | int | float)}


def _render(
    version: TemplateVersion,
    clean: Mapping[str, str],
    contact: Mapping[str, Any] | None,
    partner: Mapping[str, Any] | None,
    items: Sequence[Mapping[str, Any]],
    unsubscribe_url: str,
    link_url: Callable[[int], str] | None,
    skeleton: bool,
) -> RenderedMessage:
    base = {
        "contact": _strings(contact),
        "partner": _strings(partner),
        "brand": version.brand.variables(),
        "unsubscribe_url": unsubscribe_url,
    }
    html_fields: dict[str, Any] = {}
    text_fields: dict[str, Any] = {}
    for fid, f in version.fields.items():
        value = clean.get(fid, "")
        if skeleton and f.kind != "choice":
            html_fields[fid] = text_fields[fid] = Markup(f"\u27e6{fid}\u27e7")
        elif f.kind == "rich_text":
            html_fields[fid] = Markup(value)
            text_fields[fid] = _rich_text_of(value)
        else:
            html_fields[fid] = text_fields[fid] = value
    reco = version.recommendation
    usable = reco_items(items, reco.n, version.image_domains) if reco and not skeleton else []
    first_slot = sum(1 for lk in version.links if lk.kind != "recommendation")

    def recommendations_for(mode: str) -> Callable[..., Any]:
        def recommendations(n: int = 3, recipe: str = "default") -> Any:
            parts = []
            tpl = version._item_html if mode == "html" else version._item_text
            for slot, item in enumerate(usable[: min(n, len(usable))]):
                # An item's block is the same in every mail of a partner that shows it in
                # this slot (unless the brand's item source reads the contact): render once.
                key = None if version._item_reads_contact else (
                    version.version, mode, first_slot + slot, repr(sorted(item.items())), repr(sorted(_strings(partner).items())))
                part = _ITEM_PARTS.get(key) if key is not None else None
                if part is None:
                    part = tpl.render({**base, "item": item, "kairos_link": first_slot + slot})[mode]
                    if key is not None:
                        if len(_ITEM_PARTS) >= _CACHE_MAX:
                            _ITEM_PARTS.clear()
                        _ITEM_PARTS[key] = part
                parts.append(part)
            joined = "".join(parts)
            return Markup(joined) if mode == "html" else joined

        return recommendations

    html_vars = {**base, "fields": html_fields, "recommendations": recommendations_for("html")}
    text_vars = {**base, "fields": text_fields, "recommendations": recommendations_for("text")}
    html = version._html.render(html_vars)["html"]
    plain = version._plain.render(text_vars)
    subject, text = " ".join(plain["subject"].split()), plain["text"]
    if not subject:
        raise RenderError("template.subject: renders empty")
    if len(subject) > MAX_SUBJECT:
        raise RenderError(f"template.subject: renders longer than {MAX_SUBJECT} characters")
    if len(html) >= MAX_OUTPUT_LEN or len(text) >= MAX_OUTPUT_LEN:
        raise RenderError(f"the message renders larger than {MAX_OUTPUT_LEN} characters")

    by_index = {lk.index: lk for lk in version.links}
    rendered: list[RenderedLink] = []
    seen: set[int] = set()

    def rewrite(m: re.Match[str]) -> str:
        index, attrs = int(m.group(1)), m.group(2)
        link = by_index.get(index)
        if link is None or (index in seen and link.kind != "recommendation"):
            raise RenderError(f"link {index} rendered twice or unknown")
        first = index not in seen
        seen.add(index)
        href = _HREF_ATTR.search(attrs)
        if skeleton or href is None or not link.tracked:
            return f"<a{attrs}>"
        url = htmllib.unescape(href.group(2))
        if not url:
            return f"<a{attrs}>"
        item: Mapping[str, Any] | None = None
        if link.kind == "recommendation" and link.slot is not None and link.slot < len(usable):
            it = usable[link.slot]
            item = {"id": it["id"], "categories": it["categories"], "brand": it["brand"]}
        elif link.item:
            item = {"id": link.item}
        if first:
            rendered.append(RenderedLink(index, link.kind, url, item))
        if link_url is None:
            return f"<a{attrs}>"
        new = f"{href.group(1)}{escape(link_url(index))}{href.group(3)}"
        return f"<a{attrs[: href.start()]}{new}{attrs[href.end() :]}>"

    html = _MARKED_A.sub(rewrite, html)
    return RenderedMessage(subject, html, text, tuple(sorted(rendered, key=lambda lk: lk.index)))


# --- loading -------------------------------------------------------------------------------


def canonical_json(data: Any) -> bytes:
    """The one serialisation that content hashes are taken over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8")  # fmt: skip


def content_hash(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


def _template_error(path: Path, lineno: int, message: str) -> FieldError:
    """A problem inside a Jinja source: ``template_line`` is the line within that source."""
    err = FieldError(path, message)
    err.template_line = lineno  # type: ignore[attr-defined]
    return err


def _str(value: Any, path: Path, max_len: int = 1000, required: bool = False) -> str:
    if value is None:
        if required:
            raise FieldError(path, "is required")
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        raise FieldError(path, f"must be a string of at most {max_len} characters")
    if required and not value.strip():
        raise FieldError(path, "must not be empty")
    return value


def _str_list(value: Any, path: Path, max_len: int = 200) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError(path, "must be a list of strings")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v or len(v) > max_len:
            raise FieldError(path + (i,), f"must be a non-empty string of at most {max_len} characters")
    return tuple(value)


def _domains(value: Any, path: Path) -> tuple[str, ...]:
    out = []
    for i, d in enumerate(_str_list(value, path)):
        d = d.lower()
        if not _DOMAIN_RE.match(d):
            raise FieldError(path + (i,), f"{d!r} is not a domain name (like cdn.example.com)")
        out.append(d)
    return tuple(out)


def _regex(text: str, path: Path) -> re.Pattern[str]:
    if len(text) > 200:
        raise FieldError(path, "must be at most 200 characters")
    if _NESTED_QUANTIFIER.search(text) or re.search(r"\\[1-9]", text):
        raise FieldError(path, "must not use nested quantifiers or back-references")
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise FieldError(path, f"is not a valid regular expression ({exc})") from None


def parse_restrictions(value: Any, path: Path) -> Restrictions:
    if value is None:
        return Restrictions()
    if not isinstance(value, Mapping):
        raise FieldError(path, "must be a mapping with words and patterns")
    for key in value:
        if key not in ("words", "patterns"):
            raise FieldError(path + (str(key),), "is not a known option (words, patterns)")
    words = _str_list(value.get("words"), path + ("words",))
    patterns = tuple(
        _regex(p, path + ("patterns", i))
        for i, p in enumerate(_str_list(value.get("patterns"), path + ("patterns",)))
    )
    return Restrictions(words, patterns)


def _field_spec(raw: Any, path: Path, image_domains: tuple[str, ...]) -> Field:
    if not isinstance(raw, Mapping):
        raise FieldError(path, "must be a mapping with id, kind, label, ...")
    allowed = {"id", "kind", "label", "help", "max_length", "required", "default", "choices", "domains"}
    for key in raw:
        if key not in allowed:
            raise FieldError(path + (str(key),), f"is not a known option (expected {sorted(allowed)})")
    fid = raw.get("id")
    if not isinstance(fid, str) or not _FIELD_ID_RE.match(fid):
        raise FieldError(path + ("id",), "must be 1-64 characters of a-z, 0-9 or '_', starting with a letter")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise FieldError(path + ("kind",), f"must be one of {list(KINDS)}")
    max_length = raw.get("max_length", DEFAULT_MAX_LENGTH[kind])
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= 20_000:
        raise FieldError(path + ("max_length",), "must be an integer from 1 to 20000")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise FieldError(path + ("required",), "must be true or false")
    choices: tuple[str, ...] = ()
    if kind == "choice":
        choices = _str_list(raw.get("choices"), path + ("choices",))
        if not choices:
            raise FieldError(path + ("choices",), "is required for a choice field (a list of strings)")
        if len(set(choices)) != len(choices):
            raise FieldError(path + ("choices",), "must not repeat a choice")
    elif "choices" in raw:
        raise FieldError(path + ("choices",), "is only for choice fields")
    domains: tuple[str, ...] = ()
    if "domains" in raw:
        if kind != "url":
            raise FieldError(path + ("domains",), "is only for url fields (image_url fields use images.allowed_domains)")
        domains = _domains(raw["domains"], path + ("domains",))
    if kind == "image_url" and not image_domains:
        raise FieldError(path + ("kind",), "an image_url field needs images.allowed_domains (here or in brand.yaml)")
    default = raw.get("default")
    if default is not None and not isinstance(default, str):
        raise FieldError(path + ("default",), "must be a string")
    return Field(
        fid, kind, _str(raw.get("label", fid), path + ("label",), 200) or fid,
        _str(raw.get("help"), path + ("help",), 1000), max_length, required, default, choices, domains,
    )  # fmt: skip


@dataclass
class _Tag:
    name: str
    start: int
    attrs: dict[str, tuple[str | None, str]]  # name -> (value, quote)
    printed_attrs: bool  # a {{ }} between attributes
    duplicates: list[str]


_NEXT = re.compile(r"\{\{|\{%|\{#|<!--|<(a|img)(?=[\s/>])", re.IGNORECASE)
_ATTR_NAME = re.compile(r"[^\s\"'>/=]+")
_JINJA_CLOSE = {"{{": "}}", "{%": "%}", "{#": "#}"}


def _skip_jinja(src: str, i: int) -> int:
    end = src.find(_JINJA_CLOSE[src[i : i + 2]], i + 2)
    return len(src) if end < 0 else end + 2


def _read_tag(src: str, start: int, name: str) -> tuple[_Tag, int]:
    tag = _Tag(name.lower(), start, {}, False, [])
    pos, n = start + 1 + len(name), len(src)
    while pos < n:
        c = src[pos]
        if c.isspace():
            pos += 1
            continue
        if src[pos : pos + 2] in _JINJA_CLOSE:
            tag.printed_attrs |= src[pos : pos + 2] == "{{"
            pos = _skip_jinja(src, pos)
            continue
        if c == ">":
            return tag, pos + 1
        if src.startswith("/>", pos):
            return tag, pos + 2
        m = _ATTR_NAME.match(src, pos)
        if not m:
            pos += 1
            continue
        attr, pos = m.group(0).lower(), m.end()
        while pos < n and src[pos].isspace():
            pos += 1
        value: str | None = None
        quote = ""
        if pos < n and src[pos] == "=":
            pos += 1
            while pos < n and src[pos].isspace():
                pos += 1
            if pos < n and src[pos] in "\"'":
                quote = src[pos]
                j = pos + 1
                while j < n and src[j] != quote:
                    j = _skip_jinja(src, j) if src[j : j + 2] in _JINJA_CLOSE else j + 1
                value, pos = src[pos + 1 : j], j + 1
            else:
                m2 = re.compile(r"[^\s>]*").match(src, pos)
                assert m2 is not None
                value, pos = m2.group(0), m2.end()
        if attr in tag.attrs:
            tag.duplicates.append(attr)
        tag.attrs[attr] = (value, quote)
    return tag, n


def scan_tags(src: str) -> list[_Tag]:
    """The ``<a>`` and ``<img>`` tags of a Jinja HTML source, outside Jinja blocks and HTML
    comments, with their attributes as written."""
    out: list[_Tag] = []
    i = 0
    while (m := _NEXT.search(src, i)) is not None:
        tok = m.group(0)
        if tok in _JINJA_CLOSE:
            i = _skip_jinja(src, m.start())
        elif tok == "<!--":
            end = src.find("-->", m.end())
            i = len(src) if end < 0 else end + 3
        else:
            tag, i = _read_tag(src, m.start(), m.group(1))
            out.append(tag)
    return out


_FIELD_EXPR = re.compile(r"^\{\{-?\s*fields\.([a-z][a-z0-9_]*)\s*-?\}\}$")
_ITEM_URL = re.compile(r"^\{\{-?\s*item\.url\s*-?\}\}$")
_ITEM_IMAGE = re.compile(r"^\{\{-?\s*item\.image_url\s*-?\}\}$")
_UNSUB_EXPR = re.compile(r"^\{\{-?\s*unsubscribe_url\s*-?\}\}$")


def _line_at(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _check_links(
    src: str,
    part: str,
    fields: Mapping[str, Field],
    image_domains: tuple[str, ...],
    first_index: int,
    item_part: bool,
) -> tuple[str, list[Link]]:
    """Enumerate and check the links and images of one HTML source; returns the source with a
    link marker in every ``<a href>`` and the links found."""
    links: list[Link] = []
    inserts: list[tuple[int, str]] = []
    for tag in scan_tags(src):
        line = _line_at(src, tag.start)

        def fail(message: str, line: int = line) -> FieldError:
            return _template_error((part,), line, message)

        if tag.duplicates:
            raise fail(f"<{tag.name}> repeats the attribute {tag.duplicates[0]!r}")
        if tag.printed_attrs:
            raise fail(f"<{tag.name}> must not print attributes with {{{{ }}}}: write them out")
        if LINK_ATTR in tag.attrs:
            raise fail(f"{LINK_ATTR} is reserved")
        if tag.name == "img":
            src_value, quote = tag.attrs.get("src", (None, ""))
            if src_value is None:
                continue
            value = src_value.strip()
            if (m := _FIELD_EXPR.match(value)) is not None:
                f = fields.get(m.group(1))
                if f is None or f.kind != "image_url":
                    raise fail(f"<img src> uses fields.{m.group(1)}, which is not an image_url field")
            elif item_part and _ITEM_IMAGE.match(value):
                pass
            elif "{" in value:
                raise fail("<img src> must be an https URL, {{ fields.<image_url field> }} or {{ item.image_url }}")
            elif reason := check_url(value, image_domains):
                raise fail(f"<img src> {reason}" if image_domains else f"<img src> {reason} (and brand images need images.allowed_domains)")
            continue
        href, quote = tag.attrs.get("href", (None, ""))
        if href is None:
            continue
        if quote != '"':
            raise fail('<a href> must be written in double quotes (href="...")')
        value = href.strip()
        item_attr = tag.attrs.get("data-item", (None, ""))[0]
        if item_attr is not None and ("{" in item_attr or not item_attr or len(item_attr) > 128):
            raise fail("data-item must be a literal item id (1-128 characters)")
        index = first_index + len(links)
        if item_part:
            if not _ITEM_URL.match(value):
                raise fail('a recommended item links only to {{ item.url }}')
            links.append(Link(index, "recommendation", line=line))
            inserts.append((tag.start + 2, f' {LINK_ATTR}="{{{{ kairos_link }}}}"'))
            continue
        if (m := _FIELD_EXPR.match(value)) is not None:
            f = fields.get(m.group(1))
            if f is None or f.kind != "url":
                raise fail(f"<a href> uses fields.{m.group(1)}, which is not a url field")
            link = Link(index, "field", field=f.id, item=item_attr, line=line)
        elif _UNSUB_EXPR.match(value):
            link = Link(index, "unsubscribe", line=line)
        elif value.lower().startswith(("mailto:", "tel:")):
            link = Link(index, "contact", line=line)
        elif "{" in value:
            raise fail(
                "<a href> must be a literal https URL, {{ fields.<url field> }}, "
                "{{ unsubscribe_url }} or a mailto:/tel: link"
            )
        elif reason := check_url(htmllib.unescape(value)):
            raise fail(f"<a href> {reason}")
        else:
            link = Link(index, "static", url=htmllib.unescape(value), item=item_attr, line=line)
        links.append(link)
        inserts.append((tag.start + 2, f' {LINK_ATTR}="{index}"'))
    for pos, text in reversed(inserts):
        src = src[:pos] + text + src[pos:]
    return src, links


_ANCHOR_DATA = re.compile(r"<a[\s/>]", re.IGNORECASE)


def _check_tree(
    tree: nodes.Template, part: str, allowed: frozenset[str], fields: Mapping[str, Field]
) -> list[tuple[int, RecoRequest]]:
    """Checks on one parsed source; returns the recommendations() calls (line, request)."""
    from jinja2 import meta

    def fail(node: nodes.Node, message: str) -> FieldError:
        return _template_error((part,), getattr(node, "lineno", 1) or 1, message)

    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        raise fail(node, "include, import and extends are not allowed in a template")
    for node in tree.find_all(nodes.EvalContextModifier):
        raise fail(node, "{% autoescape %} is not allowed: every value is escaped")
    for flt in tree.find_all(nodes.Filter):
        if flt.name == "safe":
            raise fail(flt, "the |safe filter is not allowed: declare a rich_text field instead")
    unknown = meta.find_undeclared_variables(tree) - allowed
    if unknown:
        name = sorted(unknown)[0]
        line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == name), 1)
        raise _template_error((part,), line, f"unknown variable {name!r} (known: {', '.join(sorted(allowed - {'kairos_link'}))})")
    used = 0
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(access, nodes.Getattr | nodes.Getitem)
        if isinstance(access.node, nodes.Name) and access.node.name == "fields":
            key = access.attr if isinstance(access, nodes.Getattr) else getattr(access.arg, "value", None)
            if not isinstance(key, str):
                raise fail(access, "fields must be used as fields.<id>")
            if key not in fields:
                raise fail(access, f"fields.{key} is not declared in fields")
            used += 1
    loads = sum(1 for n in tree.find_all(nodes.Name) if n.name == "fields" and n.ctx == "load")
    if loads != used:
        raise _template_error((part,), 1, "fields must be used as fields.<id>")
    for scope in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock)):
        for data in scope.find_all(nodes.TemplateData):
            if _ANCHOR_DATA.search(data.data):
                raise fail(scope, "links must not be inside {% for %}, macros or call blocks (each link needs one index)")
    calls: list[tuple[int, RecoRequest]] = []
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "recommendations"):
            continue
        if call.dyn_args is not None or call.dyn_kwargs is not None:
            raise fail(call, "recommendations() takes literal n and recipe")
        args: dict[str, Any] = {}
        for name, arg in zip(("n", "recipe"), call.args, strict=False):
            args[name] = arg
        if len(call.args) > 2:
            raise fail(call, "recommendations() takes n and recipe")
        for kw in call.kwargs:
            if kw.key not in ("n", "recipe") or kw.key in args:
                raise fail(call, f"recommendations() has no argument {kw.key!r} (or it is repeated)")
            args[kw.key] = kw.value
        n = args.get("n", nodes.Const(3))
        recipe = args.get("recipe", nodes.Const("default"))
        if not isinstance(n, nodes.Const) or isinstance(n.value, bool) or not isinstance(n.value, int):
            raise fail(call, "recommendations(n=...) must be a literal integer")
        if not 1 <= n.value <= MAX_RECOMMENDATIONS:
            raise fail(call, f"recommendations(n=...) must be from 1 to {MAX_RECOMMENDATIONS}")
        if not isinstance(recipe, nodes.Const) or not isinstance(recipe.value, str) or not _ID_RE.match(recipe.value):
            raise fail(call, "recommendations(recipe=...) must be a literal recipe name")
        calls.append((call.lineno, RecoRequest(recipe.value, n.value)))
    for scope in tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock)):
        for call in scope.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == "recommendations":
                raise fail(call, "recommendations() must not be inside {% for %}, macros or call blocks")
    if len(calls) > 1:
        raise _template_error((part,), calls[1][0], "recommendations() may appear once per part")
    return calls


def _parse_source(text: Any, part: str, allowed: frozenset[str], fields: Mapping[str, Field]) -> tuple[str, list[tuple[int, RecoRequest]]]:
    if not isinstance(text, str) or not text.strip():
        raise FieldError((part,), "is required (a Jinja template string)")
    if len(text) > MAX_TEMPLATE_LEN - 64:
        raise FieldError((part,), f"must be at most {MAX_TEMPLATE_LEN - 64} characters")
    try:
        tree = parse_template(text)
    except TemplateSyntaxError as exc:
        raise _template_error((part,), exc.lineno or 1, exc.message or "syntax error") from None
    return text, _check_tree(tree, part, allowed, fields)


def _unescaped(text: str) -> str:
    # Subject and text part are not HTML. The wrapper adds no line, so line numbers hold.
    return "{% autoescape false %}" + text + "{% endautoescape %}"


TEMPLATE_KEYS = frozenset({
    "id", "name", "description", "approval", "subject", "html", "text", "fields", "restricted",
    "flagged", "images", "sending", "recommendations",
})  # fmt: skip


def parse_template_doc(
    doc: Mapping[str, Any], brand: Brand, source: str = ""
) -> tuple[TemplateVersion | None, list[FieldError]]:
    """Validate and compile one template document against ``brand``; returns the version or
    every problem found (each a ``FieldError`` with a path; problems inside a Jinja source also
    carry ``template_line``)."""
    errors: list[FieldError] = []

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FieldError as exc:
            errors.append(exc)
            return None

    for key in doc:
        if key not in TEMPLATE_KEYS:
            errors.append(FieldError((str(key),), f"is not a known field (expected {sorted(TEMPLATE_KEYS)})"))

    def tid() -> str:
        value = doc.get("id")
        if not isinstance(value, str) or not _ID_RE.match(value):
            raise FieldError(("id",), "must be 1-64 characters of a-z, 0-9, '_' or '-'")
        return value

    def approval() -> str:
        value = doc.get("approval", "none")
        if not isinstance(value, str) or value not in APPROVAL_POLICIES:
            raise FieldError(("approval",), f"must be one of {list(APPROVAL_POLICIES)}")
        return value

    def images() -> tuple[str, ...]:
        value = doc.get("images")
        if value is None:
            return brand.image_domains
        if not isinstance(value, Mapping) or set(value) - {"allowed_domains"}:
            raise FieldError(("images",), "must be a mapping with allowed_domains")
        own = _domains(value.get("allowed_domains"), ("images", "allowed_domains"))
        return tuple(dict.fromkeys(brand.image_domains + own))

    def from_name() -> str:
        value = doc.get("sending")
        if value is None:
            return DEFAULT_FROM_NAME
        if not isinstance(value, Mapping) or set(value) - {"from_name"}:
            raise FieldError(("sending",), "must be a mapping with from_name")
        name = _str(value.get("from_name", DEFAULT_FROM_NAME), ("sending", "from_name"), 120, True)
        rest = name
        for ph in FROM_NAME_PLACEHOLDERS:
            rest = rest.replace(ph, "")
        if "{" in rest or "}" in rest or _TEXT_BAD_CHARS.search(name) or "\n" in name or "\r" in name:
            raise FieldError(("sending", "from_name"), "may use only {partner_name} and {brand_name} as placeholders, on one line")
        return name

    template_id = run(tid)
    name = run(lambda: _str(doc.get("name", template_id), ("name",), 200))
    description = run(lambda: _str(doc.get("description"), ("description",), 2000))
    policy = run(approval)
    image_domains = run(images) or ()
    restricted = run(lambda: brand.restricted + parse_restrictions(doc.get("restricted"), ("restricted",)))
    flagged = run(lambda: brand.flagged + parse_restrictions(doc.get("flagged"), ("flagged",)))
    sender_name = run(from_name)

    fields: dict[str, Field] = {}
    raw_fields = doc.get("fields", [])
    if not isinstance(raw_fields, list):
        errors.append(FieldError(("fields",), "must be a list of field mappings"))
        raw_fields = []
    if len(raw_fields) > MAX_FIELDS:
        errors.append(FieldError(("fields",), f"must have at most {MAX_FIELDS} fields"))
    for i, raw in enumerate(raw_fields):
        f = run(partial(_field_spec, raw, ("fields", i), image_domains))
        if f is None:
            continue
        if f.id in fields:
            errors.append(FieldError(("fields", i, "id"), f"repeats field {f.id!r}"))
            continue
        fields[f.id] = f

    subject = run(lambda: _parse_source(doc.get("subject"), "subject", VARIABLES - {"recommendations", "unsubscribe_url"}, fields))
    html = run(lambda: _parse_source(doc.get("html"), "html", VARIABLES, fields))
    text = run(lambda: _parse_source(doc.get("text"), "text", VARIABLES, fields))

    reco_doc = doc.get("recommendations")
    item_html, item_text = _RECO_DEFAULT_HTML, _RECO_DEFAULT_TEXT
    if reco_doc is not None:
        if not isinstance(reco_doc, Mapping) or set(reco_doc) - {"item_html", "item_text"}:
            errors.append(FieldError(("recommendations",), "must be a mapping with item_html and item_text"))
        else:
            item_html = reco_doc.get("item_html", item_html)
            item_text = reco_doc.get("item_text", item_text)
    item_html_src = run(lambda: _parse_source(item_html, "recommendations.item_html" if reco_doc else "item_html", ITEM_VARIABLES, {}))
    item_text_src = run(lambda: _parse_source(item_text, "recommendations.item_text" if reco_doc else "item_text", ITEM_VARIABLES, {}))

    if errors or None in (subject, html, text, item_html_src, item_text_src):
        return None, errors

    reco: RecoRequest | None = None
    html_calls, text_calls = html[1], text[1]
    if html_calls:
        reco = html_calls[0][1]
    if text_calls and reco is not None and text_calls[0][1] != reco:
        errors.append(_template_error(("text",), text_calls[0][0], "recommendations() must ask for the same n and recipe as in html"))
    if text_calls and reco is None:
        reco = text_calls[0][1]

    marked_html, links = run(lambda: _check_links(html[0], "html", fields, image_domains, 0, False)) or (None, [])
    marked_item = None
    if marked_html is not None:
        got = run(lambda: _check_links(item_html_src[0], "recommendations.item_html", {}, image_domains, 0, True))
        if got is not None:
            marked_item, item_links = got
            if len(item_links) > 0 and reco is not None:
                base = len(links)
                links = links + [Link(base + s, "recommendation", slot=s, line=html_calls[0][0] if html_calls else 1) for s in range(reco.n)]
    if len(links) > MAX_LINKS:
        errors.append(FieldError(("html",), f"must have at most {MAX_LINKS} links"))
    for fid, f in fields.items():  # a default must pass the rules a partner's value does
        if f.default is None:
            continue
        _clean, reason = check_value(f, f.default, image_domains, restricted or Restrictions())
        if reason is not None:
            i = next(j for j, r in enumerate(raw_fields) if isinstance(r, Mapping) and r.get("id") == fid)
            errors.append(FieldError(("fields", i, "default"), f"the default {reason}"))
    if errors or marked_html is None or marked_item is None:
        return None, errors

    try:
        compiled = (
            compile_template({"html": marked_html}, memoise=False, campaign=False),
            compile_template({"subject": _unescaped(subject[0]), "text": _unescaped(text[0])}, memoise=False, campaign=False),
            compile_template({"html": marked_item}, memoise=False, campaign=False),
            compile_template({"text": _unescaped(item_text_src[0])}, memoise=False, campaign=False),
        )
    except TemplateError as exc:  # checked above; kept for a clear message if it ever happens
        return None, [_template_error((exc.field,), exc.lineno, exc.reason)]
    document = dict(doc)
    version = content_hash({"template": document, "brand": dict(brand.document)})
    reads_contact = any(n.name == "contact" for src in (item_html_src[0], item_text_src[0])
                        for n in parse_template(src).find_all(nodes.Name))
    return TemplateVersion(
        template_id, name or template_id, description, version, policy, fields, tuple(links), reco,
        restricted, flagged, tuple(image_domains), sender_name, brand, document, source, *compiled,
        _item_reads_contact=reads_contact,
    ), []  # fmt: skip


# --- the brand --------------------------------------------------------------------------------

BRAND_KEYS = frozenset({
    "name", "sending_domain", "from_local", "bounce_domain", "postal_address", "website",
    "images", "restricted", "flagged",
})  # fmt: skip
_LOCAL_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,40}$")


def parse_brand_doc(doc: Mapping[str, Any]) -> tuple[Brand | None, list[FieldError]]:
    """Validate ``config/dm/brand.yaml``."""
    errors: list[FieldError] = []

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FieldError as exc:
            errors.append(exc)
            return None

    for key in doc:
        if key not in BRAND_KEYS:
            errors.append(FieldError((str(key),), f"is not a known field (expected {sorted(BRAND_KEYS)})"))

    def domain(key: str, required: bool) -> str:
        value = doc.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not _DOMAIN_RE.match(value.lower()):
            raise FieldError((key,), "must be a domain name (like mail.example.com)")
        return value.lower()

    def local() -> str:
        value = doc.get("from_local", "partners")
        if not isinstance(value, str) or not _LOCAL_RE.match(value):
            raise FieldError(("from_local",), "must be a mailbox name (a-z, 0-9, '.', '_', '-')")
        return value

    def website() -> str:
        value = _str(doc.get("website"), ("website",), 500)
        if value and (reason := check_url(value)):
            raise FieldError(("website",), reason)
        return value

    def images() -> tuple[str, ...]:
        value = doc.get("images")
        if value is None:
            return ()
        if not isinstance(value, Mapping) or set(value) - {"allowed_domains"}:
            raise FieldError(("images",), "must be a mapping with allowed_domains")
        return _domains(value.get("allowed_domains"), ("images", "allowed_domains"))

    name = run(lambda: _str(doc.get("name"), ("name",), 200, required=True))
    sending = run(lambda: domain("sending_domain", True))
    bounce = run(lambda: domain("bounce_domain", False))
    from_local = run(local)
    address = run(lambda: _str(doc.get("postal_address"), ("postal_address",), 500))
    site = run(website)
    image_domains = run(images)
    restricted = run(lambda: parse_restrictions(doc.get("restricted"), ("restricted",)))
    flagged = run(lambda: parse_restrictions(doc.get("flagged"), ("flagged",)))
    if errors:
        return None, errors
    return Brand(name, sending, from_local, bounce, address, site, image_domains, restricted,
                 flagged, dict(doc)), []  # fmt: skip


def version_from_document(document: Mapping[str, Any], brand_document: Mapping[str, Any]) -> TemplateVersion:
    """Rebuild a stored version (its template and brand documents) to render a pinned send.
    Raises ``ValueError`` if the documents no longer load (they did when stored)."""
    brand, errors = parse_brand_doc(brand_document)
    if brand is None:
        raise ValueError("; ".join(str(e) for e in errors))
    version, errors = parse_template_doc(document, brand)
    if version is None:
        raise ValueError("; ".join(str(e) for e in errors))
    return version
