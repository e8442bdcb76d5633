"""A Rank/Reward client for Kairos (what an Azure Personalizer user ports to).

    KAIROS_URL=http://127.0.0.1:8000 KAIROS_KEY=ks_... python examples/rank_client.py

The key is a secret key with scope `decide` (`kairos keys create secret --scope decide`).
It ranks three articles for a context, "shows" the chosen one, and sends a reward: 1 when the
simulated reader clicks. Run a learner (`kairos up` starts one) and watch `model_version` rise
and the sport article's probability grow for mobile readers.
"""

from __future__ import annotations

import os
import random
import uuid

import httpx

ACTIONS = [
    {"id": "news-1", "features": {"topic": "news", "length": 800}},
    {"id": "sport-1", "features": {"topic": "sport", "length": 300}},
    {"id": "food-1", "features": {"topic": "food", "length": 500}},
]


def clicked(context: dict[str, str], action: str, rng: random.Random) -> bool:
    """The simulated reader: mobile readers like sport, desktop readers news."""
    likes = "sport-1" if context["device"] == "mobile" else "news-1"
    return rng.random() < (0.6 if action == likes else 0.1)


def main() -> None:
    url = os.environ.get("KAIROS_URL", "http://127.0.0.1:8000")
    key = os.environ["KAIROS_KEY"]
    rng = random.Random(7)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        for i in range(200):
            context = {"device": rng.choice(["mobile", "desktop"]), "daypart": "morning"}
            event_id = uuid.uuid4().hex
            r = c.post("/v1/rank", json={"event_id": event_id, "context": context,
                                         "actions": ACTIONS})
            r.raise_for_status()
            answer = r.json()
            shown = answer["reward_action_id"]
            reward = 1.0 if clicked(context, shown, rng) else 0.0
            c.post(f"/v1/rank/{event_id}/reward", json={"value": reward}).raise_for_status()
            if i % 20 == 0:
                probs = {x["id"]: round(x["probability"], 3) for x in answer["ranking"]}
                print(f"{i:4d} v{answer['model_version']} {context['device']:8s} {probs}")


if __name__ == "__main__":
    main()
