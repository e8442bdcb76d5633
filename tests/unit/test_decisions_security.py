"""Nothing in config, events or profiles is ever evaluated as code."""

import ast
import builtins
import html
from pathlib import Path

import pytest
from markupsafe import escape

from engine.logic.decisions.config import ConfigError, load_config
from engine.logic.decisions.rules import compile_rule
from engine.logic.decisions.templates import compile_template, template_vars

PAYLOADS = [
    "${T(java.lang.Runtime).getRuntime().exec('touch /tmp/pwned')}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{7*7}}",
    "__import__('os').system('touch /tmp/pwned')",
    "#{@java.lang.Runtime@getRuntime().exec('id')}",  # OGNL
    "@{java.lang.Runtime.getRuntime().exec('id')}",  # MVEL
    "script::Runtime.getRuntime().exec('id')",  # Unomi CVE-2020-13942 style
    "{% import os %}",
    "eval('1+1')",
]
PACKAGE = Path(__file__).resolve().parents[2] / "engine" / "decisions"


@pytest.fixture
def no_code_execution(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("code execution attempted")

    monkeypatch.setattr(builtins, "eval", refuse)
    import os
    import subprocess

    monkeypatch.setattr(os, "system", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_in_rules_and_profiles_are_inert(payload, no_code_execution):
    rule = compile_rule(
        {
            "any": [
                {"trait": {"name": "email", "equals": payload}},
                {"segment": payload},
                {"affinity": {"dimension": "category", "key": payload, "op": ">=", "value": 1}},
                {"url": {"contains": payload}},
                {"utm": {"source": payload}},
            ]
        }
    )
    profile = {
        "profile_id": payload,
        "traits": {"email": payload, payload: payload},
        "segments": [payload],
        "affinities": {"category": {payload: 2.0}},
    }
    context = {"url": "https://x.test/?utm_source=" + payload, "page_type": payload}
    assert rule(profile, context, 0) is True  # compared as plain strings
    other = {"traits": {"email": "a@b.c"}, "profile_id": "v:1"}
    assert rule(other, {"page_type": payload}, 0) is False

    template = compile_template({"html": "{{ traits.email }}|{{ top_category }}"})
    out = template.render(template_vars(profile, context))["html"]
    # verbatim text, HTML-escaped (the sanitiser may spell an escape differently: ' or &#39;)
    assert "<" not in out and ">" not in out.replace("&gt;", "")
    assert html.unescape(out) == f"{payload}|{payload}"
    assert out.replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"') == \
        f"{escape(payload)}|{escape(payload)}".replace("&#39;", "'").replace("&#34;", '"')


def test_yaml_python_tags_are_rejected(tmp_path):
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "evil.yaml").write_text(
        "id: evil\nrule: !!python/object/apply:os.system ['touch pwned']\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "evil.yaml:2" in str(info.value)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_package_never_calls_eval_exec_or_unsafe_yaml():
    banned = {"eval", "exec", "__import__", "compile"}
    for file in PACKAGE.glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in banned, f"{file.name}:{node.lineno} calls {node.func.id}"
            if (
                isinstance(node, ast.Attribute)
                and node.attr
                in {
                    "load",
                    "unsafe_load",
                    "full_load",
                }
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
            ):
                raise AssertionError(f"{file.name}:{node.lineno} uses yaml.{node.attr}")


def test_package_is_pure():
    banned_imports = {"redis", "faust", "aiokafka", "kafka", "starlette", "httpx", "random", "os"}
    for file in PACKAGE.glob("*.py"):
        text = file.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not set(names) & banned_imports, f"{file.name} imports {names}"
        assert "datetime.now(" not in text and ".utcnow(" not in text and "environ" not in text
