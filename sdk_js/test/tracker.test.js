// The tracker end to end inside jsdom, with fetch stubbed: the exact requests it sends.
import { describe, it, expect, vi, beforeEach, afterEach } from 'vitest';
import { createTracker } from '../src/tracker.js';
import { resetWarn } from '../src/util.js';
import { res, fetchStub, fixedUuids, clock, config, settle } from './helpers.js';

const id = (n) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const T0 = 1_700_000_000_000;
const CTX = { url: 'http://localhost:3000/', page_type: 'other', device: 'desktop', locale: 'en-US' };

let now;
beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
  localStorage.clear();
  sessionStorage.clear();
  document.cookie.split('; ').forEach((c) => (document.cookie = c.split('=')[0] + '=;max-age=0;path=/'));
  document.head.innerHTML = '';
  document.body.innerHTML = '';
  history.replaceState(null, '', '/');
  fixedUuids();
  resetWarn();
  now = clock(T0);
  delete navigator.sendBeacon;
  // jsdom has no <dialog> behaviour: showModal opens it
  HTMLDialogElement.prototype.showModal = function () {
    this.setAttribute('open', '');
  };
});
afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

function make(cfgOver = {}, fetch = fetchStub()) {
  const cfg = config(cfgOver);
  const t = createTracker(window, cfg, { fetch, now, random: () => 0.5 });
  return { t, cfg, fetch };
}
// every tab's queue of the site (kairos_q_<site>_<tab>), in storage order
const queued = (cfg) =>
  Object.keys(localStorage)
    .filter((k) => k.startsWith('kairos_q_' + cfg.site + '_'))
    .flatMap((k) => JSON.parse(localStorage.getItem(k)));

describe('page views and batching', () => {
  it('sends the page view in one batch after the flush timer: exact request', async () => {
    localStorage.setItem('kairos_vid', 'v-1');
    const { t, fetch } = make();
    await t.page();
    expect(fetch).not.toHaveBeenCalled(); // batched
    t.track('signup', { plan: 'pro' });
    await vi.advanceTimersByTimeAsync(1000);
    expect(fetch).toHaveBeenCalledTimes(1);
    const [url, init] = fetch.mock.calls[0];
    expect(url).toBe('https://engine.test/v1/events');
    expect(init).toEqual({ method: 'POST', body: init.body, keepalive: true, signal: expect.any(AbortSignal) });
    expect(typeof init.body).toBe('string'); // sent as text/plain: no CORS preflight
    expect(JSON.parse(init.body)).toEqual({
      events: [
        { event_id: id(2), type: 'page_view', visitor_id: 'v-1', channel: 'web', ts: T0, context: CTX },
        { event_id: id(3), type: 'signup', visitor_id: 'v-1', channel: 'web', ts: T0, context: CTX, props: { plan: 'pro' } },
      ],
    });
  });

  it('reads the page with the sitemap: type, item, search terms; item_view and search events', async () => {
    localStorage.setItem('kairos_vid', 'v-1');
    history.replaceState(null, '', '/p/sku-1?ref=x');
    document.documentElement.lang = 'de-DE';
    document.head.innerHTML =
      '<script type="application/ld+json">{"@type":"Product","sku":"sku-1","name":"Runner","offers":{"price":"89.90"}}</script>';
    const sitemap = { page_types: [{ name: 'product', kind: 'product', match: ['^/p/[^/]+/?$'], item: { json_ld: true, fields: {} }, zones: {} }] };
    const { t, fetch } = make({ sitemap });
    await t.page();
    await t.flush();
    const ctx = { url: 'http://localhost:3000/p/sku-1?ref=x', page_type: 'product', device: 'desktop', locale: 'de-DE' };
    const item = { id: 'sku-1', name: 'Runner', price: 89.9 };
    expect(fetch.requests[0].body.events).toEqual([
      { event_id: id(2), type: 'page_view', visitor_id: 'v-1', channel: 'web', ts: T0, context: ctx, item },
      { event_id: id(3), type: 'item_view', visitor_id: 'v-1', channel: 'web', ts: T0, context: ctx, item },
    ]);
    document.documentElement.lang = '';
  });

  it('sends a search event on search pages', async () => {
    history.replaceState(null, '', '/search?q=red+shoes');
    const sitemap = { page_types: [{ name: 'search', kind: 'search', match: ['^/search$'], query_param: 'q', zones: {} }] };
    const { t, fetch } = make({ sitemap });
    await t.page();
    await t.flush();
    const ev = fetch.requests[0].body.events;
    expect(ev.map((e) => e.type)).toEqual(['page_view', 'search']);
    expect(ev[1].props).toEqual({ query: 'red shoes' });
  });

  it('lets kairos("page", ...) override the sitemap and the page', async () => {
    document.body.innerHTML = '<main data-kairos-page-type="category"></main>';
    const { t, fetch } = make();
    await t.page({ type: 'product', item: { id: 'x1', price: 3 }, props: { ab: 1 } });
    await t.flush();
    const [pv, iv] = fetch.requests[0].body.events;
    expect(pv.context.page_type).toBe('product');
    expect(pv.item).toEqual({ id: 'x1', price: 3 });
    expect(pv.props).toEqual({ ab: 1 });
    expect(iv.type).toBe('item_view');
  });

  it('track lifts item, items and decision_id to the top level', async () => {
    const { t, fetch } = make();
    t.track('add_to_cart', { items: [{ id: 'a', quantity: 2, price: 5 }], list: 'recs' });
    t.track('purchase', { items: [{ id: 'a', quantity: 2, price: 5 }], order_id: 'o1', value: 10 });
    await t.flush();
    const [a, p] = fetch.requests[0].body.events;
    expect(a.items).toEqual([{ id: 'a', quantity: 2, price: 5 }]);
    expect(a.props).toEqual({ list: 'recs' });
    expect(p.props).toEqual({ order_id: 'o1', value: 10 });
    expect(a.context).toEqual({ url: 'http://localhost:3000/' }); // before any page view
  });

  it('identify sets user_id on this and later events, and remembers it', async () => {
    const { t, fetch } = make();
    t.identify('u-42', { plan: 'gold' });
    t.track('x');
    await t.flush();
    const [i, x] = fetch.requests[0].body.events;
    expect([i.type, i.user_id, i.props, x.user_id]).toEqual(['identify', 'u-42', { traits: { plan: 'gold' } }, 'u-42']);
    expect(localStorage.getItem('kairos_uid')).toBe('u-42');
  });
});

