"""Templates: sandboxed, autoescaped, compiled once, defaults for missing values."""

import pytest

from engine.logic.decisions.templates import (
    RenderError,
    TemplateError,
    compile_template,
    template_vars,
)

PROFILE = {
    "profile_id": "v:abc",
    "user_id": "u1",
    "event_count": 4,
    "affinities": {
        "category": {"shoes": 3.2, "hats": 0.5, "shoes/running": 2.1},
        "brand": {"acme": 1.0},
    },
    "traits": {"first_name": "Ada"},
    "recent_items": ["i1", "i2"],
    "cart": ["i2", "i3"],
}


def render(text, profile=PROFILE, **kw):
    return compile_template({"html": text}).render(template_vars(profile, **kw))["html"]


def test_variables():
    v = template_vars(PROFILE, {"page_type": "home"}, [{"id": "r1", "name": "Runner"}])
    assert v["top"]["category"] == ["shoes", "shoes/running", "hats"]
    assert v["top_category"] == "shoes"
    assert v["top_brand"] == "acme"
    assert v["top"]["tag"] == []
    assert v["known"] is True
    assert v["cart_count"] == 2
    assert v["recommendations"] == [{"id": "r1", "name": "Runner"}]
    assert v["page"]["page_type"] == "home"


def test_variables_are_computed_only_when_a_template_reads_them():
    v = template_vars(PROFILE, {"page_type": "home"})
    t = compile_template({"html": "{{ top_brand }} {{ page.page_type }} {{ range(2) | list }}"})
    assert t.render(v)["html"] == "acme home [0, 1]"  # a global (range) is still Jinja's own
    assert set(v._done) == {"top_brand", "page"}
    # the whole mapping is what the eager dict was
    full = dict(template_vars(PROFILE, {"page_type": "home"}))
    assert set(full) == {"top", "top_category", "top_brand", "traits", "known", "user_id",
                         "event_count", "segments", "recent_items", "cart", "cart_count",
                         "purchased", "recommendations", "page"}
    assert full["top_category"] == "shoes" and full["segments"] == []
    assert "nope" not in v
    with pytest.raises(KeyError):
        v["nope"]


def test_render_with_defaults_for_missing():
    assert render("Hi {{ traits.first_name | default('there') }}") == "Hi Ada"
    assert render("Hi {{ traits.first_name | default('there') }}", profile={}) == "Hi there"
    assert render("{{ traits.a.b.c | default('x') }}", profile={}) == "x"
    assert render("{{ top_category | default('new', true) }}", profile={}) == "new"
    assert render("{% for i in cart %}[{{ i }}]{% endfor %}") == "[i2][i3]"


def test_script_in_profile_field_is_inert():
    evil = dict(PROFILE, traits={"first_name": "<script>alert(1)</script>"})
    evil["affinities"] = {"category": {'"><img src=x onerror=alert(1)>': 9}}
    out = render('<p>{{ traits.first_name }}</p><a title="{{ top_category }}">', profile=evil)
    assert "<script>" not in out and "<img" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&quot;&gt;&lt;img" in out  # inside the attribute, as the sanitiser spells it


def test_jinja_in_profile_field_is_not_evaluated():
    evil = dict(PROFILE, traits={"first_name": "{{ 7*7 }}{% for x in range(9) %}x{% endfor %}"})
    out = render("{{ traits.first_name }}", profile=evil)
    assert "49" not in out and "xxxx" not in out
    assert out.startswith("{{ 7*7 }}")


