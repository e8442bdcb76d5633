// The only module that talks to the network. Bodies are JSON strings, which fetch and sendBeacon
// send as text/plain, so a cross-origin POST is a "simple request" (no CORS preflight). fetch's
// default credentials mode ("same-origin") sends no cookies to a cross-origin engine.

/**
 * POST a JSON body with a timeout (fetch keepalive, so it survives navigation). Resolves to
 * {status, data, retryAfter}; status 0 means a network error or a timeout. Never rejects.
 */
export async function post(fetchFn, url, body, timeoutMs) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    // a string body is sent as "text/plain;charset=UTF-8"; cross-origin, no cookies go with it
    const r = await fetchFn(url, { method: 'POST', body: JSON.stringify(body), keepalive: true, signal: ac.signal });
    return { status: r.status, data: await r.json().catch(() => 0), retryAfter: r.headers.get('Retry-After') };
  } catch (e) {
    return { status: 0 };
  } finally {
    clearTimeout(timer);
  }
}

/** Retry this answer later? 5xx (503 included), network errors and timeouts: yes. 2xx: sent.
 * Any 4xx: the events are undeliverable and are dropped, never retried. */
export const retryable = (status) => !status || status >= 500;

/** Page hidden or closing: sendBeacon with a string body (sent as text/plain). */
export const beacon = (nav, url, body) => nav.sendBeacon(url, JSON.stringify(body));
