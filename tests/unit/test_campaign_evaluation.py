"""Off-policy evaluation of a campaign's log against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.logic.decisions.evaluation import candidates_for, evaluate_log

# two variants shown with probability 0.4 each (0.5 each outside a 20 % holdout)
ROWS = [{"arm": "a", "probability": 0.4, "reward": 1.0},
        {"arm": "a", "probability": 0.4, "reward": 0.0},
        {"arm": "b", "probability": 0.4, "reward": 1.0},
        {"arm": "b", "probability": 0.4, "reward": 1.0}]


def test_hand_computed_values() -> None:
    doc = evaluate_log(ROWS, ["a", "b"], 0.2, {"always_b": {"a": 0.0, "b": 1.0},
                                                "uniform": {"a": 0.5, "b": 0.5}},
                       n_bootstrap=50)
    assert doc["rows"] == 4 and doc["traffic"] == {"a": 0.5, "b": 0.5}
    logged = doc["policies"]["logged"]
    assert logged["ips"]["value"] == pytest.approx(0.75)
    assert logged["dr"]["value"] == pytest.approx(0.75)
    b = doc["policies"]["always_b"]
    # w = [0, 0, 2, 2]: IPS = (2 + 2) / 4, SNIPS = 4 / 4, ESS = 4^2 / 8
    assert b["ips"]["value"] == pytest.approx(1.0)
    assert b["snips"]["value"] == pytest.approx(1.0)
    assert b["snips"]["ess"] == pytest.approx(2.0)
    # DR: q(a) = (1 + 0.75) / 3, q(b) = (2 + 0.75) / 3; mean(q(b) + w (r - q(logged)))
    qa, qb = 1.75 / 3, 2.75 / 3
    want = qb + (0 + 0 + 2 * (1 - qb) + 2 * (1 - qb)) / 4
    assert b["dr"]["value"] == pytest.approx(want)
    assert doc["policies"]["uniform"]["ips"]["value"] == pytest.approx(0.75)
    assert doc["replay"]["valid"] is True and doc["replay"]["rows"] == 4
    assert qa < qb


def test_candidates_and_an_empty_log() -> None:
    c = candidates_for(["a", "b"], {"a": 3, "b": 1}, {"a": 0.2, "b": 0.8}, ROWS)
    assert c["fixed_split"] == {"a": 0.75, "b": 0.25}
    assert c["greedy"] == {"a": 0.0, "b": 1.0}
    assert c["bandit"] == {"a": 0.2, "b": 0.8}
    assert evaluate_log([], ["a", "b"])["rows"] == 0


def test_kairos_evaluate_a_log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAIROS_SETTINGS_JSON", raising=False)
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["evaluate", str(log), "--control-share", "0.2", "--bootstrap", "20",
                 "--candidate", "always_b=a:0,b:1"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["policies"]["always_b"]["ips"]["value"] == pytest.approx(1.0)
    assert "SNIPS" in out