def test_sandbox_blocks_attribute_escapes():
    tpl = compile_template({"html": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    with pytest.raises(RenderError):
        tpl.render(template_vars(PROFILE))
    tpl = compile_template({"html": "{{ cart.append('x') }}"})
    with pytest.raises(RenderError):
        tpl.render(template_vars(PROFILE))


def test_syntax_errors_carry_field_and_line():
    with pytest.raises(TemplateError) as info:
        compile_template({"title": "ok", "html": "line1\n{% if %}"})
    assert info.value.field == "html"
    assert info.value.lineno == 2
    with pytest.raises(TemplateError):
        compile_template({"html": 5})
    with pytest.raises(TemplateError):
        compile_template({"bad name": "x"})


@pytest.mark.parametrize(
    ("source", "line", "reason"),
    [
        ("{{ traits.bio | safe }}", 1, "the safe filter is not allowed"),
        ("<p>\n{% filter safe %}{{ x }}{% endfilter %}</p>", 2, "the safe filter is not allowed"),
        ("x\n\n{% autoescape false %}{{ x }}{% endautoescape %}", 3, "autoescape cannot be turned off"),
        ("{% autoescape flag %}{{ x }}{% endautoescape %}", 1, "autoescape cannot be turned off"),
        ("<p>hi</p>\n<style>*{position:fixed;inset:0}</style>", 2, "<style> is not allowed"),
        ('<form action="https://evil.example/steal"><input name=e></form>', 1,
         "attribute 'action' is not allowed on <form>"),
        ('<link rel="stylesheet" href="https://evil.example/x.css">', 1, "<link> is not allowed"),
        ('<svg><animate attributeName="href" to="javascript:alert(1)"/></svg>', 1, "<svg> is not allowed"),
        ('<a href="javascript:alert(1)">x</a>', 1, "must be an http(s) or mailto URL or a path"),
        ('<a href=" java\tscript:{{ x }}">x</a>', 1, "must be an http(s) or mailto URL or a path"),
        ('<a href="//evil.example">x</a>', 1, "must be an http(s) or mailto URL or a path"),
        ('<img src="/x.png" onerror="alert(1)">', 1, "event handlers never are"),
        ('<div style="position:fixed;inset:0">x</div>', 1, "attribute 'style' is not allowed"),
    ],
)
def test_escape_hatches_and_markup_outside_the_allow_list_are_refused(source, line, reason):
    with pytest.raises(TemplateError) as info:
        compile_template({"html": source})
    assert info.value.lineno == line and reason in info.value.reason


def test_rendered_fields_are_sanitised():
    """What exists only once rendered (a trait in an href) goes through the allow-list too."""
    import re

    from engine.logic.decisions.templates import url_allowed

    t = compile_template({"html": '<a href="{{ traits.site }}">me</a><a href="/{{ traits.site }}">p</a>'})
    for bad in ("javascript:alert(1)", "/evil.example", "data:text/html,x", "\\evil.example"):
        out = t.render(template_vars({"traits": {"site": bad}}))["html"]
        hrefs = re.findall(r'href="([^"]*)"', out)
        assert all(url_allowed(h) and not h.startswith("//") for h in hrefs), out
        assert 'href="javascript:' not in out and 'href="//' not in out, out
    ok = t.render(template_vars({"traits": {"site": "https://ada.example"}}))["html"]
    assert 'href="https://ada.example"' in ok


def test_the_memo_keys_only_the_members_a_template_reads() -> None:
    """`top` holds the top keys of every dimension (items too, which differ for nearly every
    visitor): a template reading only `top.category` renders once for visitors who share
    their top categories, and still right for each."""
    t = compile_template({"html": "<ul>{% for c in top.category[:2] %}<li>{{ c }}</li>{% endfor %}</ul>"})

    def visitor(item: str, cats: dict[str, float]) -> dict[str, object]:
        return {"affinities": {"category": cats, "item": {item: 1.0}}}

    a = t.render(template_vars(visitor("i1", {"shoes": 2.0, "books": 1.0})))
    b = t.render(template_vars(visitor("i2", {"shoes": 3.0, "books": 0.5})))
    c = t.render(template_vars(visitor("i3", {"books": 3.0, "shoes": 0.5})))
    assert a == b == {"html": "<ul><li>shoes</li><li>books</li></ul>"}
    assert c == {"html": "<ul><li>books</li><li>shoes</li></ul>"}
    assert len(t._cache) == 2
    # read whole (or through a dict method): the whole value is the key
    whole = compile_template({"t": "{{ top.items() | length }} {{ top.category[0] }}"})
    whole.render(template_vars(visitor("i1", {"shoes": 1.0})))
    whole.render(template_vars(visitor("i2", {"shoes": 1.0})))
    assert len(whole._cache) == 2


def test_the_memo_keys_only_the_front_of_a_list_a_template_reads() -> None:
    """`top.category[:2]` (or `cart[:2]`, `x[0]`) reads the front of a list: visitors who
    share it share one rendering, whatever comes after; a template that also reads the list
    another way (`| length`, a non-constant slice) is keyed by all of it."""
    t = compile_template({"html": "{% for c in top.category[:2] %}{{ c }} {% endfor %}"
                                  "{{ top.category[1] }}|{% for i in cart[:1] %}{{ i }}{% endfor %}"})

    def visitor(cats: dict[str, float], cart: list[str]) -> dict[str, object]:
        return {"affinities": {"category": cats}, "cart": cart}

    a = t.render(template_vars(visitor({"shoes": 3.0, "books": 2.0, "toys": 1.0}, ["x", "y"])))
    b = t.render(template_vars(visitor({"shoes": 3.0, "books": 2.0, "garden": 1.0}, ["x", "z"])))
    c = t.render(template_vars(visitor({"shoes": 3.0, "toys": 2.0}, ["x"])))
    assert a == b == {"html": "shoes books books|x"}
    assert c == {"html": "shoes toys toys|x"}
    assert len(t._cache) == 2
    for text in ("{{ top.category[:2] | join }} {{ top.category | length }}",
                 "{% for c in top.category[:cart_count] %}{{ c }}{% endfor %}",
                 "{{ top.category[-1] }}{{ top.category[:1] | join }}",
                 "{{ cart[:1] | join }}{{ cart | length }}"):
        whole = compile_template({"t": text})
        outs = [whole.render(template_vars(visitor({"shoes": 3.0, "books": 2.0, k: 1.0},
                                                   ["x", k])))["t"] for k in ("toys", "garden")]
        assert len(whole._cache) == 2, text
        assert outs == [compile_template({"t": text}, memoise=False).render(
            template_vars(visitor({"shoes": 3.0, "books": 2.0, k: 1.0}, ["x", k])))["t"]
            for k in ("toys", "garden")], text
