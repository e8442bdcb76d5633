// @vitest-environment node
// The shipped file as the engine serves it (sitemap prepended), run in a fresh jsdom page: one tag,
// no page code, and the requests it sends.
import { describe, it, expect } from 'vitest';
import { JSDOM } from 'jsdom';
import { bundle as shipped } from '../scripts/bundle.mjs';

const bundle = await shipped(); // exactly what ships: esbuild + terser, internal names shortened

const SITEMAP = {
  version: 1,
  page_types: [
    {
      name: 'product',
      kind: 'product',
      match: ['^/p/[^/]+/?$'],
      item: { json_ld: true, fields: {} },
      zones: { pdp_recs: '#recs' },
    },
  ],
  events: [{ type: 'add_to_cart', click: 'button.add' }],
  exit_intent: { enabled: true, scope: 'session', min_ms: 5000, idle_ms: 30000 },
};

function page(html, attrs = 'data-site="shop1"') {
  const requests = [];
  const served = `window.__kairosSitemap=${JSON.stringify(SITEMAP)};\n${bundle}`;
  const dom = new JSDOM(
    `<!doctype html><html lang="en"><head>
      <script>window.kairos=window.kairos||function(){(kairos.q=kairos.q||[]).push(arguments)};
              kairos('track','early',{n:1});</script>
      <script type="application/ld+json">{"@type":"Product","sku":"sku-7","name":"Boot"}</script>
    </head><body>${html}<script ${attrs}>${served.replace(/<\/script/g, '<\\/script')}</script></body></html>`,
    {
      url: 'https://shop.example.com/p/sku-7',
      runScripts: 'dangerously',
      beforeParse(w) {
        w.fetch = async (url, init) => {
          requests.push({ url, body: JSON.parse(init.body), keepalive: init.keepalive });
          const decide = url.endsWith('/v1/decide');
          return {
            status: 200,
            json: async () =>
              decide
                ? {
                    decisions: [
                      { zone: 'pdp_recs', decision_id: 'd1', control: false, content: { html: '<ul><li>Similar</li></ul>' } },
                    ],
                  }
                : { accepted: 1, rejected: [] },
            headers: { get: () => null },
          };
        };
      },
    },
  );
  return { dom, requests, w: dom.window };
}

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

describe('the served beacon in a page', () => {
  it('tracks and personalises a product page from the one tag and the sitemap', async () => {
    const { w, requests } = page('<div id="recs"></div><button class="add">Add</button>');
    await wait(20);
    expect(requests[0].url).toBe('https://shop.example.com/v1/decide'); // same origin as the script
    expect(requests[0].body.context).toMatchObject({ page_type: 'product', zones: ['pdp_recs'], channel: 'web' });
    expect(requests[0].body.events.map((e) => [e.type, e.item])).toEqual([
      ['page_view', { id: 'sku-7', name: 'Boot' }],
      ['item_view', { id: 'sku-7', name: 'Boot' }],
    ]);
    expect(w.document.getElementById('recs').shadowRoot.textContent).toContain('Similar');
    w.document.querySelector('button.add').click();
    await wait(1100);
    const events = requests.filter((r) => r.url.endsWith('/v1/events')).flatMap((r) => r.body.events);
    expect(events.map((e) => e.type)).toEqual(['early', 'impression', 'add_to_cart']);
    expect(events[2].items).toEqual([{ id: 'sku-7', quantity: 1 }]);
    expect(typeof w.kairos).toBe('function');
    w.close();
  });

  it('data-endpoint overrides the engine origin', async () => {
    const { w, requests } = page('', 'data-site="shop1" data-endpoint="https://api.example.com/k/"');
    await wait(1100);
    expect(requests.map((r) => r.url)).toEqual(['https://api.example.com/k/v1/events']);
    w.close();
  });
});
