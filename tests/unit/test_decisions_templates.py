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
    assert "&#34;&gt;&lt;img" in out


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
