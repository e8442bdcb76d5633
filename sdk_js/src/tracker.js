// The tracker: builds events, keeps consent and ids, batches to its tab's queue, flushes through
// the transport, asks for decisions and renders them, watches exit intent.
//
// Cross-tab safety: each tab (page load) has its own queue in localStorage, kairos_q_<site>_<tab>,
// which only that tab writes, and holds the Web Lock kairos_t_<site>_<tab> while it lives. A
// shared queue is not safe: Chromium shows a tab another tab's localStorage writes late, so
// read-modify-write cycles resurrect sent events and lose new ones. A queue whose tab lock is free
// belongs to a page that is gone (a reload, a closed tab); a starting tab adopts it and keeps that
// lock for good, so no second tab adopts it too. Without Web Locks, every other queue is adopted.
// Everything it needs from the browser comes through `win` and `deps`, so tests can drive it.

import { uuid, warn, safe, parseJSON } from './util.js';
import { cookieStore, webStore, memoryStore } from './storage.js';
import { createQueue } from './queue.js';
import { backoff } from './backoff.js';
import { post, retryable, beacon } from './transport.js';
import { exitDetector } from './exit.js';
import { renderZone, showPopup } from './render.js';
import { deviceOf } from './config.js';
import { compact, matchPage, pageDeclaration, sitemapItem, findZones, itemFromAttrs, ga4Items, dataLayerEntry } from './sitemap.js';



