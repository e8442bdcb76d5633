// The outgoing event queue, kept in a store (localStorage) so that it survives reloads and offline
// periods. Each tab has its own (see tracker.js). Bounded: past `cap` the oldest events are dropped.
// Entries are {e: event, c: claimOwner?, u: claimUntil?}. A batch is claimed while it is in flight,
// so that a pagehide flush (sendBeacon) skips it; a claim expires if the sender died.

import { parseJSON } from './util.js';

export function createQueue(store, key, cap = 500) {
  const read = () => [].concat(parseJSON(store.get(key), []));
  const write = (a) => (a.length ? store.set(key, JSON.stringify(a)) : store.del(key));
  // keep entries for which keep(entry, inIds) is true; returns nothing
  const edit = (ids, f) => write(read().flatMap((x) => f(x, ids.includes(x.e.event_id))));

  return {
    size: () => read().length,
    push(events) {
      write(read().concat(events.map((e) => ({ e }))).slice(-cap));
    },
    /** Mark up to `max` unclaimed events (at most `maxBytes` of JSON) as `owner`'s for `ttl` ms. */
    claim(owner, now, max, ttl, maxBytes = 60000) {
      const a = read();
      const out = [];
      let bytes = 0;
      for (const x of a) {
        if (out.length >= max || (x.c && x.u > now)) continue;
        bytes += JSON.stringify(x.e).length;
        if (out.length && bytes > maxBytes) break;
        x.c = owner;
        x.u = now + ttl;
        out.push(x.e);
      }
      write(a);
      return out;
    },
    /** Sent or dropped: remove these events for good. */
    remove: (ids) => edit(ids, (x, hit) => (hit ? [] : [x])),
    /** Not sent (retryable failure): let any tab take them again. */
    release: (ids) => edit(ids, (x, hit) => [hit ? { e: x.e } : x]),
  };
}
