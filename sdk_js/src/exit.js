// Exit-intent detection as a pure state machine: no DOM, no clock. Feed it samples
//   {type: 'leave', t, y}   pointer left the document (mouseout with no relatedTarget), clientY = y
//   {type: 'scroll', t, y}  window.scrollY = y
//   {type: 'active', t}     any other interaction (pointer, key, touch)
//   {type: 'tick', t}       a timer tick (for idleness)
// and it answers true exactly once, when the visitor seems about to leave. Options use the
// compiled sitemap's names (exit_intent: min_ms, idle_ms), so its settings pass straight in.
// Desktop: the pointer leaves through the top edge (y <= top_px) after min_ms on the page.
// Mobile, after min_ms on the page: having scrolled down at least `depth` px, a fast scroll back up
// (>= up_px within up_ms of the lowest recent point), or no interaction at all for idle_ms.

export const EXIT_DEFAULTS = { min_ms: 5000, top_px: 10, depth: 400, up_px: 150, up_ms: 300, idle_ms: 30000 };

export function exitDetector(mobile, start, opts) {
  const o = { ...EXIT_DEFAULTS, ...opts };
  let fired;
  let maxY = 0;
  let low = { t: start, y: 0 }; // the lowest point of the current scroll (largest scrollY)
  let prev = 0;
  let last = start; // last interaction
  return (ev) => {
    const t = ev.t;
    let hit;
    if (!mobile) hit = ev.type === 'leave' && ev.y <= o.top_px;
    else if (ev.type === 'tick') hit = o.idle_ms && t - last >= o.idle_ms;
    else {
      last = t;
      if (ev.type === 'scroll') {
        if (ev.y >= prev) low = { t, y: ev.y };
        prev = ev.y;
        maxY = Math.max(maxY, ev.y);
        hit = maxY >= o.depth && low.y - ev.y >= o.up_px && t - low.t <= o.up_ms;
      }
    }
    if (!hit || fired || t - start < o.min_ms) return false;
    return (fired = true);
  };
}
