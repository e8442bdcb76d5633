// The entry point: the <script> tag's config, the kairos() command queue, never throwing.
import { describe, it, expect, vi, beforeEach, afterEach } from 'vitest';
import { readConfig, deviceOf } from '../src/config.js';
import { resetWarn } from '../src/util.js';
import { res, fetchStub, clock } from './helpers.js';

window.__kairosTest = true; // don't auto-boot on import
const { boot } = await import('../src/main.js');

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
  localStorage.clear();
  sessionStorage.clear();
  document.body.innerHTML = '';
  delete window.kairos;
  delete window.__kairosSitemap;
  resetWarn();
});
afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

const tag = (attrs) => {
  const s = document.createElement('script');
  s.src = 'https://engine.example.com/sdk/kairos.js';
  for (const k in attrs) s.setAttribute('data-' + k, attrs[k]);
  return s;
};

describe('readConfig', () => {
  it('defaults: the engine is the origin of the script src', () => {
    expect(readConfig(tag({ site: 'shop1' }), window)).toEqual({
      key: null,
      site: 'shop1',
      engine: 'https://engine.example.com',
      storage: undefined,
      consent: true,
      cap: 500,
      batchSize: 50,
      flushDelay: 1000,
      timeout: 300,
      pageOnLoad: true,
      exit: { enabled: true },
      sitemap: {},
    });
  });

  it('takes the public key from data-key, else from ?key= in its own src', () => {
    expect(readConfig(tag({ key: 'kp_a' }), window).key).toBe('kp_a');
    const t = tag({});
    t.src = 'https://engine.example.com/sdk/kairos.js?key=kp_b';
    expect(readConfig(t, window).key).toBe('kp_b');
    expect(readConfig(t, window).engine).toBe('https://engine.example.com');
  });

  it('reads every data-* setting and the served sitemap', () => {
    window.__kairosSitemap = { page_types: [], exit_intent: { enabled: true, scope: 'session', min_ms: 3000 } };
    const c = readConfig(
      tag({
        site: 's',
        endpoint: 'https://api.example.com/kairos/',
        storage: 'cookie',
        'require-consent': '',
        'queue-cap': '50',
        batch: '10',
        'flush-ms': '200',
        'decide-timeout': '500',
        'exit-intent': 'page',
        'auto-page': 'false',
      }),
      window,
    );
    expect(c).toMatchObject({
      engine: 'https://api.example.com/kairos',
      storage: 'cookie',
      consent: null,
      cap: 50,
      batchSize: 10,
      flushDelay: 200,
      timeout: 500,
      pageOnLoad: false,
      exit: { enabled: true, scope: 'page', min_ms: 3000 },
      sitemap: window.__kairosSitemap,
    });
    expect(readConfig(tag({ 'exit-intent': 'off', 'require-consent': 'false' }), window)).toMatchObject({
      exit: { enabled: false },
      consent: true,
    });
  });
});

describe('deviceOf', () => {
  it.each([
    ['Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0', 0, 'desktop'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Safari/605.1.15', 0, 'desktop'],
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Safari/605.1.15', 5, 'tablet'], // iPadOS
    ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148', 5, 'mobile'],
    ['Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/126.0 Mobile Safari/537.36', 5, 'mobile'],
    ['Mozilla/5.0 (Linux; Android 13; SM-X710) Chrome/126.0 Safari/537.36', 5, 'tablet'],
    ['Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) Mobile/15E148', 5, 'tablet'],
  ])('%s', (userAgent, maxTouchPoints, want) => expect(deviceOf({ userAgent, maxTouchPoints })).toBe(want));
});

describe('boot', () => {
  const start = (attrs = { site: 'b' + Math.random() }) => {
    const fetch = fetchStub((url) => (url.endsWith('/v1/decide') ? res(200, { decisions: [] }) : res(200, {})));
    const api = boot(window, tag(attrs), { fetch, now: clock() });
    return { api, fetch };
  };

  it('replays the calls queued before load, in order, and replaces the stub', async () => {
    window.kairos = function () {
      (window.kairos.q = window.kairos.q || []).push(arguments);
    };
    window.kairos('identify', 'u1', { tier: 'gold' });
    window.kairos('track', 'newsletter', { list: 'weekly' });
    const { api, fetch } = start();
    expect(window.kairos).toBe(api);
    expect(api.loaded).toBeTruthy();
    await vi.advanceTimersByTimeAsync(1000);
    const types = fetch.requests.flatMap((r) => r.body.events.map((e) => e.type));
    expect(types).toEqual(['identify', 'newsletter', 'page_view']); // the automatic page view last
    expect(fetch.requests[0].body.events[2].user_id).toBe('u1');
  });

  it('a queued kairos("page", ...) replaces the automatic page view', async () => {
    window.kairos = { q: [['page', { type: 'landing' }]] };
    const { fetch } = start();
    await vi.advanceTimersByTimeAsync(1000);
    const pv = fetch.requests.flatMap((r) => r.body.events).filter((e) => e.type === 'page_view');
    expect(pv.map((e) => e.context.page_type)).toEqual(['landing']);
  });

  it('data-auto-page="false" sends no automatic page view', async () => {
    const { fetch } = start({ site: 'np', 'auto-page': 'false' });
    await vi.advanceTimersByTimeAsync(1000);
    expect(fetch).not.toHaveBeenCalled();
  });

  it('consent commands work through the queue', async () => {
    window.kairos = { q: [['consent', false]] };
    const { fetch } = start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(fetch).not.toHaveBeenCalled();
    expect(localStorage.getItem('kairos_consent')).toBe('0');
  });

  it('a second copy of the script keeps the first', () => {
    const { api } = start();
    expect(boot(window, tag({ site: 'x' }))).toBe(api);
  });

  it('never throws into the page: bad commands warn once', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { api } = start();
    expect(() => api('nonsense', 1)).not.toThrow();
    expect(() => api('track')).not.toThrow();
    expect(() => api()).not.toThrow();
    expect(warn).toHaveBeenCalledTimes(1);
  });
});
