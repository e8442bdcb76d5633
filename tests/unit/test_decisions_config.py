"""Config loader: shipped examples load; every problem is reported with file, line and reason."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.logic.decisions.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]

GOOD_SEGMENT = "id: fans\nname: Fans\nrule:\n  known: true\n"
GOOD_CAMPAIGN = """\
id: promo
name: Promo
status: active
priority: 5
zones: [home_hero]
variants:
  - id: a
    template: {title: "Hi"}
"""


def write(tmp_path: Path, kind: str, name: str, text: str) -> Path:
    folder = tmp_path / kind
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    return [str(p) for p in info.value.problems]


def test_shipped_examples_load():
    config = load_config(ROOT / "config")
    assert {"shoe_lovers", "cart_abandoners", "first_time_visitors", "app_users"} <= set(
        config.segments
    )
    assert {"first_visit_discount", "cart_reminder", "email_capture", "home_hero"} <= set(
        config.campaigns
    )
    hero = config.campaigns["home_hero"]
    assert hero.control_percent == 10 and [v.id for v in hero.variants] == ["a", "b"]
    assert hero.arm_probabilities() == pytest.approx({"a": 0.45, "b": 0.45, "control": 0.1})
    exit_intent = [c.id for c in config.by_zone["exit_intent"]]
    assert exit_intent == sorted(exit_intent, key=lambda i: -config.campaigns[i].priority)
    assert config.campaigns["first_visit_discount"].caps.stop_after == {"dismiss", "conversion"}
    assert config.campaigns["first_visit_discount"].schedule.start == datetime(
        2024, 12, 31, 23, 0, tzinfo=UTC
    )


def test_valid_minimal(tmp_path):
    write(tmp_path, "segments", "fans.yaml", GOOD_SEGMENT)
    write(tmp_path, "campaigns", "promo.yaml", GOOD_CAMPAIGN)
    config = load_config(tmp_path)
    promo = config.campaigns["promo"]
    assert promo.channels is None and promo.goal is None and promo.caps.per_day is None
    assert promo.targeting({}, {}, 0) is True


def test_rule_error_points_at_the_line(tmp_path):
    write(
        tmp_path,
        "segments",
        "bad.yaml",
        "id: bad\nrule:\n  all:\n    - known: true\n    - segment: fans\n"
        "    - affinity:\n        dimension: category\n        value: lots\n",
    )
    write(tmp_path, "segments", "fans.yaml", GOOD_SEGMENT)
    (msg,) = problems(tmp_path)
    assert msg.endswith("bad.yaml:8: rule.all[2].affinity.value must be a number")


def test_every_problem_is_listed(tmp_path):
    write(
        tmp_path,
        "campaigns",
        "broken.yaml",
        """\
id: Bad Id
status: live
priority: high
zones: []
schedule: {start: 2025-02-01, end: 2025-01-01, timezone: Europe/Paris}
caps: {per_day: 0, stop_after: [boredom]}
control_percent: 100
targeting:
  segment: nobody
variants:
  - id: control
    template: {title: "x"}
goal: {event: purchase, window: forever}
colour: red
""",
    )
    found = problems(tmp_path)
    text = "\n".join(found)
    expected = [
        "broken.yaml:1: id must be",
        "broken.yaml:2: status must be one of",
        "broken.yaml:3: priority must be an integer",
        "broken.yaml:4: zones must be a non-empty list",
        "broken.yaml:5: schedule.end must be after start",
        "broken.yaml:6: caps.stop_after must be a list",
        "broken.yaml:7: control_percent must be >= 0 and < 100",
        "broken.yaml:11: variants[0].id must not be 'control'",
        "broken.yaml:13: goal.window must be a duration",
        "broken.yaml:14: colour is not a known field",
    ]
    for item in expected:
        assert item in text, (item, text)


def test_cross_file_problems(tmp_path):
    write(tmp_path, "segments", "a.yaml", "id: a\nrule:\n  segment: b\n")
    write(tmp_path, "segments", "b.yaml", "id: b\nrule:\n  segment: a\n")
    write(tmp_path, "campaigns", "one.yaml", GOOD_CAMPAIGN)
    write(tmp_path, "campaigns", "two.yaml", GOOD_CAMPAIGN + "targeting:\n  segment: ghost\n")
    text = "\n".join(problems(tmp_path))
    assert "segment cycle" in text
    assert "two.yaml:1: id 'promo' is already used by" in text


def test_unknown_segment_reference(tmp_path):
    write(
        tmp_path,
        "campaigns",
        "c.yaml",
        GOOD_CAMPAIGN + "targeting:\n  any:\n    - segment: ghost\n",
    )
    (msg,) = problems(tmp_path)
    assert "c.yaml:9: unknown segment 'ghost'" in msg


def test_yaml_syntax_and_duplicate_keys(tmp_path):
    write(tmp_path, "segments", "syntax.yaml", "id: x\nrule: [unclosed\n")
    write(tmp_path, "segments", "dup.yaml", "id: y\nrule: {known: true}\nid: z\n")
    write(tmp_path, "segments", "list.yaml", "- id: x\n")
    text = "\n".join(problems(tmp_path))
    assert "syntax.yaml:3: invalid YAML" in text
    assert "dup.yaml:3: duplicate key 'id'" in text
    assert "list.yaml:1: must be a mapping" in text


def test_template_error_located(tmp_path):
    write(
        tmp_path,
        "campaigns",
        "t.yaml",
        GOOD_CAMPAIGN.replace('{title: "Hi"}', '{title: "{{ oops "}'),
    )
    (msg,) = problems(tmp_path)
    assert "t.yaml:8: variants[0].template.title line 1 of the template" in msg


def test_live_segments_follow_dependencies(tmp_path):
    write(tmp_path, "segments", "base.yaml", "id: base\nrule: {known: true}\n")
    write(tmp_path, "segments", "derived.yaml", "id: derived\nrule: {segment: base}\n")
    config = load_config(tmp_path)
    assert list(config.segments) == ["base", "derived"]
    profile = {"user_id": "u1", "segments": ["imported", "derived"]}
    assert config.evaluate_segments(profile, {}, 0) == ["imported", "base", "derived"]
    assert config.evaluate_segments({"segments": ["base"]}, {}, 0) == []