describe('visitor id', () => {
  it('persists in localStorage across page loads', async () => {
    const a = make();
    a.t.track('x');
    const vid = localStorage.getItem('kairos_vid');
    expect(vid).toMatch(/^0{8}-/);
    const b = make({ site: a.cfg.site });
    b.t.track('y');
    await b.t.flush();
    expect(b.fetch.requests[0].body.events.map((e) => e.visitor_id)).toEqual([vid, vid]);
  });

  it('can live in a first-party cookie (data-storage="cookie")', () => {
    const { t } = make({ storage: 'cookie' });
    t.track('x');
    expect(document.cookie).toMatch(/kairos_vid=0{8}-/);
    expect(localStorage.getItem('kairos_vid')).toBe(null);
  });

  it('is replaced when the stored one is too long (tampered)', async () => {
    localStorage.setItem('kairos_vid', 'x'.repeat(129));
    const { t, fetch } = make();
    t.track('x');
    await t.flush();
    expect(fetch.requests[0].body.events[0].visitor_id).toBe(id(3));
  });

  it('data-storage="none" keeps nothing in storage', async () => {
    const { t, fetch } = make({ storage: 'none' });
    await t.page();
    await t.flush();
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(localStorage.length + sessionStorage.length).toBe(0);
    expect(document.cookie).toBe('');
  });
});

describe('consent', () => {
  it('with data-require-consent nothing is stored or sent before consent(true)', async () => {
    const { t, fetch, cfg } = make({ consent: null });
    await t.page();
    t.track('x');
    await t.flush();
    await vi.advanceTimersByTimeAsync(5000);
    expect(fetch).not.toHaveBeenCalled();
    expect(localStorage.length + sessionStorage.length).toBe(0);
    expect(document.cookie).toBe('');
    t.consent(true); // the page view waited for it
    await settle();
    await t.flush();
    expect(fetch.requests[0].body.events.map((e) => e.type)).toEqual(['page_view']);
    expect(localStorage.getItem('kairos_consent')).toBe('1');
    expect(localStorage.getItem('kairos_vid')).toBe(fetch.requests[0].body.events[0].visitor_id);
    expect(queued(cfg)).toEqual([]);
  });

  it('remembers consent for the next page', async () => {
    const a = make({ consent: null });
    a.t.consent(true);
    const b = make({ consent: null, site: a.cfg.site });
    b.t.track('x');
    await b.t.flush();
    expect(b.fetch).toHaveBeenCalledTimes(1);
  });

  it('consent(false) clears the queue and the ids, and stops everything', async () => {
    const { t, fetch, cfg } = make();
    t.identify('u1');
    t.track('x');
    expect(queued(cfg).length).toBe(2);
    t.consent(false);
    expect(queued(cfg)).toEqual([]);
    expect(localStorage.getItem('kairos_vid')).toBe(null);
    expect(localStorage.getItem('kairos_uid')).toBe(null);
    expect(localStorage.getItem('kairos_consent')).toBe('0');
    t.track('y');
    await t.page();
    await vi.advanceTimersByTimeAsync(5000);
    expect(fetch).not.toHaveBeenCalled();
    // and on the next page too, even without data-require-consent
    const b = make({ site: cfg.site });
    b.t.track('z');
    await b.t.flush();
    expect(b.fetch).not.toHaveBeenCalled();
  });
});

