// Pure pieces: ids, backoff, the bounded queue, the stores.
import { describe, it, expect, vi } from 'vitest';
import { uuid } from '../src/util.js';
import { backoff } from '../src/backoff.js';
import { createQueue } from '../src/queue.js';
import { memoryStore, cookieStore } from '../src/storage.js';
import { retryable } from '../src/transport.js';

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('uuid', () => {
  it('uses crypto.randomUUID when present', () => {
    expect(uuid({ randomUUID: () => 'x' })).toBe('x');
  });
  it('falls back to the UUID a blob URL ends with (insecure contexts), and revokes it', () => {
    const id = '0f8fad5b-d9cb-469f-a165-70867728950e';
    const saved = [URL.createObjectURL, URL.revokeObjectURL]; // jsdom has neither
    URL.createObjectURL = vi.fn(() => 'blob:http://shop.test/' + id);
    URL.revokeObjectURL = vi.fn();
    try {
      expect(uuid({})).toBe(id);
      expect(uuid({})).toMatch(V4);
      expect(URL.revokeObjectURL).toHaveBeenCalledWith('blob:http://shop.test/' + id);
    } finally {
      [URL.createObjectURL, URL.revokeObjectURL] = saved;
    }
  });
});

describe('backoff', () => {
  it('doubles per attempt, with jitter in [d/2, d], capped', () => {
    expect([1, 2, 3, 4].map((a) => backoff(a, 0))).toEqual([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map((a) => backoff(a, 1))).toEqual([1000, 2000, 4000, 8000]);
    expect(backoff(30, 1)).toBe(60000);
    expect(backoff(30, 0)).toBe(30000);
  });
  it('lets Retry-After (seconds) win', () => {
    expect(backoff(1, 0.5, '7')).toBe(7000);
    expect(backoff(3, 0.5, null)).toBe(3000);
    expect(backoff(3, 0.5, 'garbage')).toBe(3000);
  });
  it('retries 5xx and network errors, never 4xx', () => {
    expect([0, 500, 502, 503].map(retryable)).toEqual([true, true, true, true]);
    expect([200, 400, 404, 413, 415, 429].map(retryable)).toEqual([false, false, false, false, false, false]);
  });
});

const ev = (n) => ({ event_id: 'e' + n, type: 'page_view' });

describe('queue', () => {
  it('is bounded: past the cap the oldest events are dropped', () => {
    const q = createQueue(memoryStore(), 'q', 3);
    q.push([ev(1), ev(2)]);
    q.push([ev(3), ev(4), ev(5)]);
    expect(q.claim('a', 0, 10, 100).map((e) => e.event_id)).toEqual(['e3', 'e4', 'e5']);
  });

  it('survives a reload: the same store gives the same queue', () => {
    const s = memoryStore();
    createQueue(s, 'q').push([ev(1)]);
    expect(createQueue(s, 'q').size()).toBe(1);
  });

  it('claims at most max events and skips claimed ones until the claim expires', () => {
    const s = memoryStore();
    const q = createQueue(s, 'q');
    q.push([1, 2, 3, 4, 5].map(ev));
    expect(q.claim('tabA', 1000, 2, 500).map((e) => e.event_id)).toEqual(['e1', 'e2']);
    // another tab (another queue object on the same storage) never gets tabA's events
    const other = createQueue(s, 'q');
    expect(other.claim('tabB', 1100, 10, 500).map((e) => e.event_id)).toEqual(['e3', 'e4', 'e5']);
    expect(other.claim('tabB', 1200, 10, 500)).toEqual([]);
    // tabA died: its claim expires and the events become available again
    expect(other.claim('tabB', 1500, 10, 500).map((e) => e.event_id)).toEqual(['e1', 'e2']);
  });

  it('caps a claim by bytes (keepalive bodies are limited to 64 KB)', () => {
    const q = createQueue(memoryStore(), 'q');
    const big = (n) => ({ event_id: 'e' + n, props: { x: 'y'.repeat(30000) } });
    q.push([big(1), big(2), big(3)]);
    expect(q.claim('a', 0, 50, 100).length).toBe(1);
    // a single event larger than the limit is still sent alone (the engine answers 413)
    const q2 = createQueue(memoryStore(), 'q');
    q2.push([{ event_id: 'huge', props: { x: 'y'.repeat(70000) } }]);
    expect(q2.claim('a', 0, 50, 100).length).toBe(1);
  });

  it('remove drops events for good, release makes them claimable again', () => {
    const q = createQueue(memoryStore(), 'q');
    q.push([1, 2, 3].map(ev));
    q.claim('a', 0, 3, 1000);
    q.remove(['e1']);
    q.release(['e2']);
    expect(q.size()).toBe(2);
    expect(q.claim('b', 1, 10, 1000).map((e) => e.event_id)).toEqual(['e2']);
    q.remove(['e2', 'e3']);
    expect(q.size()).toBe(0);
  });

  it('treats a corrupt stored value as empty', () => {
    const s = memoryStore();
    s.set('q', '{not json');
    const q = createQueue(s, 'q');
    expect(q.size()).toBe(0);
    q.push([ev(1)]);
    expect(q.size()).toBe(1);
  });
});

describe('cookie store', () => {
  it('writes first-party cookies for a year and reads them back', () => {
    const doc = { cookie: '' };
    const jar = {};
    Object.defineProperty(doc, 'cookie', {
      get: () => Object.entries(jar).map(([k, v]) => `${k}=${v}`).join('; '),
      set: (s) => {
        const [kv, ...attrs] = s.split(';');
        const [k, v] = kv.split('=');
        if (attrs.includes('max-age=0')) delete jar[k];
        else jar[k] = v;
        doc.last = s;
      },
    });
    const c = cookieStore(doc);
    c.set('kairos_vid', 'a b');
    expect(doc.last).toBe('kairos_vid=a%20b;max-age=31536000;path=/;SameSite=Lax');
    expect(c.get('kairos_vid')).toBe('a b');
    expect(c.get('vid')).toBeFalsy();
    c.del('kairos_vid');
    expect(c.get('kairos_vid')).toBeFalsy();
  });
});
