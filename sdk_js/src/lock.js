// Cross-tab mutual exclusion for the queue. Web Locks (navigator.locks) when present; otherwise a
// lease in localStorage: {o: owner, u: until}, written then read back to detect a concurrent
// writer. `run(fn)` runs fn only if the lock is free, and resolves to fn's result or null.

import { parseJSON } from './util.js';

export function createLock({ locks, store, key, owner, now, ttl = 15000 }) {
  if (locks) return { run: (fn) => locks.request(key, { ifAvailable: true }, (l) => l && fn()) };
  const read = () => parseJSON(store.get(key), {});
  return {
    async run(fn) {
      const l = read();
      if (l.o && l.o !== owner && l.u > now()) return null;
      store.set(key, JSON.stringify({ o: owner, u: now() + ttl }));
      if (read().o !== owner) return null;
      try {
        return await fn();
      } finally {
        if (read().o === owner) store.del(key);
      }
    },
  };
}
