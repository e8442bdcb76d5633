// Shared test helpers: a scripted fetch stub that records the exact requests, fixed ids and time.
import { vi } from 'vitest';

/** A fetch Response-like object. */
export const res = (status, data, headers = {}) => ({
  status,
  json: async () => {
    if (data === undefined) throw new Error('no body');
    return data;
  },
  headers: { get: (h) => headers[h] ?? null },
});

/**
 * A fetch stub. `answer(url, body, init)` returns a response (or a promise, or throws).
 * `requests` records {url, init, body} with the body parsed back from its JSON string.
 */
export function fetchStub(answer = () => res(200, { accepted: 1, rejected: [] })) {
  const requests = [];
  const fn = vi.fn(async (url, init) => {
    const body = JSON.parse(init.body);
    requests.push({ url, init, body });
    return answer(url, body, init);
  });
  fn.requests = requests;
  fn.to = (path) => requests.filter((r) => r.url.endsWith(path));
  return fn;
}

/** Sequential, recognisable UUIDs: 00000000-0000-4000-8000-000000000001, ... */
export function fixedUuids() {
  let n = 0;
  return vi
    .spyOn(globalThis.crypto, 'randomUUID')
    .mockImplementation(() => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`);
}

/** A clock the test moves by hand. */
export function clock(t = 1_700_000_000_000) {
  const c = () => c.t;
  c.t = t;
  c.tick = (ms) => (c.t += ms);
  return c;
}

let site = 0;
/** A config as readConfig would make it; a fresh site per call keeps tests' queues apart. */
export function config(over = {}) {
  return {
    site: 'shop' + ++site,
    engine: 'https://engine.test',
    storage: undefined,
    consent: true,
    cap: 500,
    batchSize: 50,
    flushDelay: 1000,
    timeout: 300,
    pageOnLoad: true,
    exit: { enabled: false },
    sitemap: {},
    ...over,
  };
}

/** Let pending promise callbacks (fetch stubs, locks) run. */
export const settle = async (n = 10) => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};
