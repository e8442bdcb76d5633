// Exit-intent detection fed with synthetic pointer and scroll sequences.
import { describe, it, expect } from 'vitest';
import { exitDetector } from '../src/exit.js';

const run = (feed, events) => events.map(feed);

describe('desktop exit intent', () => {
  it('fires when the pointer leaves through the top after the minimum time', () => {
    const feed = exitDetector(false, 0, { min_ms: 5000 });
    expect(run(feed, [
      { type: 'leave', t: 1000, y: -5 }, // too early
      { type: 'leave', t: 6000, y: 300 }, // left through the side
      { type: 'leave', t: 7000, y: -1 }, // through the top
      { type: 'leave', t: 8000, y: -1 }, // only once
    ])).toEqual([false, false, true, false]);
  });
  it('ignores scrolling and idleness', () => {
    const feed = exitDetector(false, 0, { min_ms: 0 });
    expect(run(feed, [
      { type: 'scroll', t: 10, y: 2000 },
      { type: 'scroll', t: 20, y: 0 },
      { type: 'tick', t: 999999 },
    ])).toEqual([false, false, false]);
  });
});

describe('mobile exit intent', () => {
  const opts = { min_ms: 1000, depth: 400, up_px: 150, up_ms: 300, idle_ms: 30000 };

  it('fires on a fast upward scroll after scrolling down', () => {
    const feed = exitDetector(true, 0, opts);
    const seq = [
      { type: 'scroll', t: 2000, y: 200 },
      { type: 'scroll', t: 2100, y: 600 }, // deep enough
      { type: 'scroll', t: 2200, y: 620 },
      { type: 'scroll', t: 2300, y: 560 }, // slow / small move up
      { type: 'scroll', t: 2400, y: 400 }, // 220 px up from 620 ... but 200 ms after the peak: fast
    ];
    expect(run(feed, seq)).toEqual([false, false, false, false, true]);
  });

  it('does not fire on a slow upward scroll', () => {
    const feed = exitDetector(true, 0, opts);
    const seq = [{ type: 'scroll', t: 2000, y: 1000 }];
    for (let i = 1; i <= 10; i++) seq.push({ type: 'scroll', t: 2000 + i * 200, y: 1000 - i * 60 });
    expect(run(feed, seq).some(Boolean)).toBe(false);
  });

  it('does not fire on an upward flick without having scrolled down', () => {
    const feed = exitDetector(true, 0, opts);
    expect(run(feed, [
      { type: 'scroll', t: 2000, y: 300 },
      { type: 'scroll', t: 2100, y: 0 },
    ])).toEqual([false, false]);
  });

  it('does not fire before the minimum time on the page', () => {
    const feed = exitDetector(true, 0, { ...opts, min_ms: 10000 });
    expect(run(feed, [
      { type: 'scroll', t: 100, y: 800 },
      { type: 'scroll', t: 200, y: 100 },
    ])).toEqual([false, false]);
  });

  it('fires when idle, and interaction resets the idle clock', () => {
    const feed = exitDetector(true, 0, opts);
    expect(run(feed, [
      { type: 'tick', t: 20000 },
      { type: 'active', t: 25000 },
      { type: 'tick', t: 40000 }, // only 15 s since the touch
      { type: 'scroll', t: 50000, y: 10 },
      { type: 'tick', t: 79000 },
      { type: 'tick', t: 80000 }, // 30 s idle
      { type: 'tick', t: 90000 },
    ])).toEqual([false, false, false, false, false, true, false]);
  });

  it('idle detection can be switched off', () => {
    const feed = exitDetector(true, 0, { ...opts, idle_ms: 0 });
    expect(feed({ type: 'tick', t: 1e9 })).toBe(false);
  });

  it('ignores pointer leaves', () => {
    const feed = exitDetector(true, 0, { ...opts, min_ms: 0 });
    expect(feed({ type: 'leave', t: 5000, y: -1 })).toBe(false);
  });
});
