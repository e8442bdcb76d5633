// Numbers for people: 1.2k/s, 3.4 %, 12 ms, 5 s ago. Pure; every function takes null/undefined
// and NaN and answers an en dash, so a missing figure never shows as "NaN" or "undefined".
export const DASH = '\u2013';

const ok = (x) => typeof x === 'number' && Number.isFinite(x);

// 0 -> "0", 950 -> "950", 1234 -> "1.2k", 12345 -> "12k", 1.5e6 -> "1.5M"
export function compact(x) {
  if (!ok(x)) return DASH;
  const a = Math.abs(x);
  const sign = x < 0 ? '-' : '';
  for (const [unit, div] of [['G', 1e9], ['M', 1e6], ['k', 1e3]]) {
    if (a >= div * 0.9995) {
      const v = a / div;
      return sign + (v >= 9.95 ? Math.round(v).toString() : v.toFixed(1)) + unit;
    }
  }
  if (a === 0) return '0';
  if (a >= 10) return sign + Math.round(a).toString();
  if (a >= 1) return sign + (Number.isInteger(a) ? a.toString() : a.toFixed(1));
  return sign + a.toFixed(2);
}

// events per second: "1.2k/s", "0/s", "0.4/s"
export function rate(x) {
  return ok(x) ? `${compact(x)}/s` : DASH;
}

// a fraction as percent: 0.0342 -> "3.4 %", 0.5 -> "50 %", 0.00012 -> "0.01 %"
export function pct(x, digits) {
  if (!ok(x)) return DASH;
  const p = x * 100;
  const d = digits ?? (Math.abs(p) >= 10 ? 0 : Math.abs(p) >= 0.1 || p === 0 ? 1 : 2);
  return `${p.toFixed(d)} %`;
}

// a signed relative change: 0.123 -> "+12 %", -0.05 -> "-5.0 %"
export function signedPct(x) {
  if (!ok(x)) return DASH;
  return (x > 0 ? '+' : '') + pct(x);
}

// milliseconds: 0.42 -> "0.42 ms", 12.3 -> "12 ms", 1530 -> "1.5 s", 90000 -> "1.5 min"
export function ms(x) {
  if (!ok(x)) return DASH;
  if (x >= 60_000) return `${(x / 60_000).toFixed(1)} min`;
  if (x >= 1000) return `${(x / 1000).toFixed(x >= 10_000 ? 0 : 1)} s`;
  if (x >= 10) return `${Math.round(x)} ms`;
  if (x >= 1) return `${x.toFixed(1)} ms`;
  return `${x.toFixed(2)} ms`;
}

// how long ago, from epoch ms: "just now", "12 s ago", "3 min ago", "2 h ago", "4 d ago"
export function ago(tsMs, nowMs) {
  if (!ok(tsMs) || !ok(nowMs)) return DASH;
  const s = Math.max(0, (nowMs - tsMs) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// a score: 3 significant digits, compact above 1000
export function score(x) {
  if (!ok(x)) return DASH;
  if (Math.abs(x) >= 1000) return compact(x);
  return Number(x.toPrecision(3)).toString();
}

// per minute with a sign for net changes: 3 -> "+3/min", -0.5 -> "-0.5/min"
export function perMin(x, signed = false) {
  if (!ok(x)) return DASH;
  return `${signed && x > 0 ? '+' : ''}${compact(x)}/min`;
}

// "[-1.2 %, +8.0 %]"
export function interval(lo, hi) {
  if (!ok(lo) || !ok(hi)) return DASH;
  return `[${signedPct(lo)}, ${signedPct(hi)}]`;
}
