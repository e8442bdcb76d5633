"""The learning loop on real Valkey and Kafka: decisions -> rewards -> the model's version
advances in Redis -> the API decides with the new version; a learner killed with SIGKILL and
restarted counts no reward twice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from engine.logic.decisions.config import PolicySpec
from engine.logic.decisions.policy import restore_model
from engine.store import keys
from tests.conftest import Stack, uid, wait_for

pytestmark = pytest.mark.integration

OFFER = """\
id: offer
name: Learnt offer
status: active
zones: [hero]
control_percent: 10
policy: thompson
variants:
  - id: a
    template: {title: "Offer A"}
  - id: b
    template: {title: "Offer B"}
goal:
  event: purchase
  window: 1d
"""

CTX_OFFER = """\
id: ctx_offer
name: Contextual offer in two slots
status: active
zones: [ctx]
control_percent: 10
policy: {type: contextual, epsilon: 0.1, temperature: 0.2, learning_rate: 0.5}
slots: 2
variants:
  - id: a
    template: {title: "A"}
  - id: b
    template: {title: "B"}
  - id: c
    template: {title: "C"}
"""

EXIT_OFFER = """\
id: exit_offer
name: Exit offer for visitors likely to leave
status: active
zones: [exit_intent]
targeting:
  exit_probability: {op: ">=", value: 0.0}
variants:
  - id: only
    template: {title: "Before you go"}
