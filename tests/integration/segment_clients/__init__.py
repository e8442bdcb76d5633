"""The real Segment clients, ready for integration tests against the engine's Segment routes.

- `ensure_built()` runs `npm ci` (pinned by package-lock.json) and the esbuild bundle once;
  node_modules/ and dist/ are not committed. Call it from a session-scoped fixture.
- `send_node(plan)` sends a sequence of calls through @segment/analytics-node (send_node.mjs).
- `page_dir()` is the folder to serve over HTTP for Chromium (index.html + the bundle of
  @segment/analytics-next); the page exposes `window.kairosSegment.load({writeKey, apiHost,
  protocol, batching, httpConfig})`, see browser/entry.js.
- `python_client(host, write_key, **kw)` is segment-analytics-python's Client pointed at host.
- `CHROMIUM` / `CHROMIUM_ARGS`: Debian's Chromium and the flags every browser test uses.

What each client sends, how it retries and how it is pointed at another host is written up
in docs/segment.md ("What the clients send").
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DIST = HERE / "dist"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _newer(a: Path, b: Path) -> bool:
    return not b.exists() or a.stat().st_mtime > b.stat().st_mtime


def ensure_built(timeout: float = 600) -> Path:
    """node_modules from the lock file and dist/ from the sources, when missing or stale."""
    stamp = HERE / "node_modules" / ".package-lock.json"
    if _newer(HERE / "package-lock.json", stamp):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                       timeout=timeout, capture_output=True)
    bundle = DIST / "analytics-next.js"
    sources = [HERE / "build.mjs", HERE / "browser" / "entry.js", HERE / "browser" / "index.html", stamp]
    if any(_newer(src, bundle) for src in sources):
        subprocess.run(["npm", "run", "build", "--silent"], cwd=HERE, check=True,
                       timeout=timeout, capture_output=True)
    return DIST


def page_dir() -> Path:
    return ensure_built()


def send_node(plan: dict[str, Any], timeout: float = 120) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run `plan` ({"settings": {...}, "calls": [...]}, see send_node.mjs) through the real
    analytics-node; returns (one result per call, the HTTP answers the client got)."""
    ensure_built()
    done = subprocess.run(["node", str(HERE / "send_node.mjs")], input=json.dumps(plan), text=True,
                          capture_output=True, timeout=timeout, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [x for x in lines if "done" not in x], lines[-1]["http"]


def python_client(host: str, write_key: str, **kwargs: Any) -> Any:
    """segment-analytics-python's Client sending to `host` (it posts to <host>/v1/batch)."""
    from segment.analytics import Client

    return Client(write_key, host=host, **kwargs)
