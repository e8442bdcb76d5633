// Entry point of dist/kairos.js. Reads the <script> tag, replaces the kairos() stub with the real
// command function, replays the calls queued before load, and sends the automatic page view.
//   kairos('page', {type, item, url, props})   kairos('track', type, props)
//   kairos('identify', userId, traits)          kairos('consent', true|false)

import { readConfig } from './config.js';
import { createTracker } from './tracker.js';
import { safe } from './util.js';

export function boot(win, script, deps) {
  const prev = win.kairos || {};
  if (prev.loaded) return prev; // included twice
  const cfg = readConfig(script, win);
  const t = createTracker(win, cfg, deps);
  const doc = win.document;
  const ready = (fn) => ((fn = safe(fn)), doc.readyState === 'loading' ? doc.addEventListener('DOMContentLoaded', fn) : fn());
  const api = safe((cmd, a, b) =>
    cmd === 'page' ? ready(() => t.page(a)) : cmd === 'consent' ? t.consent(!!a) : t[cmd](a, b),
  );
  const queued = prev.q || [];
  win.kairos = Object.assign(api, { loaded: 1, q: [] });
  queued.forEach((args) => api(...args));
  if (cfg.pageOnLoad && !queued.some((a) => a[0] === 'page')) ready(() => t.page());
  ready(t.flush); // whatever earlier page views left in the queue
  return api;
}

safe(() => {
  if (!window.__kairosTest) boot(window, document.currentScript); // set for classic (async) scripts
})();
