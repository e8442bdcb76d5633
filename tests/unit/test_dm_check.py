"""`check_dm`: every problem under config/dm as file:line, for `kairos check-config`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.logic.decisions.config import ConfigError
from engine.logic.dm.check import check_dm
from engine.logic.dm.config import load_dm

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
id: broken
subject: Hello
fields:
  - id: headline
    kind: text
  - id: picture
    kind: colour
html: |
  <p>{{ fields.headline }}</p>
  <p>line two</p>
  <p>{% if %}</p>
text: |
  {{ fields.headline }}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config" / "dm", tmp_path / "dm")
    return tmp_path


def test_the_shipped_config_is_clean():
    assert check_dm(ROOT / "config") == []


def test_no_dm_folder_is_no_problem(tmp_path: Path):
    assert check_dm(tmp_path) == []
    assert load_dm(tmp_path).templates == {}


def test_problems_are_located_by_file_and_line(config: Path):
    bad = config / "dm" / "templates" / "broken.yaml"
    bad.write_text(TEMPLATE)
    problems = check_dm(config)
    assert f"{bad}:7: fields[1].kind must be one of ['text', 'rich_text', 'url', 'image_url', 'choice']" in problems
    fixed = TEMPLATE.replace("kind: colour", "kind: text")
    bad.write_text(fixed)
    problems = check_dm(config)
    # the syntax error is on line 3 of the html block, which starts after line 8
    assert len(problems) == 1 and problems[0].startswith(f"{bad}:11: html ")


def test_a_journey_naming_an_unknown_template(config: Path):
    j = config / "dm" / "journeys" / "welcome.yaml"
    j.write_text(j.read_text().replace("template: welcome-guide", "template: welcome-gide"))
    problems = check_dm(config)
    line = next(i for i, text in enumerate(j.read_text().splitlines(), 1) if "welcome-gide" in text)
    assert problems == [f"{j}:{line}: steps[1].template unknown template 'welcome-gide'"]


def test_a_broken_template_is_reported_once(config: Path):
    t = config / "dm" / "templates" / "welcome-guide.yaml"
    t.write_text(t.read_text().replace("{{ fields.tips }}", "{{ fields.tipz }}", 1))
    problems = check_dm(config)
    assert len(problems) == 1 and "fields.tipz is not declared" in problems[0]  # not also the journey


def test_brand_yaml_is_required_with_templates(config: Path):
    (config / "dm" / "brand.yaml").unlink()
    assert check_dm(config) == [f"{config / 'dm' / 'brand.yaml'}:1: is required: the brand's name and sending_domain"]


def test_yaml_errors_duplicates_and_ids(config: Path):
    (config / "dm" / "templates" / "x.yaml").write_text("id: [unclosed\n")
    (config / "dm" / "templates" / "copy.yaml").write_text((config / "dm" / "templates" / "welcome.yaml").read_text())
    (config / "dm" / "journeys" / "dup.yaml").write_text("id: a\nid: b\nsteps: [{template: welcome}]\n")
    with pytest.raises(ConfigError) as exc:
        load_dm(config)
    text = str(exc.value)
    assert "x.yaml:" in text and "invalid YAML" in text
    assert "copy.yaml:1: id 'welcome' is already used by" in text or "welcome.yaml:1: id 'welcome' is already used" in text
    assert "dup.yaml:2: duplicate key 'id'" in text


def test_the_dm_logic_is_pure():
    """No network, no clock, no environment, no global randomness in engine/logic/dm."""
    import ast

    banned = {"redis", "faust", "aiokafka", "kafka", "starlette", "httpx", "random", "os", "socket",
              "asyncio", "aiosmtplib", "aiosmtpd", "smtplib", "time", "secrets", "uuid"}  # fmt: skip
    for file in (ROOT / "engine" / "logic" / "dm").glob("*.py"):
        text = file.read_text()
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not set(names) & banned, f"{file.name} imports {names}"
        assert "datetime.now(" not in text and ".utcnow(" not in text and "environ" not in text, file.name
