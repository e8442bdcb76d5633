// Small helpers shared by every module. Nothing here touches the page.

/** A fresh UUID v4: crypto.randomUUID (secure contexts), else the one a blob URL ends with
 * (browsers make those random v4 UUIDs, in any context). */
export function uuid(c = globalThis.crypto) {
  if (c.randomUUID) return c.randomUUID();
  const u = URL.createObjectURL(new Blob());
  URL.revokeObjectURL(u);
  return u.slice(-36);
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
      r?.catch?.(warn);
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
