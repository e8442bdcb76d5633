"""Distributed-marketing templates: locked regions, partner values, links, recommendations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.logic.decisions.templates import RenderError
from engine.logic.dm.config import load_dm
from engine.logic.dm.templates import (
    Brand,
    Restrictions,
    TemplateVersion,
    ValuesError,
    check_url,
    parse_brand_doc,
    parse_template_doc,
    version_from_document,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_dm(ROOT / "config")

BRAND_DOC = {
    "name": "Northgate Electronics",
    "sending_domain": "mail.northgate.example",
    "images": {"allowed_domains": ["cdn.northgate.example"]},
    "restricted": {"words": ["guarantee", "risk-free"], "patterns": [r"\b[1-9][0-9]\s*%\s*off\b"]},
    "flagged": {"words": ["free"]},
}


def brand() -> Brand:
    b, errors = parse_brand_doc(BRAND_DOC)
    assert b is not None, errors
    return b


def doc(**over) -> dict:
    base = {
        "id": "t",
        "subject": "Hello {{ contact.first_name }}: {{ fields.headline }}",
        "html": (
            '<html><body><h1>{{ fields.headline }}</h1><div>{{ fields.body }}</div>\n'
            '<a href="{{ fields.cta }}">Go</a>\n'
            '<a href="https://www.northgate.example/p/1005115" data-item="1005115">Phone</a>\n'
            '<img src="{{ fields.hero }}" alt="">\n'
            '{% if fields.tone == "formal" %}<p>Dear customer</p>{% else %}<p>Hi!</p>{% endif %}\n'
            '<table><tr>{{ recommendations(n=2, recipe="default") }}</tr></table>\n'
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>'
        ),
        "text": "{{ fields.headline }}\n{{ fields.body }}\n{{ recommendations(n=2) }}",
        "fields": [
            {"id": "headline", "kind": "text", "max_length": 60, "required": True, "default": "New in"},
            {"id": "body", "kind": "rich_text", "default": "<p>Our <b>new</b> range.</p>"},
            {"id": "cta", "kind": "url", "domains": ["northgate.example"],
             "default": "https://www.northgate.example/new"},
            {"id": "hero", "kind": "image_url", "default": "https://cdn.northgate.example/h.jpg"},
            {"id": "tone", "kind": "choice", "choices": ["warm", "formal"], "default": "warm"},
        ],
    }  # fmt: skip
    base.update(over)
    return base


def version(**over) -> TemplateVersion:
    v, errors = parse_template_doc(doc(**over), brand())
    assert v is not None, [str(e) for e in errors]
    return v


def errors_of(**over) -> list[str]:
    v, errors = parse_template_doc(doc(**over), brand())
    assert v is None
    return [str(e) for e in errors]


ITEMS = [
    {"id": "1005115", "name": "Apple Smartphone Pro", "url": "https://www.northgate.example/p/1005115",
     "image_url": "https://cdn.northgate.example/p/1005115.jpg", "price": 975.57, "currency": "GBP",
     "categories": ["electronics.smartphone"], "brand": "apple"},
    {"id": "4802036", "name": "Sony Headphone", "url": "https://www.northgate.example/p/4802036",
     "image_url": "https://evil.example/x.jpg", "categories": ["electronics.audio.headphone"]},
    {"id": "3", "name": "Third", "url": "https://www.northgate.example/p/3"},
]  # fmt: skip


# --- the examples --------------------------------------------------------------------------


def test_example_templates_and_journey_load():
    assert set(CONFIG.templates) == {"thank-you", "meeting-follow-up", "seasonal-picks", "welcome", "welcome-guide"}
    assert set(CONFIG.journeys) == {"welcome"}
    assert CONFIG.templates["seasonal-picks"].approval == "required"
    assert CONFIG.templates["seasonal-picks"].recommendation is not None
    for t in CONFIG.templates.values():
        rendered = t.render({}, contact={"first_name": "Ann"}, partner={"name": "Northgate Leeds"},
                            items=ITEMS, unsubscribe_url="https://k.example/m/u/x")  # fmt: skip
        assert rendered.subject and "Northgate" in rendered.html and rendered.text.strip()
        assert "https://k.example/m/u/x" in rendered.html and "https://k.example/m/u/x" in rendered.text


# --- locked regions ------------------------------------------------------------------------


def test_render_without_values_equals_the_brand_render_with_defaults():
    v = version()
    kw = dict(contact={"first_name": "Ann"}, partner={"name": "Leeds"}, items=ITEMS,
              unsubscribe_url="https://k.example/u")  # fmt: skip
    assert v.render({}, **kw) == v.render(v.defaults(), **kw)
    for t in CONFIG.templates.values():
        assert t.render({}, **kw) == t.render(t.defaults(), **kw)


def test_everything_not_declared_is_locked():
    v = version()
    partner_values = {
        "headline": "Spring at Leeds", "body": "<p>Come <i>and</i> see</p>",
        "cta": "https://leeds.northgate.example/spring", "hero": "https://cdn.northgate.example/s.jpg",
    }  # fmt: skip
    mine = v.skeleton(partner_values, contact={"first_name": "Ann"})
    brands = v.skeleton({}, contact={"first_name": "Ann"})
    assert mine == brands
    assert "\u27e6headline\u27e7" in mine.html and "Spring" not in mine.html
    # a choice selects brand content, so it shows in the skeleton
    assert v.skeleton({"tone": "formal"}).html != brands.html
    assert "Dear customer" in v.skeleton({"tone": "formal"}).html


def test_undeclared_field_is_refused_by_name():
    v = version()
    with pytest.raises(ValuesError) as exc:
        v.validate({"headline": "ok", "footer": "<b>mine</b>", "unsubscribe_url": "x"})
    fields = {p.field for p in exc.value.problems}
    assert fields == {"fields.footer", "fields.unsubscribe_url"}
    assert all(p.reason == "is not an editable field of this template" for p in exc.value.problems)
    with pytest.raises(ValuesError):
        v.render({"footer": "x"})


def test_template_may_not_use_an_undeclared_field_or_unknown_variable():
    assert any("fields.nope is not declared" in e for e in errors_of(subject="{{ fields.nope }}"))
    assert any("unknown variable 'profile'" in e for e in errors_of(text="{{ profile.email }}"))
    assert any("fields must be used as fields.<id>" in e for e in errors_of(text="{% for k in fields %}{{ k }}{% endfor %}"))


def test_brand_source_cannot_unescape():
    assert any("|safe" in e for e in errors_of(text="{{ fields.body | safe }}"))
    assert any("autoescape" in e for e in errors_of(
        html='{% autoescape false %}{{ fields.body }}{% endautoescape %}'))  # fmt: skip
    assert any("include" in e for e in errors_of(html='{% include "x.html" %}'))


# --- values by kind --------------------------------------------------------------------------


def problems(v: TemplateVersion, values: dict) -> dict[str, str]:
    with pytest.raises(ValuesError) as exc:
        v.validate(values)
    return {p.field: p.reason for p in exc.value.problems}


def test_text_values():
    v = version()
    assert problems(v, {"headline": "x" * 61})["fields.headline"] == "must be at most 60 characters"
    assert problems(v, {"headline": ""})["fields.headline"] == "is required"
    assert problems(v, {"headline": 5})["fields.headline"] == "must be a string"
    assert "control characters" in problems(v, {"headline": "a\x00b"})["fields.headline"]
    assert v.validate({"headline": None})["headline"] == "New in"  # null: the default


@pytest.mark.parametrize("url, ok", [
    ("https://www.northgate.example/a?b=1", True),
    ("https://northgate.example/", True),
    ("HTTPS://shop.northgate.example/x", True),
    ("http://www.northgate.example/", False),
    ("javascript:alert(1)", False),
    (" javascript:alert(1)", False),
    ("JaVaScRiPt:alert(1)", False),
    ("data:text/html,<script>alert(1)</script>", False),
    ("https://evil.example/", False),
    ("https://northgate.example.evil.example/", False),
    ("https://user:pw@www.northgate.example/", False),
    ('https://www.northgate.example/" onmouseover="x', False),
    ("https://www.northgate.example/a)b", False),
    ("//www.northgate.example/", False),
])  # fmt: skip
def test_url_values(url, ok):
    v = version()
    if ok:
        assert v.validate({"cta": url})["cta"] == url.strip()
    else:
        assert "fields.cta" in problems(v, {"cta": url})


def test_image_url_values_keep_to_the_allowed_domains():
    v = version()
    assert v.validate({"hero": "https://cdn.northgate.example/x.png"})["hero"]
    assert "allowed domain" in problems(v, {"hero": "https://tracker.example/p.gif"})["fields.hero"]
    assert "https" in problems(v, {"hero": "http://cdn.northgate.example/x.png"})["fields.hero"]
    assert "fields.hero" in problems(v, {"hero": "javascript:alert(1)"})


def test_choice_values():
    v = version()
    assert v.validate({"tone": "formal"})["tone"] == "formal"
    assert problems(v, {"tone": "shouty"})["fields.tone"] == "must be one of ['warm', 'formal']"


def test_rich_text_is_cleaned_to_the_allow_list():
    v = version()
    clean = v.validate({"body": '<p class="x" onclick="evil()">Hi <b>you</b> <a href="https://x.example">link</a>'
                                '<script>alert(1)</script><style>p{}</style><img src=x onerror=alert(1)></p>'})  # fmt: skip
    assert clean["body"] == "<p>Hi <b>you</b> link</p>"


XSS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">click</a>',
    '"><svg onload=alert(1)>',
    "{{7*7}}",
    "{% for x in range(10) %}loop{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
]


@pytest.mark.parametrize("payload", XSS)
def test_script_in_a_value_renders_inert(payload):
    v = version()
    r = v.render({"headline": payload[:60], "body": payload}, contact={"first_name": payload},
                 partner={"name": payload}, unsubscribe_url="https://k.example/u")  # fmt: skip
    tags = re.findall(r"<[^>]*>", r.html)
    assert not [t for t in tags if re.match(r"<\s*(script|svg|iframe|object)", t, re.I)]
    assert not [t for t in tags if re.search(r"\son\w+\s*=", t, re.I)]  # no event handler
    urls = re.findall(r'(?:href|src)="([^"]*)"', r.html)
    assert urls and all(u.startswith("https://") for u in urls)
    assert "49" not in r.html and "looploop" not in r.html and "mro" not in r.text.replace(payload, "")


def test_values_are_never_compiled():
    v = version()
    r = v.render({"headline": "{{7*7}}"}, contact={"first_name": "{{ 6*7 }}"})
    assert "{{7*7}}" in r.html and "{{7*7}}" in r.subject and "{{ 6*7 }}" in r.subject
    assert "49" not in r.html and "42" not in r.subject


def test_restricted_words_block_and_flagged_words_are_reported():
    v = version()
    assert "guarantee" in problems(v, {"headline": "Price GUARANTEE"})["fields.headline"]
    assert "restricted" in problems(v, {"body": "<p>Now 25 % off!</p>"})["fields.body"]
    assert v.validate({"body": "<p>5% off</p>"})  # one digit is fine by this pattern
    assert v.flagged_hits({"headline": "Free setup"}) == {"headline": ["free"]}
    assert v.flagged_hits({"headline": "Freedom"}) == {}  # whole words only
    # look-alike letters are normalised (NFKC): a full-width "ｇｕａｒａｎｔｅｅ" is caught
    assert "fields.headline" in problems(v, {"headline": "\uff47\uff55\uff41\uff52\uff41\uff4e\uff54\uff45\uff45"})


def test_defaults_must_pass_the_same_rules():
    bad = doc()
    bad["fields"][0]["default"] = "Our guarantee"
    assert any("fields[0].default the default contains restricted wording" in e
               for e in [str(x) for x in parse_template_doc(bad, brand())[1]])  # fmt: skip


# --- links ---------------------------------------------------------------------------------


def test_every_link_is_enumerated_at_load():
    v = version()
    kinds = [(lk.index, lk.kind) for lk in v.links]
    assert kinds == [(0, "field"), (1, "static"), (2, "unsubscribe"), (3, "recommendation"), (4, "recommendation")]
    assert v.links[0].field == "cta" and v.links[1].url == "https://www.northgate.example/p/1005115"
    assert v.links[1].item == "1005115"
    assert [lk.slot for lk in v.links[3:]] == [0, 1]


def test_send_render_points_tracked_links_at_the_redirect():
    v = version()
    r = v.render({}, items=ITEMS, unsubscribe_url="https://k.example/u/1",
                 link_url=lambda i: f"https://k.example/m/c/{i}?x=1&y=2")  # fmt: skip
    hrefs = re.findall(r'href="([^"]*)"', r.html)
    assert hrefs == [
        "https://k.example/m/c/0?x=1&amp;y=2", "https://k.example/m/c/1?x=1&amp;y=2",
        "https://k.example/m/c/3?x=1&amp;y=2", "https://k.example/m/c/4?x=1&amp;y=2",
        "https://k.example/u/1",
    ]  # fmt: skip
    assert "data-kairos-link" not in r.html
    targets = {lk.index: (lk.url, lk.item) for lk in r.links}
    assert targets[0] == ("https://www.northgate.example/new", None)
    assert targets[1] == ("https://www.northgate.example/p/1005115", {"id": "1005115"})
    assert targets[3][1] == {"id": "1005115", "categories": ["electronics.smartphone"], "brand": "apple"}
    assert targets[4][0] == "https://www.northgate.example/p/4802036"


def test_preview_keeps_targets():
    r = version().render({}, items=ITEMS)
    assert 'href="https://www.northgate.example/new"' in r.html
    assert "data-kairos-link" not in r.html


@pytest.mark.parametrize("html, message", [
    ('<a href="http://www.northgate.example/">x</a>', "https://"),
    ('<a href="javascript:alert(1)">x</a>', "https://"),
    ("<a href='https://www.northgate.example/'>x</a>", "double quotes"),
    ('<a href="{{ contact.website }}">x</a>', "literal https URL"),
    ('<a href="https://x.example/?q={{ fields.headline }}">x</a>', "literal https URL"),
    ('<a href="{{ fields.headline }}">x</a>', "not a url field"),
    ('<a {{ "href" }}="x">x</a>', "must not print attributes"),
    ('{% for i in [1, 2] %}<a href="https://x.example/">x</a>{% endfor %}', "inside {% for %}"),
    ('<a href="https://x.example/" data-kairos-link="9">x</a>', "reserved"),
    ('<img src="https://tracker.example/p.gif">', "must be on"),
    ('<img src="{{ fields.cta }}">', "not an image_url field"),
    ('{{ recommendations(n=contact.n) }}', "literal integer"),
    ('{{ recommendations(n=50) }}', "from 1 to 12"),
    ('{{ recommendations() }}{{ recommendations() }}', "once per part"),
])  # fmt: skip
def test_link_and_image_rules(html, message):
    errors = errors_of(html=html, text="t")
    assert any(message in e for e in errors), errors


def test_recommendations_are_supplied_by_the_caller():
    v = version()
    assert v.recommendation is not None and (v.recommendation.recipe, v.recommendation.n) == ("default", 2)
    r = v.render({}, items=ITEMS)
    assert "Apple Smartphone Pro" in r.html and "975.57 GBP" in r.html
    assert "https://cdn.northgate.example/p/1005115.jpg" in r.html
    assert "evil.example" not in r.html  # an image off the allowed domains is dropped
    assert "Third" not in r.html  # n=2
    assert "Apple Smartphone Pro" in r.text and "https://www.northgate.example/p/1005115" in r.text
    none = v.render({}, items=[])
    assert "Apple" not in none.html and not [lk for lk in none.links if lk.kind == "recommendation"]
    bad = v.render({}, items=[{"id": "x", "name": "<script>", "url": "javascript:alert(1)"}])
    assert "javascript" not in bad.html


def test_item_fields_are_escaped():
    r = version().render({}, items=[{"id": "1", "name": '<img src=x onerror=alert(1)>',
                                     "url": "https://www.northgate.example/p/1"}])  # fmt: skip
    assert "<img src=x" not in r.html and "&lt;img src=x" in r.html


def test_subject_and_text_are_not_html_escaped():
    r = version().render({"headline": "Tom & Jerry's"}, contact={"first_name": "Zoë"})
    assert r.subject == "Hello Zoë: Tom & Jerry's"
    assert r.text.startswith("Tom & Jerry's")
    assert "Tom &amp; Jerry&#39;s" in r.html


def test_sandbox_still_holds():
    assert "class" not in version(html="<p>{{ brand.name.__class__ }}</p>", text="t").render({}).html
    v = version(html="<p>{{ brand.name.__class__.__mro__[1].__subclasses__() }}</p>", text="t")
    with pytest.raises(RenderError):
        v.render({})


# --- versions ------------------------------------------------------------------------------


def test_versions_are_content_hashes():
    a, b = version(), version()
    assert a.version == b.version and len(a.version) == 64
    assert version(name="Other").version != a.version
    other_brand, _ = parse_brand_doc({**BRAND_DOC, "postal_address": "1 New Street"})
    assert other_brand is not None
    moved, _ = parse_template_doc(doc(), other_brand)
    assert moved is not None and moved.version != a.version


def test_a_stored_version_renders_again():
    a = version()
    again = version_from_document(a.document, a.brand.document)
    assert again.version == a.version
    kw = dict(items=ITEMS, unsubscribe_url="https://k.example/u", link_url=lambda i: f"https://k/{i}")
    assert again.render({"headline": "X"}, **kw) == a.render({"headline": "X"}, **kw)


def test_check_url():
    assert check_url("https://a.example/") is None
    assert check_url("https://a.example:99999/") is not None
    assert check_url("https://sub.a.example/", ["a.example"]) is None
    assert check_url("https://a.example.org/", ["a.example"]) is not None


def test_restrictions_whole_words():
    r = Restrictions(("lowest price",), ())
    assert r.hits("The LOWEST  price") == [] and r.hits("the lowest price") == ["lowest price"]
