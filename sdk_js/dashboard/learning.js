// The learning loop for people: an off-policy evaluation as table rows, the arms' share of the
// logged decisions as chart series, drift events and propensity scores as text. Pure: plain
// data from GET /v1/campaigns/{id}/evaluation, the stream's `drift` and a profile's
// `propensity` in, plain data out (main.js draws it).
import { pct, compact, DASH } from './format.js';

// candidates in reading order; any other (given) candidate follows, by name
const ORDER = ['logged', 'bandit', 'uniform', 'fixed_split', 'greedy'];
export const POLICY_LABEL = {
  logged: 'logged (what ran)',
  bandit: 'current bandit',
  uniform: 'uniform',
  fixed_split: 'fixed split',
  greedy: 'greedy (optimistic)',
};

const ok = (x) => typeof x === 'number' && Number.isFinite(x);

// an estimate {value, ci: [lo, hi]} -> {value: "1.2 %", ci: "[0.8 %, 1.6 %]"}
export function estimate(e) {
  if (!e || !ok(e.value)) return { value: DASH, ci: '' };
  const ci = Array.isArray(e.ci) && ok(e.ci[0]) && ok(e.ci[1]) ? `[${pct(e.ci[0])}, ${pct(e.ci[1])}]` : '';
  return { value: pct(e.value), ci };
}

// the evaluation document -> one row per candidate policy, in reading order
export function evaluationRows(doc) {
  const policies = (doc && doc.policies) || {};
  const names = Object.keys(policies).sort((a, b) => {
    const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
    return (ia < 0 ? ORDER.length : ia) - (ib < 0 ? ORDER.length : ib) || (a < b ? -1 : a > b ? 1 : 0);
  });
  return names.map((name) => {
    const p = policies[name] || {};
    const snips = p.snips || {};
    const vs = p.snips_vs_logged;
    let verdict = null;
    if (vs && ok(vs.value)) {
      const sign = vs.value > 0 ? '+' : '';
      const points = `${sign}${(vs.value * 100).toFixed(2)} pts`;
      verdict = {
        text: vs.separated ? (vs.value > 0 ? `better ${points}` : `worse ${points}`) : 'cannot tell apart',
        cls: vs.separated ? (vs.value > 0 ? 'good' : 'bad') : '',
        title: Array.isArray(vs.ci) ? `SNIPS difference to logged ${points}, 95 % interval [${(vs.ci[0] * 100).toFixed(2)}, ${(vs.ci[1] * 100).toFixed(2)}] points` : '',
      };
    }
    const ess = ok(snips.ess) ? snips.ess : null;
    const n = ok(snips.n) ? snips.n : (doc && doc.rows) || null;
    return {
      name,
      label: POLICY_LABEL[name] || name,
      ips: estimate(p.ips),
      snips: estimate(p.snips),
      dr: estimate(p.dr),
      ess: ess == null ? DASH : compact(Math.round(ess)),
      essShare: ess != null && n ? pct(ess / n, 0) : '',
      verdict,
      distribution: p.distribution || null,
    };
  });
}

// a one-line summary of the evaluation (rows, reward rate, how many events a 10 % lift needs)
export function evaluationNote(doc) {
  if (!doc || !doc.rows) return 'no logged decisions yet: rows appear when their reward window closes';
  const parts = [`${compact(doc.rows)} logged decisions`, `mean reward ${pct(doc.mean_reward)}`];
  if (ok(doc.model_version)) parts.push(`model v${doc.model_version}`);
  if (ok(doc.events_needed_for_10pct_lift)) parts.push(`a +10 % lift needs ≈ ${compact(doc.events_needed_for_10pct_lift)} events`);
  const r = doc.replay;
  if (r && ok(r.value)) parts.push(`replay ${pct(r.value)} on ${compact(r.matched)} matched rows${r.valid ? '' : ' (not valid: the log is not uniform)'}`);
  return parts.join(' · ');
}

// traffic_over_time {width_ms, points: [{t, n, share}]} -> {xs (s), series [{name, values}]}
export function shareSeries(traffic, arms) {
  const points = (traffic && traffic.points) || [];
  const names = arms && arms.length ? arms : [...new Set(points.flatMap((p) => Object.keys(p.share || {})))].sort();
  return {
    xs: points.map((p) => p.t / 1000),
    series: names.map((a) => ({ name: a, values: points.map((p) => (p.share && ok(p.share[a]) ? p.share[a] : null)) })),
  };
}

// a drift event (described by the engine) -> {what, reaction}
export function driftText(ev) {
  if (!ev) return { what: DASH, reaction: '' };
  const n = ok(ev.detections) ? ` (#${ev.detections})` : '';
  const what = ev.kind === 'propensity'
    ? `${ev.target || '?'} propensity model: its errors changed${n}`
    : `campaign ${ev.campaign || '?'}, arm ${ev.arm || '?'}: its reward rate changed${n}`;
  return { what, reaction: ev.reaction || '' };
}

// a propensity score -> {text, width, cls} for a meter; `high` is where the rules' examples act
export function propensityMeter(p, high = 0.6, low = 0.1) {
  if (!ok(p)) return { text: DASH, width: 0, cls: '' };
  const v = Math.min(1, Math.max(0, p));
  return { text: pct(v), width: Math.round(v * 1000) / 10, cls: v > high ? 'high' : v < low ? 'low' : '' };
}
