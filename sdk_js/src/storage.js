// Key/value stores with one interface: get(key) -> string or nothing, set(key, value), del(key),
// keys() (the web and memory stores).
// "local" (localStorage), "cookie" (first-party, 1 year, SameSite=Lax) and "memory" (this page only).

export function memoryStore() {
  const m = {};
  return {
    get: (k) => m[k],
    set: (k, v) => (m[k] = '' + v),
    del: (k) => delete m[k],
    keys: () => Object.keys(m),
  };
}

/** A Web Storage object (localStorage, sessionStorage) if usable, else a memory store. */
export function webStore(getStorage) {
  try {
    const s = getStorage();
    return {
      get: (k) => s.getItem(k),
      set: (k, v) => {
        try {
          s.setItem(k, v);
        } catch (e) {
          /* quota: the value is lost, the page goes on */
        }
      },
      del: (k) => s.removeItem(k),
      keys: () => Object.keys(s),
    };
  } catch (e) {
    return memoryStore(); // storage blocked
  }
}

export function cookieStore(doc) {
  const put = (k, v, age) => (doc.cookie = `${k}=${encodeURIComponent(v)};max-age=${age};path=/;SameSite=Lax`);
  return {
    get: (k) => {
      const m = doc.cookie.match('(^|; )' + k + '=([^;]*)');
      return m && decodeURIComponent(m[2]);
    },
    set: (k, v) => put(k, v, 31536000),
    del: (k) => put(k, '', 0),
  };
}