export function createTracker(win, cfg, deps = {}) {
  const now = deps.now || Date.now;
  const rand = deps.random || Math.random;
  const fetchFn = deps.fetch || ((u, o) => win.fetch(u, o));
  const doc = win.document;
  const nav = win.navigator;
  const on = (target, name, fn, opts) => target.addEventListener(name, safe(fn), opts);
  const web = (k) => (cfg.storage === 'none' ? memoryStore() : webStore(() => win[k]));
  const local = web('localStorage');
  const ids = cfg.storage === 'cookie' ? cookieStore(doc) : local; // ids and consent
  const sess = web('sessionStorage');
  const tab = uuid();
  const sfx = '_' + cfg.site;
  const EXIT = 'kairos_exit' + sfx;
  const QK = 'kairos_q' + sfx + '_';
  const TL = 'kairos_t' + sfx + '_';
  const q = createQueue(local, QK + tab, cfg.cap);
  const locks = nav.locks;
  const forever = () => new Promise(() => {});
  const device = deviceOf(nav);
  // the public key rides in the URL: text/plain bodies and sendBeacon carry no header
  const url = (path) => cfg.engine + path + (cfg.key ? '?key=' + encodeURIComponent(cfg.key) : '');
  const eventsUrl = url('/v1/events');

  const c = ids.get('kairos_consent');
  // true: track; false: opted out; null: waiting for consent(true) (nothing stored or sent)
  let consent = c === '1' || (c !== '0' && cfg.consent);
  let vid = consent && ids.get('kairos_vid');
  let uid = consent && ids.get('kairos_uid');
  let uh = consent && ids.get('kairos_uh'); // user_hash: the site's server signs uid with it
  let waiting; // a page view waiting for consent: [explicit]
  let ctx = { url: win.location.href };
  let item;
  let timer;
  let attempt = 0;
  let retryAt = 0;
  let sending;
  let exitArmed;
  let owned;

  const visitor = () => {
    if (!vid || vid.length > 128) {
      vid = uuid();
      if (consent) ids.set('kairos_vid', vid);
    }
    return vid;
  };

  /** One event, in the spec's shape; `fields` adds item, items, props, decision_id. Where the
   * site requires consent, context.consent says it was given. */
  const make = (type, fields) =>
    compact({
      event_id: uuid(),
      type,
      visitor_id: visitor(),
      user_id: uid,
      user_hash: uid && uh,
      channel: 'web',
      ts: now(),
      context: cfg.consent === true ? ctx : { consent: !!consent, ...ctx },
      ...fields,
    });

  /** Events go to the shared queue; without consent they are dropped (a page view waits). */
  function enqueue(events) {
    if (consent) {
      q.push(events);
      schedule(cfg.flushDelay);
    }
  }

  function schedule(ms) {
    timer = timer || setTimeout(() => ((timer = 0), flush()), ms);
  }

  /** Hold this tab's lock for its lifetime, then adopt the queues of pages that are gone. */
  function own() {
    if (owned) return;
    owned = 1;
    const adopt = () => {
      for (const k of local.keys()) {
        const o = k.slice(QK.length);
        if (k.indexOf(QK) || o == tab || o.length != 36) continue;
        const take = () => {
          q.push(parseJSON(local.get(k), []).map((x) => x.e));
          local.del(k);
          schedule(0);
        };
        locks ? locks.request(TL + o, { ifAvailable: true }, (l) => l && (take(), forever())).catch(warn) : take();
      }
    };
    locks ? locks.request(TL + tab, {}, () => (adopt(), forever())).catch(warn) : adopt();
  }

  /** Send one batch from this tab's queue. Resolves when done. */
  async function flush() {
    if (!consent || sending || nav.onLine === false) return;
    if (now() < retryAt) return schedule(retryAt - now());
    sending = 1;
    try {
      const batch = q.claim(tab, now(), cfg.batchSize, 15000);
      if (batch.length) {
        const idl = batch.map((e) => e.event_id);
        const r = await post(fetchFn, eventsUrl, { events: batch }, 10000);
        if (retryable(r.status)) {
          q.release(idl);
          retryAt = now() + backoff(++attempt, rand(), r.retryAfter);
        } else {
          q.remove(idl); // delivered, or a 4xx: undeliverable, never retried
          attempt = 0;
        }
      }
    } finally {
      sending = 0;
    }
    if (q.size()) schedule(retryAt - now()); // past retryAt: a negative delay runs at once
  }

  /** Page hidden or closing: hand every unclaimed event to sendBeacon now. Offline, sendBeacon
   * would take them and lose them: they stay queued, and the next page adopts them. */
  function flushHidden() {
    let batch;
    while (consent && nav.onLine !== false && (batch = q.claim(tab, now(), cfg.batchSize, 15000)).length) {
      const idl = batch.map((e) => e.event_id);
      if (!beacon(nav, eventsUrl, { events: batch })) return q.release(idl);
      q.remove(idl);
    }
  }

  /** Report a reaction to decision `d` (impression, click, dismiss, conversion). */
  function react(d, type, props) {
    enqueue([make(type, { decision_id: d.decision_id, props: compact({ zone: d.zone, ...props }) })]);
    if (type === 'click') flush(); // a click often navigates away: don't wait for the timer
  }

  function whenVisible(el, fn) {
    if (!el || !win.IntersectionObserver) return fn();
    const io = new win.IntersectionObserver(
      (es) => es.some((x) => x.isIntersecting) && (io.disconnect(), fn()),
      { threshold: 0.5 },
    );
    io.observe(el);
  }

  /** POST /v1/decide; resolves to the decisions, or null (engine down or slow: one warning). */
  async function decide(zones, events) {
    const body = { visitor_id: visitor(), user_id: uid, user_hash: uid && uh, context: { channel: 'web', zones, ...ctx }, events };
    const r = await post(fetchFn, url('/v1/decide'), compact(body), cfg.timeout);
    if (r.status === 200 && r.data.decisions) return r.data.decisions;
    warn('decide ' + r.status);
    enqueue(events); // the engine may not have them: send them the normal way (deduped by event_id)
  }

  /** Render each decision into its zone (no element: the popup); controls render nothing but
   * are still counted as seen. */
  function show(decisions, zones) {
    for (const d of decisions || []) {
      const z = zones.find((x) => x.zone === d.zone);
      if (!z || !d.decision_id) continue;
      const r = (type, props) => react(d, type, props);
      const real = d.content && !d.control;
      // a zone element that can't host a shadow root (ul, td, ...) is skipped, not counted
      if (real && z.el) {
        if (!safe(renderZone)(z.el, d, r)) continue;
      } else if (real)
        showPopup(doc, d, r, (email) => {
          identify(0, { email, source: 'popup' });
          r('conversion', { goal: 'email_capture' });
        });
      whenVisible(z.el, () => r('impression', real ? 0 : { control: true }));
    }
  }

  /** A page view: work out type and item, send page_view (+ item_view, search), fill the zones. */
  async function page(ex) {
    if (consent === null) waiting = [ex];
    if (!consent) return;
    ex = ex || {};
    const loc = win.location;
    const pt = matchPage(cfg.sitemap, loc.pathname);
    const decl = pageDeclaration(doc);
    const it = { ...sitemapItem(doc, pt), ...decl.item, ...ex.item };
    item = it.id && it;
    ctx = compact({
      url: ex.url || loc.href,
      referrer: ctx.page_type ? ctx.url : doc.referrer, // after the first page view: the previous one
      page_type: ex.type || decl.page_type || pt?.name || 'other',
      device,
      locale: doc.documentElement.lang || nav.language,
    });
    const events = [make('page_view', { item, props: ex.props })];
    if (item) events.push(make('item_view', { item }));
    const query = pt?.query_param && new URLSearchParams(loc.search).get(pt.query_param);
    if (query) events.push(make('search', { props: { query } }));
    const zones = findZones(doc, pt);
    if (zones.length) show(await decide(zones.map((z) => z.zone), events), zones);
    else enqueue(events);
    armExit();
  }

  function armExit() {
    const o = cfg.exit;
    if (exitArmed || !o.enabled || (o.page_types && !o.page_types.includes(ctx.page_type))) return;
    exitArmed = 1;
    const mobile = device !== 'desktop';
    const feed = exitDetector(mobile, now(), o);
    const see = (type, y) => feed({ type, t: now(), y }) && onExit();
    if (!mobile) on(doc, 'mouseout', (e) => !e.relatedTarget && see('leave', e.clientY));
    else {
      on(win, 'scroll', () => see('scroll', win.scrollY), { passive: true });
      on(win, 'touchstart', () => see('active'), { passive: true });
      setInterval(safe(() => see('tick')), 1000);
    }
  }

  /** Exit intent: send the event with a decide call for the exit_intent zone; show the popup. */
  async function onExit() {
    if (!consent || (cfg.exit.scope !== 'page' && sess.get(EXIT))) return;
    sess.set(EXIT, 1);
    show(await decide(['exit_intent'], [make('exit_intent')]), [{ zone: 'exit_intent' }]);
  }

  /** A standard or custom event (the engine validates the type); props.item, props.items and
   * props.decision_id go to the top level, the rest to props. */
  function track(type, props) {
    const { item: i, items, decision_id, ...rest } = props || {};
    enqueue([make(type, { item: i, items, decision_id, props: Object.keys(rest).length ? rest : undefined })]);
  }

  /** identify(userId, traits): traits.user_hash (computed by the site's server) goes to the
   * events' user_hash, never into traits; the traits travel as props.traits. */
  function identify(userId, traits) {
    const { user_hash: h, ...rest } = traits || {};
    if (userId) uh = (uid = '' + userId) && h;
    else if (h) uh = h;
    remember();
    enqueue([make('identify', { props: traits && { traits: rest } })]);
  }

  function remember() {
    if (!consent) return;
    uid && ids.set('kairos_uid', uid);
    uh ? ids.set('kairos_uh', uh) : ids.del('kairos_uh');
  }

  function setConsent(yes) {
    const was = consent;
    consent = yes;
    ids.set('kairos_consent', yes ? 1 : 0);
    if (yes) {
      own();
      ids.set('kairos_vid', visitor());
      remember();
      if (waiting || was === false) page((waiting || [])[0]);
    } else {
      for (const k of local.keys()) k.indexOf(QK) || local.del(k); // every tab's queue
      ids.del('kairos_vid');
      ids.del('kairos_uid');
      ids.del('kairos_uh');
      sess.del(EXIT);
      vid = uid = uh = null;
    }
    waiting = 0;
  }

  // --- the sitemap's data-layer and click rules, installed once ---
  const sm = cfg.sitemap;
  const dl = sm.data_layer;
  if (dl) {
    const arr = (win[dl.name] = win[dl.name] || []);
    const handle = safe((entry) => {
      const [name, p] = dataLayerEntry(entry);
      const type = dl.events[name];
      if (!type) return;
      const items = ga4Items(p.items);
      track(type, compact({ order_id: p.transaction_id, value: p.value, currency: p.currency, items: items[0] && items }));
    });
    arr.forEach(handle);
    const orig = arr.push;
    arr.push = (...a) => (a.forEach(handle), orig.apply(arr, a));
  }
  on(
    doc,
    'click',
    (e) => {
      for (const r of sm.events || []) {
        const el = e.target.closest(r.click);
        if (!el || (r.page_types && !r.page_types.includes(ctx.page_type))) continue;
        const host = el.closest('[data-kairos-item-id]');
        const it = host ? itemFromAttrs(host) : item;
        track(r.type, { items: it ? [compact({ id: it.id, quantity: 1, price: it.price })] : undefined });
      }
    },
    true,
  );
  on(win, 'pagehide', flushHidden);
  on(doc, 'visibilitychange', () => doc.visibilityState === 'hidden' && flushHidden());
  on(win, 'online', () => ((retryAt = 0), flush()));
  if (consent) own();

  return { page, track, identify, consent: setConsent, flush, onExit };
}
