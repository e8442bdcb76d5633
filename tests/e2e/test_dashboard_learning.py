"""The dashboard's learning views in real headless Chromium against a running stack (API, worker
and learner on Valkey and Kafka): a Thompson campaign's off-policy evaluation with its intervals
and effective sample sizes, each arm's share of decisions over time, the drift detected when
the winning arm stops being clicked, and a visitor's purchase and exit propensity."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import Stack, uid, wait_for
from tests.integration.test_learning import OFFER, Loop, browse_until_scored

pytestmark = pytest.mark.e2e


def play(stack: Stack, n: int, clicked: str) -> dict[str, int]:
    """`n` decisions; every one that showed `clicked` is clicked (within its 2 s reward window:
    the clicks are sent every 5 decisions), the others are not."""
    shown = {"a": 0, "b": 0}
    clicks: list[dict[str, Any]] = []
    loop = Loop(stack)
    for i in range(n):
        if len(clicks) >= 5 or (clicks and i % 5 == 0):
            assert stack.post(clicks).status_code == 200
            clicks = []
        d = loop.decide(uid())
        if d["control"]:
            continue
        shown[d["variant"]] += 1
        if d["variant"] == clicked:
            clicks.append({"event_id": f"{d['decision_id'][-12:]}-c", "type": "click",
                           "visitor_id": uid(), "decision_id": d["decision_id"],
                           "ts": int(time.time() * 1000)})
    if clicks:
        assert stack.post(clicks).status_code == 200
    return shown


def drift_count(stack: Stack) -> int:
    text = stack.http.get("/metrics").text
    got = re.findall(r'kairos_learner_drift_detections_total\{model="offer:[ab]"\} (\d+)', text)
    return sum(int(x) for x in got)


@pytest.fixture(scope="module")
def learning(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Stack]:
    cdir = tmp_path_factory.mktemp("dash-learn-config")
    (cdir / "campaigns").mkdir()
    (cdir / "campaigns" / "offer.yaml").write_text(OFFER)
    stack = make_stack(name="dashlearn", config_dir=cdir, workers=1, reward_window_s=2.0,
                       decide_deadline_ms=1000, model_publish_s=0.2, learner_snapshot_s=0.5,
                       model_reload_s=0.2, learner_lease_ms=2000)
    stack.start_learner()
    yield stack
    stack.stop()


def signed_in(context: BrowserContext, stack: Stack, problems: list[str]) -> Page:
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    email = f"{uid('analyst')}@example.com"
    stack.add_user(email, "analyst", "a long passphrase")
    page.goto(f"{stack.base}/dashboard")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "a long passphrase")
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.base}/dashboard")
    page.wait_for_selector("#status[data-state=live]", timeout=15_000)
    return page


def test_evaluation_traffic_share_and_drift(context: BrowserContext, learning: Stack,
                                            artifacts: Path) -> None:
    stack = learning
    # b is the winner: every b shown is clicked; the learner learns it in windows of 2 s
    first = play(stack, 60, clicked="b")

    def evaluation() -> dict[str, Any]:
        r = stack.http.get("/v1/campaigns/offer/evaluation", params={"bootstrap": 20})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    wait_for(lambda: evaluation()["rows"] >= sum(first.values()), 30, "the first decisions logged")
    # then b stops being clicked and a is: ADWIN on b's rewards sees the change
    for _ in range(8):
        play(stack, 30, clicked="a")
        if drift_count(stack):
            break
        time.sleep(1.0)
    wait_for(lambda: drift_count(stack) >= 1, 30, "a drift on an arm of the campaign")
    doc = evaluation()
    assert doc["traffic_over_time"]["points"], doc

    problems: list[str] = []
    page = signed_in(context, stack, problems)
    page.locator("#learning").scroll_into_view_if_needed()
    # the picker lists the learning campaign, and its evaluation shows without a click
    page.wait_for_selector("#learn-pick option[value=offer]", state="attached")
    # the page's evaluation runs a 200-draw bootstrap in the API: on a loaded machine it takes
    # seconds, and a failed read is retried after 3 s, so this waits longer than the default
    try:
        page.wait_for_selector("#learn-body:not([hidden]) #eval-rows tr[data-policy=logged]",
                               timeout=45_000)
    except PlaywrightTimeout as e:
        note = page.inner_text("#eval-note")
        raise AssertionError(f"no evaluation rows; the note says: {note!r}") from e
    for name in ("logged", "bandit", "uniform", "fixed_split", "greedy"):
        row = page.locator(f"#eval-rows tr[data-policy={name}]")
        assert row.count() == 1, name
        text = row.inner_text()
        assert text.count("%") >= 6, text  # IPS, SNIPS and DR, each with an interval
        assert "[" in text and "of rows" in text  # the ESS and its share of the log
    assert "baseline" in page.inner_text("#eval-rows tr[data-policy=logged]")
    verdict = page.inner_text("#eval-rows tr[data-policy=uniform] td:last-child")
    assert verdict in ("cannot tell apart",) or verdict.startswith(("better", "worse")), verdict
    note = page.inner_text("#eval-note")
    assert "logged decisions" in note and "mean reward" in note, note
    # each arm's share of decisions over time: one series per arm
    wait_for(lambda: page.get_attribute("#c-share", "data-series") == "a,b", 10,
             "the share chart's series")
    assert "share of the logged decisions" in page.inner_text("#share-note")
    # the drift shows as an event, with the arm, and the reaction
    wait_for(lambda: "offer" in page.inner_text("#drift-list"), 15, "the drift event")
    item = page.locator("#drift-list li[data-model^='offer:']").first
    text = item.inner_text()
    assert "reward rate changed" in text and "posterior restarted" in text, text
    page.wait_for_timeout(500)
    page.locator("#learning").screenshot(path=str(artifacts / "dashboard-learning.png"))
    assert problems == []
    page.close()


def test_the_visitor_page_shows_the_propensity(context: BrowserContext, learning: Stack,
                                                artifacts: Path) -> None:
    stack = learning
    vid = uid()
    _, p = browse_until_scored(stack, vid, 45)
    problems: list[str] = []
    page = signed_in(context, stack, problems)
    page.fill("#v-id", vid)
    page.press("#v-id", "Enter")
    page.wait_for_selector("#v-body:not([hidden]) #v-prop-exit")

    def pct(x: float) -> str:
        v = x * 100
        return f"{v:.0f} %" if v >= 10 else f"{v:.1f} %" if v >= 0.1 or v == 0 else f"{v:.2f} %"

    assert pct(p["exit"]) in page.inner_text("#v-prop-exit")
    assert pct(p["purchase"]) in page.inner_text("#v-prop-purchase")
    width = page.eval_on_selector("#v-prop-exit .bar i", "e => parseFloat(e.style.width)")
    assert width == pytest.approx(p["exit"] * 100, abs=0.1)
    assert "Exit propensity" in page.inner_text("#v-prop")
    page.locator("#visitor").screenshot(path=str(artifacts / "dashboard-visitor-propensity.png"))
    assert problems == []
    page.close()