describe('delivery: retries, backoff, drops', () => {
  it('retries 503 after Retry-After, keeping the events', async () => {
    let status = 503;
    const fetch = fetchStub(() => res(status, { error: 'broker down' }, { 'Retry-After': '2' }));
    const { t, cfg } = make({}, fetch);
    t.track('x');
    await t.flush();
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(queued(cfg).length).toBe(1);
    now.tick(1000);
    await t.flush(); // too early: nothing sent
    expect(fetch).toHaveBeenCalledTimes(1);
    status = 200;
    now.tick(1000);
    await vi.advanceTimersByTimeAsync(2000); // the scheduled retry
    expect(fetch).toHaveBeenCalledTimes(2);
    expect(fetch.requests[1].body).toEqual(fetch.requests[0].body); // the same events, same ids
    expect(queued(cfg)).toEqual([]);
  });

  it('backs off exponentially on 5xx and network errors', async () => {
    const fetch = fetchStub(() => {
      throw new TypeError('Failed to fetch');
    });
    const { t } = make({}, fetch);
    t.track('x');
    const sentAt = [];
    for (let i = 0; i < 4; i++) {
      await t.flush();
      sentAt.push(now.t - T0);
      // find when the next attempt is allowed: step the clock until a flush sends
      const before = fetch.mock.calls.length;
      while (fetch.mock.calls.length === before) {
        now.tick(250);
        await t.flush();
      }
    }
    const gaps = sentAt.slice(1).map((v, i) => v - sentAt[i]);
    // backoff with rand 0.5: 750, 1500, 3000 ms (+ the 250 ms step granularity)
    expect(gaps).toEqual([750, 1500, 3000]);
  });

  it('drops events on 4xx, never retrying them', async () => {
    for (const status of [400, 413, 415]) {
      const fetch = fetchStub(() => res(status, { error: 'bad' }));
      const { t, cfg } = make({}, fetch);
      t.track('x');
      await t.flush();
      await vi.advanceTimersByTimeAsync(120000);
      expect(fetch).toHaveBeenCalledTimes(1);
      expect(queued(cfg)).toEqual([]);
    }
  });

  it('removes events the engine partly rejected (200 with rejected)', async () => {
    const fetch = fetchStub(() => res(200, { accepted: 1, rejected: [{ index: 1, field: 'type', reason: 'unknown' }] }));
    const { t, cfg } = make({}, fetch);
    t.track('x');
    t.track('y');
    await t.flush();
    expect(queued(cfg)).toEqual([]);
  });

  it('waits while offline and sends when back online', async () => {
    const { t, fetch } = make();
    const online = vi.spyOn(navigator, 'onLine', 'get').mockReturnValue(false);
    t.track('x');
    await vi.advanceTimersByTimeAsync(5000);
    expect(fetch).not.toHaveBeenCalled();
    online.mockReturnValue(true);
    window.dispatchEvent(new Event('online'));
    await settle();
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it('keeps sending batches until the queue is empty, at most `batch` events each', async () => {
    const { t, fetch } = make({ batchSize: 2 });
    for (let i = 0; i < 5; i++) t.track('e' + i);
    await vi.advanceTimersByTimeAsync(1000);
    await vi.advanceTimersByTimeAsync(10);
    await vi.advanceTimersByTimeAsync(10);
    expect(fetch.requests.map((r) => r.body.events.map((e) => e.type))).toEqual([['e0', 'e1'], ['e2', 'e3'], ['e4']]);
  });

  it('the queue is bounded: oldest events are dropped first', () => {
    const { t, cfg } = make({ cap: 3 });
    for (let i = 0; i < 5; i++) t.track('e' + i);
    expect(queued(cfg).map((x) => x.e.type)).toEqual(['e2', 'e3', 'e4']);
  });
});

describe('page hide', () => {
  it('hands unsent events to sendBeacon: exact body, then forgets them', async () => {
    localStorage.setItem('kairos_vid', 'v-1');
    navigator.sendBeacon = vi.fn(() => true);
    const { t, cfg, fetch } = make();
    t.track('x');
    window.dispatchEvent(new Event('pagehide'));
    expect(navigator.sendBeacon).toHaveBeenCalledTimes(1);
    const [url, body] = navigator.sendBeacon.mock.calls[0];
    expect(url).toBe('https://engine.test/v1/events');
    expect(typeof body).toBe('string');
    expect(JSON.parse(body)).toEqual({
      events: [{ event_id: id(2), type: 'x', visitor_id: 'v-1', channel: 'web', ts: T0, context: { url: 'http://localhost:3000/' } }],
    });
    expect(queued(cfg)).toEqual([]);
    await vi.advanceTimersByTimeAsync(5000);
    expect(fetch).not.toHaveBeenCalled();
  });

  it('keeps the events when sendBeacon refuses them', () => {
    navigator.sendBeacon = vi.fn(() => false);
    const { t, cfg } = make();
    t.track('x');
    document.dispatchEvent(new Event('visibilitychange')); // jsdom is "visible": nothing
    expect(navigator.sendBeacon).not.toHaveBeenCalled();
    window.dispatchEvent(new Event('pagehide'));
    expect(queued(cfg).length).toBe(1);
    expect(queued(cfg)[0].c).toBe(undefined); // released for the next page
  });
});

describe('cross-tab safety', () => {
  // A Web Locks stand-in: a held name refuses ifAvailable requests and queues the others;
  // `die(name)` releases a lock the way a closed tab would.
  function fakeLocks() {
    const held = new Map();
    const locks = {
      held,
      request: vi.fn((name, opts, cb) => {
        if (held.has(name)) return opts.ifAvailable ? Promise.resolve(cb(null)) : new Promise(() => {});
        held.set(name, 1);
        return Promise.resolve(cb({ name }));
      }),
      die: (name) => held.delete(name),
    };
    Object.defineProperty(navigator, 'locks', { value: locks, configurable: true });
    return locks;
  }
  const sentTypes = (f) => f.requests.flatMap((r) => r.body.events.map((e) => e.type));

  it('each tab sends only its own queue (kairos_q_<site>_<tab>)', async () => {
    let release;
    const slow = fetchStub(() => new Promise((r) => (release = () => r(res(200, {})))));
    const a = make({}, slow);
    const b = make({ site: a.cfg.site });
    a.t.track('one');
    a.t.track('two');
    const flushing = a.t.flush(); // tab A has its batch in flight
    await settle();
    b.t.track('three');
    await b.t.flush(); // B sends its own event, never A's
    release();
    await flushing;
    await a.t.flush();
    expect(sentTypes(slow)).toEqual(['one', 'two']);
    expect(sentTypes(b.fetch)).toEqual(['three']);
    expect(queued(a.cfg)).toEqual([]);
  });

  it('holds a Web Lock per tab; adopts only the queues of tabs that are gone, once', async () => {
    const locks = fakeLocks();
    navigator.sendBeacon = vi.fn(() => true);
    try {
      let release;
      const slow = fetchStub(() => new Promise((r) => (release = () => r(res(200, {})))));
      const a = make({}, slow);
      await settle();
      const lockA = [...locks.held.keys()][0];
      expect(lockA).toMatch(new RegExp('^kairos_t_' + a.cfg.site + '_[0-9a-f-]{36}$'));
      a.t.track('one');
      const flushing = a.t.flush();
      await settle();
      a.t.track('left'); // still queued when A goes away

      const b = make({ site: a.cfg.site }); // A is alive: B adopts nothing
      await settle();
      expect(locks.request).toHaveBeenCalledWith(lockA, { ifAvailable: true }, expect.any(Function));
      b.t.track('two');
      window.dispatchEvent(new Event('pagehide')); // both tabs hide: "one" is in flight, skipped
      const beaconed = navigator.sendBeacon.mock.calls.flatMap(([, body]) => JSON.parse(body).events.map((e) => e.type));
      expect(beaconed.sort()).toEqual(['left', 'two']);
      release();
      await flushing;
      expect(sentTypes(slow)).toEqual(['one']);

      // a tab that died with events left: the next tab adopts them, a later one doesn't again
      navigator.sendBeacon = vi.fn(() => false);
      a.t.track('orphan');
      window.dispatchEvent(new Event('pagehide')); // the beacon refuses: it stays queued
      locks.die(lockA);
      const c = make({ site: a.cfg.site });
      await settle();
      const d = make({ site: a.cfg.site });
      await settle();
      await c.t.flush();
      await d.t.flush();
      expect(sentTypes(c.fetch)).toContain('orphan');
      expect(sentTypes(d.fetch)).not.toContain('orphan');
      expect(locks.held.has(lockA)).toBe(true); // kept by C for good
    } finally {
      delete navigator.locks;
    }
  });

  it('offline at pagehide: nothing goes to sendBeacon, the next page sends it', async () => {
    navigator.sendBeacon = vi.fn(() => true);
    const onLine = vi.spyOn(navigator, 'onLine', 'get').mockReturnValue(false);
    const a = make();
    a.t.track('offline');
    window.dispatchEvent(new Event('pagehide'));
    expect(navigator.sendBeacon).not.toHaveBeenCalled();
    onLine.mockReturnValue(true);
    const b = make({ site: a.cfg.site });
    await b.t.flush();
    expect(sentTypes(b.fetch)).toEqual(['offline']);
  });

  it('without Web Locks a new page adopts what earlier pages left (a reload)', async () => {
    navigator.sendBeacon = vi.fn(() => false);
    const a = make();
    a.t.track('left');
    window.dispatchEvent(new Event('pagehide'));
    const b = make({ site: a.cfg.site });
    await b.t.flush();
    expect(sentTypes(b.fetch)).toContain('left');
    expect(queued(a.cfg)).toEqual([]);
  });
});

describe('decisions', () => {
  const decisions = [
    { zone: 'home_hero', decision_id: 'd1', campaign: 'spring', variant: 'B', control: false, content: { html: '<p>Hi <a href="/s">go</a></p>', title: 'Sale' } },
    { zone: 'home_recs', decision_id: 'd2', campaign: 'recs', variant: 'A', control: true },
    { zone: 'not_on_page', decision_id: 'd3', content: { html: 'x' } },
  ];
  const sitemap = { page_types: [{ name: 'home', kind: 'home', match: ['^/$'], zones: { home_recs: '#recs' } }] };

  it('asks /v1/decide once for every zone, with the page events: exact request', async () => {
    localStorage.setItem('kairos_vid', 'v-1');
    document.body.innerHTML = '<div data-kairos-zone="home_hero"></div><div id="recs"></div>';
    const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions }) : res(200, {})));
    const { t } = make({ sitemap }, fetch);
    await t.page();
    expect(fetch).toHaveBeenCalledTimes(1);
    const [url, init] = fetch.mock.calls[0];
    expect(url).toBe('https://engine.test/v1/decide');
    expect(init.keepalive).toBe(true);
    const ctx = { ...CTX, page_type: 'home' };
    expect(JSON.parse(init.body)).toEqual({
      visitor_id: 'v-1',
      context: { channel: 'web', zones: ['home_hero', 'home_recs'], ...ctx },
      events: [{ event_id: id(2), type: 'page_view', visitor_id: 'v-1', channel: 'web', ts: T0, context: ctx }],
    });
    // rendered in the zone's shadow root; the control renders nothing
    const hero = document.querySelector('[data-kairos-zone]');
    expect(hero.shadowRoot.querySelector('h2').textContent).toBe('Sale');
    expect(document.getElementById('recs').shadowRoot).toBe(null);
    // impressions (no IntersectionObserver in jsdom: at once), a click, then the events batch
    hero.shadowRoot.addEventListener('click', (e) => e.preventDefault());
    hero.shadowRoot.querySelector('a').click();
    await settle();
    const sent = fetch.to('/v1/events').flatMap((r) => r.body.events);
    expect(sent.map((e) => [e.type, e.decision_id, e.props])).toEqual([
      ['impression', 'd1', { zone: 'home_hero' }],
      ['impression', 'd2', { zone: 'home_recs', control: true }],
      ['click', 'd1', { zone: 'home_hero', href: '/s' }],
    ]);
  });

  it('counts an impression only when the zone is actually visible', async () => {
    const observers = [];
    window.IntersectionObserver = class {
      constructor(cb, opts) {
        this.cb = cb;
        this.opts = opts;
        this.disconnect = vi.fn();
        observers.push(this);
      }
      observe(el) {
        this.el = el;
      }
    };
    try {
      document.body.innerHTML = '<div data-kairos-zone="home_hero"></div>';
      const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions: [decisions[0]] }) : res(200, {})));
      const { t, cfg } = make({}, fetch);
      await t.page();
      expect(observers.length).toBe(1);
      expect(observers[0].opts).toEqual({ threshold: 0.5 });
      expect(queued(cfg)).toEqual([]);
      observers[0].cb([{ isIntersecting: false }]);
      expect(queued(cfg)).toEqual([]);
      observers[0].cb([{ isIntersecting: true }]);
      expect(queued(cfg).map((x) => x.e.type)).toEqual(['impression']);
      expect(observers[0].disconnect).toHaveBeenCalled();
    } finally {
      delete window.IntersectionObserver;
    }
  });

  it('engine slow: gives up after the decide timeout, one warning, events sent the normal way', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    document.body.innerHTML = '<div data-kairos-zone="home_hero"></div>';
    const fetch = fetchStub((url, body, init) =>
      url.endsWith('/v1/decide')
        ? new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))))
        : res(200, {}),
    );
    const { t } = make({}, fetch);
    const p = t.page();
    await vi.advanceTimersByTimeAsync(299);
    expect(fetch.mock.calls[0][1].signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(document.querySelector('[data-kairos-zone]').shadowRoot).toBe(null);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/^\[kairos\]/);
    await vi.advanceTimersByTimeAsync(1000);
    expect(fetch.to('/v1/events')[0].body.events.map((e) => e.type)).toEqual(['page_view']);
    const again = t.page(); // fails again: still only one warning
    await vi.advanceTimersByTimeAsync(1300);
    await again;
    expect(warn).toHaveBeenCalledTimes(1);
  });

  it('engine down (503 or network) on decide: no personalisation, page not broken', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    document.body.innerHTML = '<div data-kairos-zone="home_hero"></div>';
    const fetch = fetchStub((url) => {
      if (url.endsWith('/v1/decide')) throw new TypeError('Failed to fetch');
      return res(200, {});
    });
    const { t } = make({}, fetch);
    await expect(t.page()).resolves.toBe(undefined);
    expect(document.querySelector('[data-kairos-zone]').shadowRoot).toBe(null);
  });
});

