// Small helpers shared by every module. Nothing here touches the page.

/** A fresh UUID v4: crypto.randomUUID (secure contexts), else crypto.getRandomValues. */
export function uuid(c = globalThis.crypto) {
  if (c.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(32));
  let i = 0;
  // x: random hex digit, y: RFC 4122 variant (8, 9, a or b)
  return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (ch) =>
    (ch === 'x' ? b[i++] & 15 : (b[i++] & 3) | 8).toString(16),
  );
}

let warned = false;
/** At most one console.warn per page, whatever goes wrong. */
export function warn(msg) {
  if (!warned) {
    warned = true;
    console.warn('[kairos] ' + msg);
  }
}
export function resetWarn() {
  warned = false;
}

/** Wrap an entry point so that it can never throw into the host page. */
export const safe =
  (fn) =>
  (...args) => {
    try {
      const r = fn(...args);
      if (r && r.catch) r.catch(warn);
      return r;
    } catch (e) {
      warn(e);
    }
  };

export function parseJSON(s, dflt) {
  try {
    return JSON.parse(s) || dflt;
  } catch (e) {
    return dflt;
  }
}