"""


class Loop:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.r = redis.Redis.from_url(stack.settings.redis_url or "")
        self.group = stack.settings.group_id
        self.shown = {"a": 0, "b": 0}
        self.decision_ids: list[str] = []

    def decide(self, vid: str) -> dict[str, Any]:
        for _ in range(20):  # a loaded machine may miss the read deadline: `degraded`, retry
            r = self.stack.http.post("/v1/decide", json={"visitor_id": vid,
                                                          "context": {"zones": ["hero"]}})
            assert r.status_code == 200, r.text
            body = r.json()
            if not body.get("degraded"):
                (d,) = body["decisions"]
                return d  # type: ignore[no-any-return]
        raise AssertionError(f"decide stayed degraded: {body}")

    def react(self, d: dict[str, Any]) -> None:
        """Every `b` shown is clicked, every `a` is not; the control group is not learnt."""
        if d["control"]:
            assert d["probability"] == pytest.approx(0.1)
            return
        self.shown[d["variant"]] += 1
        self.decision_ids.append(d["decision_id"])
        if d["variant"] == "b":
            click = {"event_id": f"{d['decision_id'][-12:]}-c", "type": "click",
                     "visitor_id": uid(), "decision_id": d["decision_id"],
                     "ts": int(time.time() * 1000)}
            assert self.stack.post([click]).status_code == 200

    def round(self, n: int) -> None:
        for _ in range(n):
            self.react(self.decide(uid()))

    def version(self) -> int:
        v = self.r.hget(keys.model_versions(self.group), "offer")
        return int(v) if v is not None else 0

    def model(self):  # type: ignore[no-untyped-def]
        return restore_model(PolicySpec("thompson"), self.r.get(keys.model(self.group, "offer")))

    def state(self) -> str:
        m = self.model()
        return f"model a={m.posterior('a')} b={m.posterior('b')}, shown {self.shown}"

    def learnt(self) -> bool:
        """The published model has counted exactly what was shown: b always rewarded."""
        m = self.model()
        return (m.posterior("a"), m.posterior("b")) == (
            (1.0, 1.0 + self.shown["a"]), (1.0 + self.shown["b"], 1.0))


def browse_until_scored(stack: Stack, vid: str, timeout: float = 60.0
                        ) -> tuple[int, dict[str, Any]]:
    """Three item views of `vid`, then the propensity the learner wrote for them, as the
    profile API shows it; (the first view's time, the propensity)."""
    now = int(time.time() * 1000)
    events = [{"event_id": f"{vid}-{i}", "type": "item_view", "visitor_id": vid, "ts": now + i,
               "item": {"id": f"i{i}", "price": 10}} for i in range(3)]
    assert stack.post(events).status_code == 200

    def scored() -> dict[str, Any] | None:
        r = stack.profile(vid)
        return r.json().get("propensity") if r.status_code == 200 else None

    return now, wait_for(scored, timeout, "the propensity in the profile")


@pytest.fixture(scope="module")
def learning_stack(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Stack]:
    cdir = tmp_path_factory.mktemp("learn-config")
    (cdir / "campaigns").mkdir()
    (cdir / "campaigns" / "offer.yaml").write_text(OFFER)
    (cdir / "campaigns" / "exit_offer.yaml").write_text(EXIT_OFFER)
    (cdir / "campaigns" / "ctx_offer.yaml").write_text(CTX_OFFER)
    stack = make_stack(name="learn", config_dir=cdir, workers=1, reward_window_s=4.0,
                       decide_deadline_ms=1000,
                       model_publish_s=0.2, learner_snapshot_s=3.0, model_reload_s=0.2,
                       learner_lease_ms=2000)
    yield stack
    stack.stop()


def test_rewards_advance_the_model_the_api_serves_it_and_a_killed_learner_counts_once(
        learning_stack: Stack) -> None:
    stack = learning_stack
    loop = Loop(stack)
    learner = stack.start_learner()
    # before anything is learnt, the prior: both variants equally likely
    first = loop.decide(uid())
    assert first["probability"] == pytest.approx(0.1 if first["control"] else 0.45, abs=1e-6)
    loop.react(first)

    loop.round(20)
    wait_for(loop.learnt, timeout=60, what="the first rewards learnt and published")
    v1 = loop.version()
    assert v1 >= 1
    # the API decides with the published version: the probability it logs is the model's
    model = loop.model()
    probs = model.probabilities(["a", "b"])
    assert probs["b"] > 0.9

    def served() -> bool:
        d = loop.decide(uid())
        loop.react(d)  # counted like any other
        return d["control"] or d["probability"] == pytest.approx(0.9 * probs[d["variant"]],
                                                                 abs=1e-6)

    wait_for(lambda: all(served() for _ in range(5)), timeout=10, what="the API on the new version")

    # more rewards, published, then SIGKILL (its snapshot lags its publishing by up to 3 s)
    time.sleep(3.5)  # a snapshot with offsets exists now
    assert loop.r.get(keys.learner_snapshot(loop.group))
    loop.round(20)
    wait_for(loop.learnt, timeout=60, what="the second round learnt and published")
    learner.send_signal(signal.SIGKILL)
    learner.wait(10)
    loop.round(10)  # decided and rewarded while no learner runs

    stack.start_learner()  # waits for the dead one's lease, resumes from its snapshot
    wait_for(loop.learnt, timeout=60, what="the third round learnt after the restart")
    time.sleep(2.0)  # anything counted twice would show by now
    assert loop.learnt(), (loop.model().posterior("a"), loop.model().posterior("b"), loop.shown)
    assert loop.version() > v1

    # the joined rows are logged once each, with the probability of what was shown
    def logged() -> list[dict[str, Any]]:
        import msgspec

        raw = loop.r.lrange(keys.learning_log(loop.group, "offer"), 0, -1)
        rows = [msgspec.msgpack.decode(x) for x in raw]
        return rows if len(rows) >= len(loop.decision_ids) else []

    rows = wait_for(logged, timeout=15, what="the learning log")
    ids = [r["decision_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(loop.decision_ids)
    assert set(ids) == set(loop.decision_ids)
    for r in rows:
        assert 0 < r["probability"] <= 0.9
        assert r["reward"] == (1.0 if r["arm"] == "b" else 0.0)

    # off-policy evaluation of what was logged, by the API and by `kairos evaluate`
    r = stack.http.get("/v1/campaigns/offer/evaluation", params={"bootstrap": 50})
    assert r.status_code == 200, r.text
    ev = r.json()
    assert ev["rows"] == len(loop.decision_ids) and ev["policy"] == "thompson"
    assert set(ev["policies"]) >= {"logged", "uniform", "fixed_split", "bandit", "greedy"}
    assert ev["policies"]["logged"]["snips"]["value"] == pytest.approx(
        loop.shown["b"] / len(loop.decision_ids))
    assert ev["policies"]["greedy"]["distribution"] == {"a": 0.0, "b": 1.0}
    assert stack.http.get("/v1/campaigns/nope/evaluation").status_code == 404
    assert stack.http.get("/v1/campaigns/offer/evaluation",
                          params={"last": "0"}).json()["field"] == "last"
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "engine.cli", "evaluate", "--campaign", "offer",
                          "--bootstrap", "20"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KAIROS_SETTINGS_JSON": stack.settings.to_json()})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["rows"] == len(loop.decision_ids)


def test_propensity_learnt_per_event_in_the_profile_and_the_rules(learning_stack: Stack) -> None:
    stack = learning_stack
    if not any(p.poll() is None for p in stack.learners):
        stack.start_learner()
    vid = uid()

    def exit_offer() -> list[dict[str, Any]]:
        r = stack.http.post("/v1/decide", json={"visitor_id": vid,
                                                 "context": {"zones": ["exit_intent"]}})
        assert r.status_code == 200, r.text
        return r.json()["decisions"]  # type: ignore[no-any-return]

    assert exit_offer() == []  # no score yet: a rule on a propensity is false
    now, p = browse_until_scored(stack, vid)
    assert 0 <= p["purchase"] <= 1 and 0 <= p["exit"] <= 1 and p["at"] == now + 2
    (d,) = wait_for(exit_offer, timeout=10, what="the campaign targeting exit_probability")
    assert d["campaign"] == "exit_offer"
    # the learner's counters and the versions served, in /metrics
    text = stack.http.get("/metrics").text
    assert "kairos_learner_decisions_total" in text
    assert "kairos_learner_drift_detections_total" in text
    wait_for(lambda: 'kairos_model_version{model="offer"}' in stack.http.get("/metrics").text,
             timeout=10, what="the served version in /metrics")


def test_rank_reward_activation_through_the_learner(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(name="rank", workers=0, reward_window_s=3.0, model_publish_s=0.2,
                       learner_snapshot_s=0.5, model_reload_s=0.2, learner_lease_ms=2000)
    stack.start_learner()
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    group = stack.settings.group_id
    actions = [{"id": "a", "features": {"kind": "x"}}, {"id": "b", "features": {"kind": "y"}}]

    # servers only, and a bad request names its field
    pub = stack.anon.post("/v1/rank", json={"actions": actions},
                          headers={"Authorization": f"Bearer {stack.keys.public}"})
    assert pub.status_code in (401, 403), pub.text
    bad = stack.http.post("/v1/rank", json={"actions": [{"id": str(i)} for i in range(51)]})
    assert bad.status_code == 400 and bad.json()["field"] == "actions"
    bad = stack.http.post("/v1/rank/e1/reward", json={"value": 3})
    assert bad.status_code == 400 and bad.json()["field"] == "value"

    first = stack.http.post("/v1/rank", json={"actions": actions, "context": {"d": "m"}})
    assert first.status_code == 200, first.text
    assert first.json()["model_version"] == 0
    ids = []
    for i in range(12):
        body = stack.http.post("/v1/rank", json={"event_id": f"ev-{i}", "actions": actions,
                                                 "context": {"d": "m"}}).json()
        assert abs(sum(x["probability"] for x in body["ranking"]) - 1) < 1e-6
        value = 1.0 if body["reward_action_id"] == "b" else 0.0
        assert stack.http.post(f"/v1/rank/ev-{i}/reward", json={"value": value}).status_code == 202
        ids.append(f"ev-{i}")
    deferred = {"actions": actions, "defer_activation": True}
    assert stack.http.post("/v1/rank", json={**deferred, "event_id": "shown"}).status_code == 200
    assert stack.http.post("/v1/rank", json={**deferred, "event_id": "unseen"}).status_code == 200
    assert stack.http.post("/v1/rank/shown/activate").status_code == 202

    def logged() -> list[str]:
        import msgspec

        rows = [msgspec.msgpack.decode(x) for x in
                r.lrange(keys.learning_log(group, "_rank"), 0, -1)]
        got = sorted(x["decision_id"] for x in rows)
        return got if len(got) >= 14 else []

    got = wait_for(logged, timeout=60, what="the rank rewards learnt")
    assert "unseen" not in got and "shown" in got
    assert sorted(set(got) - {first.json()["event_id"]}) == sorted([*ids, "shown"])
    # the API ranks with the published version within seconds
    version = int(r.hget(keys.model_versions(group), "_rank") or 0)
    assert version >= 1
    wait_for(lambda: stack.http.post("/v1/rank", json={"actions": actions}).json()
             ["model_version"] >= version, timeout=10, what="the API on the new rank model")



def test_a_contextual_multi_slot_campaign_learns_and_the_api_serves_it(learning_stack: Stack
                                                                      ) -> None:
    """Mobile visitors click b, desktop ones a: the published model's version advances, it
    prefers b on mobile and a on desktop, and the API logs its probabilities per slot."""
    stack = learning_stack
    if not any(p.poll() is None for p in stack.learners):
        stack.start_learner()
    r = redis.Redis.from_url(stack.settings.redis_url or "")
    group = stack.settings.group_id
    good = {"mobile": "b", "desktop": "a"}

    def decide(device: str) -> list[dict[str, Any]]:
        for _ in range(20):
            resp = stack.http.post("/v1/decide", json={"visitor_id": uid(), "context": {
                "zones": ["ctx"], "device": device}})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            if not body.get("degraded"):
                return body["decisions"]  # type: ignore[no-any-return]
        raise AssertionError(f"decide stayed degraded: {body}")

    def version() -> int:
        return int(r.hget(keys.model_versions(group), "ctx_offer") or 0)

    def model():  # type: ignore[no-untyped-def]
        return restore_model(PolicySpec("contextual", (("epsilon", 0.1), ("learning_rate", 0.5),
                                                       ("temperature", 0.2))),
                             r.get(keys.model(group, "ctx_offer")))

    def probs(device: str, slot: int, arms: tuple[str, ...] = ("a", "b", "c")
              ) -> dict[str, float]:  # what the API computes for a new visitor on `device`
        return model().probabilities(list(arms), {"device": device, "returning": False,
                                                  "slot": str(slot)})

    shown = 0

    def round_(n: int) -> None:
        nonlocal shown
        for _ in range(n):
            for device in good:
                ds = decide(device)
                if ds[0]["control"]:
                    assert len(ds) == 1 and ds[0]["probability"] == pytest.approx(0.1)
                    continue
                assert [d["slot"] for d in ds] == [0, 1]
                assert ds[0]["variant"] != ds[1]["variant"]
                assert len({d["decision_id"] for d in ds}) == 2
                shown += 2
                for d in ds:
                    if d["variant"] == good[device]:
                        click = {"event_id": f"{d['decision_id'][-12:]}-c", "type": "click",
                                 "visitor_id": uid(), "decision_id": d["decision_id"],
                                 "ts": int(time.time() * 1000)}
                        assert stack.post([click]).status_code == 200

    round_(15)
    wait_for(lambda: model().n >= shown, timeout=60, what="the contextual rewards learnt and published")
    v1 = version()
    assert v1 >= 1
    for device, arm in good.items():
        p = probs(device, 0)
        assert max(p, key=p.__getitem__) == arm, (device, p)

    def served() -> bool:  # the API decides with the published version, per slot
        for device in good:
            ds = decide(device)
            if ds[0]["control"]:
                continue
            first = probs(device, 0)
            rest = tuple(a for a in ("a", "b", "c") if a != ds[0]["variant"])
            second = probs(device, 1, rest)
            if ds[0]["probability"] != pytest.approx(0.9 * first[ds[0]["variant"]], abs=1e-6) \
                    or ds[1]["probability"] != pytest.approx(0.9 * second[ds[1]["variant"]],
                                                             abs=1e-6):
                return False
        return True

    wait_for(served, timeout=15, what="the API on the published contextual model")
    round_(5)
    wait_for(lambda: version() > v1, timeout=30, what="the model version advancing")

    def logged() -> list[dict[str, Any]]:
        import msgspec

        rows = [msgspec.msgpack.decode(x) for x in
                r.lrange(keys.learning_log(group, "ctx_offer"), 0, -1)]
        return rows if rows else []

    rows = wait_for(logged, timeout=30, what="the contextual learning log")
    assert {row["slot"] for row in rows} <= {0, 1}
    assert all(row["features"]["device"] in good for row in rows)
    ev = stack.http.get("/v1/campaigns/ctx_offer/evaluation", params={"bootstrap": 20})
    assert ev.status_code == 200, ev.text
    assert ev.json()["policies"]["bandit"]["per_row"] is True