describe('exit intent', () => {
  const popup = {
    zone: 'exit_intent',
    decision_id: 'dx',
    campaign: 'exit10',
    variant: 'A',
    control: false,
    content: { title: 'Before you go', html: '<form><input type="email"><button>Get 10%</button></form>' },
  };

  it('sends exit_intent in a decide call for the exit_intent zone and shows the popup', async () => {
    localStorage.setItem('kairos_vid', 'v-1');
    const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions: [popup] }) : res(200, {})));
    const { t, cfg } = make({ exit: { enabled: true, scope: 'session' } }, fetch);
    await t.onExit();
    expect(fetch.requests[0].url).toBe('https://engine.test/v1/decide');
    expect(fetch.requests[0].body).toEqual({
      visitor_id: 'v-1',
      context: { channel: 'web', zones: ['exit_intent'], url: 'http://localhost:3000/' },
      events: [{ event_id: id(2), type: 'exit_intent', visitor_id: 'v-1', channel: 'web', ts: T0, context: { url: 'http://localhost:3000/' } }],
    });
    const host = document.querySelector('[data-kairos-popup="exit_intent"]');
    const root = host.shadowRoot;
    expect(root.querySelector('dialog').hasAttribute('open')).toBe(true);
    root.querySelector('input').value = 'ada@example.com';
    root.querySelector('form').dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    root.querySelector('.x').click();
    await t.flush();
    const sent = fetch.to('/v1/events').flatMap((r) => r.body.events);
    expect(sent.map((e) => [e.type, e.decision_id, e.props])).toEqual([
      ['impression', 'dx', { zone: 'exit_intent' }],
      ['identify', undefined, { traits: { email: 'ada@example.com', source: 'popup' } }],
      ['conversion', 'dx', { zone: 'exit_intent', goal: 'email_capture' }],
      ['dismiss', 'dx', { zone: 'exit_intent', via: 'close' }],
    ]);
    // at most once per session: again on this page, or on the next page of the session
    await t.onExit();
    const next = createTracker(window, { ...config(), site: cfg.site, exit: { enabled: true, scope: 'session' } }, { fetch, now });
    await next.onExit();
    expect(fetch.to('/v1/decide').length).toBe(1);
  });

  it('a control decision shows nothing but is counted', async () => {
    const fetch = fetchStub((url) =>
      url.endsWith('/v1/decide') ? res(200, { decisions: [{ zone: 'exit_intent', decision_id: 'dc', control: true }] }) : res(200, {}),
    );
    const { t } = make({ exit: { enabled: true } }, fetch);
    await t.onExit();
    await t.flush();
    expect(document.querySelector('[data-kairos-popup]')).toBe(null);
    expect(fetch.to('/v1/events')[0].body.events.map((e) => [e.type, e.decision_id, e.props])).toEqual([
      ['impression', 'dc', { zone: 'exit_intent', control: true }],
    ]);
  });

  it('desktop: the pointer leaving through the top triggers it (after the minimum time)', async () => {
    const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions: [] }) : res(200, {})));
    const { t } = make({ exit: { enabled: true, min_ms: 5000 } }, fetch);
    await t.page();
    const leave = (y) => document.dispatchEvent(new MouseEvent('mouseout', { clientY: y, relatedTarget: null }));
    leave(-1);
    await settle();
    expect(fetch.to('/v1/decide').length).toBe(0); // too early
    now.tick(6000);
    leave(400);
    leave(-1);
    await settle();
    expect(fetch.to('/v1/decide').length).toBe(1);
    expect(fetch.to('/v1/decide')[0].body.context.zones).toEqual(['exit_intent']);
  });

  it('is not armed on page types the sitemap leaves out', async () => {
    const { t, fetch } = make({ exit: { enabled: true, min_ms: 0, page_types: ['cart'] } });
    await t.page();
    document.dispatchEvent(new MouseEvent('mouseout', { clientY: -1, relatedTarget: null }));
    await settle();
    expect(fetch.to('/v1/decide').length).toBe(0);
  });
});

