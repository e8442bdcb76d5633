// Configuration, read once from the <script> tag's data-* attributes and the compiled sitemap that
// the engine serves in front of the beacon (window.__kairosSitemap).
//   data-key (the site's public key kp_…, or ?key= in the script's own src), data-site,
//   data-endpoint, data-storage (local | cookie | none), data-require-consent,
//   data-queue-cap, data-batch, data-flush-ms, data-decide-timeout, data-exit-intent
//   (off | page | session), data-auto-page="false"

export function readConfig(script, win) {
  const d = script?.dataset || {};
  const sm = win.__kairosSitemap || {};
  const ex = { enabled: true, ...sm.exit_intent };
  if (d.exitIntent) {
    ex.enabled = d.exitIntent !== 'off';
    ex.scope = d.exitIntent;
  }
  const src = new URL(script ? script.src : '/', win.location.href);
  return {
    key: d.key || src.searchParams.get('key'),
    site: d.site || 'default',
    engine: (d.endpoint || src.origin).replace(/\/+$/, ''),
    storage: d.storage,
    consent: d.requireConsent == null || d.requireConsent === 'false' || null, // null: wait for consent
    cap: +d.queueCap || 500,
    batchSize: +d.batch || 50,
    flushDelay: +d.flushMs || 1000,
    timeout: +d.decideTimeout || 300,
    pageOnLoad: d.autoPage !== 'false',
    exit: ex,
    sitemap: sm,
  };
}

/** desktop | mobile | tablet, from the user agent and touch support (iPadOS says "Mac"). */
export const deviceOf = (nav) =>
  /iPad|Tablet|Android(?!.*Mobi)/i.test(nav.userAgent)
    ? 'tablet'
    : /Mobi|iPhone|Android/i.test(nav.userAgent)
      ? 'mobile'
      : /Mac/.test(nav.userAgent) && nav.maxTouchPoints > 1
        ? 'tablet'
        : 'desktop';