describe('sitemap rules: clicks and the data layer', () => {
  it('a click on an add-to-cart button sends add_to_cart with the item', async () => {
    document.body.innerHTML =
      '<article data-kairos-item-id="s9" data-kairos-item-price="19.5"><button class="add-to-cart"><span>Add</span></button></article>';
    const sitemap = { events: [{ type: 'add_to_cart', click: 'button.add-to-cart' }] };
    const { t, fetch } = make({ sitemap });
    document.querySelector('span').click();
    await t.flush();
    const [e] = fetch.requests[0].body.events;
    expect([e.type, e.items]).toEqual(['add_to_cart', [{ id: 's9', quantity: 1, price: 19.5 }]]);
  });

  it('data-layer pushes (before and after load) become events', async () => {
    window.dataLayer = [{ event: 'gtm.js' }, { event: 'purchase', ecommerce: { transaction_id: 'T1', value: 30, currency: 'EUR', items: [{ item_id: 'a', quantity: 3, price: 10 }] } }];
    const sitemap = { data_layer: { name: 'dataLayer', events: { purchase: 'purchase', add_to_cart: 'add_to_cart' } } };
    const { t, fetch } = make({ sitemap });
    window.dataLayer.push(['event', 'add_to_cart', { items: [{ item_id: 'b', price: 4 }] }]);
    expect(window.dataLayer.length).toBe(3);
    await t.flush();
    const [p, a] = fetch.requests[0].body.events;
    expect([p.type, p.items, p.props]).toEqual(['purchase', [{ id: 'a', quantity: 3, price: 10 }], { order_id: 'T1', value: 30, currency: 'EUR' }]);
    expect([a.type, a.items]).toEqual(['add_to_cart', [{ id: 'b', quantity: 1, price: 4 }]]);
    delete window.dataLayer;
  });
});

describe('robustness', () => {
  it('a zone element that cannot host a shadow root is skipped; the others render', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    document.body.innerHTML = '<ul data-kairos-zone="a"></ul><div data-kairos-zone="b"></div>';
    const d = (zone) => ({ zone, decision_id: 'd-' + zone, content: { html: '<p>x</p>' } });
    const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions: [d('a'), d('b')] }) : res(200, {})));
    const { t, cfg } = make({}, fetch);
    await t.page();
    expect(document.querySelector('ul').shadowRoot).toBe(null);
    expect(document.querySelector('div').shadowRoot.querySelector('p').textContent).toBe('x');
    expect(queued(cfg).map((x) => x.e.decision_id)).toEqual(['d-b']);
  });

  it('a lock manager that refuses (opaque origin) does not throw; the tab still sends', async () => {
    Object.defineProperty(navigator, 'locks', {
      value: { request: () => Promise.reject(new DOMException('denied', 'SecurityError')) },
      configurable: true,
    });
    try {
      const { t, fetch } = make();
      t.track('x');
      await expect(t.flush()).resolves.toBe(undefined);
      expect(fetch.requests.flatMap((r) => r.body.events.map((e) => e.type))).toEqual(['x']);
    } finally {
      delete navigator.locks;
    }
  });
});

describe('access: the public key, the signed user id, consent', () => {
  it('sends the key as ?key= on every request, events, decide and sendBeacon alike', async () => {
    const beacons = [];
    navigator.sendBeacon = (url, body) => (beacons.push([url, JSON.parse(body)]), true);
    document.body.innerHTML = '<div data-kairos-zone="hero"></div>';
    const fetch = fetchStub((url) => (url.includes('/v1/decide') ? res(200, { decisions: [] }) : res(200, { accepted: 1 })));
    const { t } = make({ key: 'kp_live_4f2a' }, fetch);
    await t.page();
    t.track('x');
    await t.flush();
    t.track('y');
    window.dispatchEvent(new Event('pagehide'));
    expect(fetch.requests.map((r) => r.url)).toEqual([
      'https://engine.test/v1/decide?key=kp_live_4f2a',
      'https://engine.test/v1/events?key=kp_live_4f2a',
    ]);
    expect(beacons.map((b) => b[0])).toEqual(['https://engine.test/v1/events?key=kp_live_4f2a']);
    // a string body: text/plain, no Authorization header, so no CORS preflight
    expect(typeof fetch.requests[0].init.body).toBe('string');
    expect(fetch.requests[0].init.headers).toBe(undefined);
  });

  it('lifts user_hash out of the traits to every event of the user, and into decide', async () => {
    document.body.innerHTML = '<div data-kairos-zone="hero"></div>';
    const fetch = fetchStub((url) => (url.includes('/v1/decide') ? res(200, { decisions: [] }) : res(200, { accepted: 1 })));
    const { t } = make({}, fetch);
    const h = 'a'.repeat(64);
    t.identify('u-42', { plan: 'gold', user_hash: h });
    t.track('x');
    await t.flush();
    const [i, x] = fetch.to('/v1/events')[0].body.events;
    expect([i.user_id, i.user_hash, i.props]).toEqual(['u-42', h, { traits: { plan: 'gold' } }]);
    expect([x.user_id, x.user_hash]).toEqual(['u-42', h]);
    expect(JSON.stringify(fetch.requests)).not.toContain('"traits":{"plan":"gold","user_hash"');
    expect(localStorage.getItem('kairos_uh')).toBe(h);
    await t.page();
    const d = fetch.to('/v1/decide?key=undefined').concat(fetch.requests.filter((r) => r.url.includes('/v1/decide')))[0];
    expect([d.body.user_id, d.body.user_hash]).toEqual(['u-42', h]);
    // another user without a hash: the old hash is not reused for them
    t.identify('u-7', { plan: 'free' });
    t.track('z');
    await t.flush();
    const sent = fetch.to('/v1/events').flatMap((r) => r.body.events).filter((e) => e.user_id === 'u-7');
    expect(sent.length).toBe(2);
    expect(sent.every((e) => e.user_hash === undefined)).toBe(true);
    expect(localStorage.getItem('kairos_uh')).toBe(null);
  });

  it('puts the consent state in every event when the site requires consent', async () => {
    const { t, fetch } = make({ consent: null });
    await t.page(); // waits for consent
    t.track('before'); // no consent yet: nothing is kept or sent
    t.consent(true);
    await settle();
    t.track('x');
    await t.flush();
    const events = fetch.to('/v1/events').flatMap((r) => r.body.events);
    expect(events.map((e) => [e.type, e.context.consent])).toEqual([['page_view', true], ['x', true]]);
    t.consent(false);
    t.track('y');
    await t.flush();
    expect(fetch.requests.length).toBe(1); // withdrawn: nothing more is sent
  });

  it('sends no consent flag when the site does not ask for consent', async () => {
    const { t, fetch } = make();
    t.track('x');
    await t.flush();
    expect('consent' in fetch.to('/v1/events')[0].body.events[0].context).toBe(false);
  });
});
