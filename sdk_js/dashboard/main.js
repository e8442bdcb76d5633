// The live analyst dashboard: a client of the public JSON API only.
//   /v1/stats/stream    Server-Sent Events, one snapshot a second (traffic, trending, segments, campaigns)
//   /v1/profiles/{id}   the selected visitor, read once a second while selected
//   /v1/campaigns/{id}/evaluation   the picked learning campaign's off-policy evaluation,
//                       read every 30 s while the page is visible (its bootstrap costs CPU)
import './style.css';
import { LineChart, PALETTE, clock } from './charts.js';
import { rate, pct, ms, ago, score, perMin, compact, interval, signedPct, DASH } from './format.js';
import { evaluationRows, evaluationNote, shareSeries, driftText, propensityMeter } from './learning.js';

const WINDOW_S = 300;
const MAX_SERIES = 7;
const EVAL_EVERY_MS = 30_000;
const EVAL_RETRY_MS = 3_000;
const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

const state = {
  seconds: new Map(), // t (ms) -> row of /v1/stats/stream series
  snap: null,
  halfLife: localStorage.getItem('kairos_dash_hl') || '1h',
  history: {}, // campaign -> [{t, arms}]
  campaign: null,
  visitor: null,
  seenEvents: new Set(),
};

// one color per event type, the same in every chart and list of the page
const TYPE_COLORS = new Map();
function typeColor(t) {
  if (!TYPE_COLORS.has(t)) TYPE_COLORS.set(t, PALETTE[TYPE_COLORS.size % 8]);
  return TYPE_COLORS.get(t);
}

// -- live traffic ------------------------------------------------------------------------------
const charts = {
  type: new LineChart($('c-type'), { yFormat: compact }),
  channel: new LineChart($('c-channel'), { yFormat: compact }),
  ingest: new LineChart($('c-ingest'), { yFormat: compact }),
  conv: new LineChart($('c-conv'), { yFormat: (v) => pct(v), minMax: 0.01 }),
  share: new LineChart($('c-share'), { yFormat: (v) => pct(v, 0), minMax: 1 }),
};

function topKeys(rows, field) {
  const tot = new Map();
  for (const r of rows) for (const [k, v] of Object.entries(r[field] || {})) tot.set(k, (tot.get(k) || 0) + v);
  return [...tot.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
}

function drawTraffic(nowMs) {
  const last = Math.floor(nowMs / 1000) - 2; // the second that just ended is still filling
  const xs = [];
  const rows = [];
  for (let s = last - WINDOW_S + 1; s <= last; s++) {
    xs.push(s);
    rows.push(state.seconds.get(s * 1000) || {});
  }
  for (const t of state.seconds.keys()) if (t < (last - WINDOW_S) * 1000) state.seconds.delete(t);
  for (const [chart, field] of [[charts.type, 'by_type'], [charts.channel, 'by_channel']]) {
    const keys = topKeys(rows, field);
    const shown = keys.slice(0, MAX_SERIES).sort();
    const rest = keys.slice(MAX_SERIES);
    const series = shown.map((k) => ({ name: k, color: field === 'by_type' ? typeColor(k) : undefined, values: rows.map((r) => (r[field] || {})[k] || 0) }));
    if (rest.length) series.push({ name: 'other', color: PALETTE[8], values: rows.map((r) => rest.reduce((n, k) => n + ((r[field] || {})[k] || 0), 0)) });
    if (!series.length) series.push({ name: 'events', values: rows.map(() => 0) });
    chart.set(xs, series);
  }
  charts.ingest.set(xs, [
    { name: 'accepted', color: PALETTE[1], values: rows.map((r) => r.accepted || 0) },
    { name: 'rejected', color: PALETTE[3], values: rows.map((r) => r.rejected || 0) },
    { name: 'applied', color: PALETTE[0], values: rows.map((r) => r.applied || 0) },
  ]);
}

function drawKpis(s) {
  const r = s.rates || {};
  $('k-applied').textContent = rate(r.applied_per_s);
  $('k-accepted').textContent = rate(r.accepted_per_s);
  const seen = (r.accepted_per_s || 0) + (r.rejected_per_s || 0);
  const rej = $('k-rejected');
  rej.textContent = `${rate(r.rejected_per_s)} rejected${seen ? ` (${pct((r.rejected_per_s || 0) / seen)})` : ''}`;
  rej.classList.toggle('bad', (r.rejected_per_s || 0) > 0);
  const d = (s.latency_ms || {}).decide || {};
  $('k-decide').textContent = ms(d.p99);
  $('k-decide-sub').textContent = d.p99 == null ? 'no decisions in the last 10 s' : `p99 · p50 ${ms(d.p50)}`;
  const w = s.workers || {};
  $('k-fresh').textContent = ms(w.freshness_p99_ms);
  $('k-fresh-sub').textContent = w.freshness_p99_ms == null ? 'no worker reporting' : `p99 · p50 ${ms(w.freshness_p50_ms)}`;
  $('k-lag').textContent = compact(w.lag);
  $('k-workers').textContent = `events behind · ${w.live ?? 0} worker${w.live === 1 ? '' : 's'} live`;
}

// -- what is hot now -----------------------------------------------------------------------------
function drawTrending(s) {
  for (const b of document.querySelectorAll('.seg button')) b.classList.toggle('on', b.dataset.hl === state.halfLife);
  for (const dim of ['category', 'brand', 'item']) {
    const got = (s.trending || {})[`${dim}:${state.halfLife}`];
    const list = $(`hot-${dim}`);
    const items = got && Array.isArray(got.items) ? got.items.slice(0, 10) : null;
    if (!items || !items.length) {
      list.replaceChildren(h('li', { class: 'empty' }, items ? 'nothing trending yet' : 'no data'));
      continue;
    }
    const top = Math.max(...items.map((i) => i.score || 0)) || 1;
    list.replaceChildren(...items.map((i) => h('li', { style: `--w:${Math.max(2, (100 * (i.score || 0)) / top).toFixed(1)}%`, title: `${i.key}: ${score(i.score)}` },
      h('span', { class: 'k' }, i.key), h('span', { class: 'v' }, score(i.score)))));
  }
}

// -- segments --------------------------------------------------------------------------------------
function drawSegments(s) {
  const rows = s.segments || [];
  const body = $('seg-rows');
  if (!rows.length) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'no segments configured')));
    return;
  }
  body.replaceChildren(...rows.map((r) => h('tr', {},
    h('td', { title: r.id }, r.name || r.id),
    h('td', { class: 'n' }, compact(r.size)),
    h('td', { class: 'n' }, perMin(r.joined_per_min)),
    h('td', { class: 'n' }, perMin(r.left_per_min)),
    h('td', { class: `n ${r.net_per_min > 0 ? 'pos' : r.net_per_min < 0 ? 'neg' : ''}` }, perMin(r.net_per_min, true)))));
}

// -- campaigns -------------------------------------------------------------------------------------
const VERDICT = { winning: 'good', better: 'good', losing: 'bad', worse: 'bad', srm: 'bad' };

function verdictPill(v) {
  if (!v) return DASH;
  const text = String(v);
  const cls = Object.entries(VERDICT).find(([k]) => text.includes(k));
  // "variant a: not enough data yet" -> "not enough data yet" (the arm is in its own column)
  const short = text.includes(': ') ? text.slice(text.indexOf(': ') + 2) : text;
  return h('span', { class: `pill ${cls ? cls[1] : ''}`, title: text }, short.replaceAll('_', ' '));
}

function drawCampaigns(s) {
  const body = $('camp-rows');
  const camps = s.campaigns;
  if (!camps || !camps.length) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: 10, class: 'empty' }, camps ? 'no campaigns configured' : 'no data')));
  } else {
    const out = [];
    for (const c of camps) {
      const st = c.stats;
      const arms = st ? st.arms : [];
      if (!arms.length) {
        out.push(h('tr', { class: 'first' }, h('td', {}, h('b', {}, c.name)), h('td', { colspan: 9, class: 'empty' }, st ? 'no traffic yet' : 'stats unavailable')));
        continue;
      }
      arms.forEach((a, i) => {
        const cmp = a.vs_baseline;
        const lift = cmp && cmp.lift != null
          ? h('span', { class: cmp.lift_low > 0 ? 'pos' : cmp.lift_high < 0 ? 'neg' : '', title: `difference ${interval(cmp.diff_low, cmp.diff_high)}` },
            signedPct(cmp.lift), h('small', { class: 'muted ci' }, interval(cmp.lift_low, cmp.lift_high)))
          : a.control ? h('span', { class: 'muted' }, 'baseline') : DASH;
        const srm = i === 0 ? (st.srm && st.srm.ok === false ? h('span', { class: 'pill bad', title: `p = ${st.srm.p_value}` }, 'mismatch')
          : h('span', { class: 'pill good', title: st.srm && st.srm.p_value != null ? `p = ${st.srm.p_value}` : '' }, 'ok')) : '';
        out.push(h('tr', { class: i === 0 ? 'first' : null },
          h('td', { title: c.id }, i === 0 ? h('b', {}, c.name) : ''),
          h('td', {}, a.arm, a.control ? h('small', { class: 'muted' }, ' control') : ''),
          h('td', { class: 'n' }, compact(a.assigned)),
          h('td', { class: 'n' }, compact(a.impressions)),
          h('td', { class: 'n' }, pct(a.ctr)),
          h('td', { class: 'n' }, compact(a.conversions)),
          h('td', { class: 'n' }, pct(a.conversion_rate)),
          h('td', { class: 'n' }, lift),
          h('td', {}, verdictPill(a.verdict || (i === 0 ? st.verdict : null))),
          h('td', {}, srm)));
      });
    }
    body.replaceChildren(...out);
  }
  // conversion over time, one campaign at a time
  const pick = $('camp-pick');
  const ids = (camps || []).map((c) => c.id);
  if (pick.dataset.ids !== ids.join(',')) {
    pick.dataset.ids = ids.join(',');
    pick.replaceChildren(...(camps || []).map((c) => h('option', { value: c.id }, c.name)));
    if (!ids.includes(state.campaign)) state.campaign = ids[0] || null;
    pick.value = state.campaign || '';
  }
  drawConversion();
}

function mergeHistory(hist, full) {
  for (const [cid, pts] of Object.entries(hist || {})) {
    const have = full ? [] : state.history[cid] || [];
    const lastT = have.length ? have[have.length - 1].t : 0;
    for (const p of pts) if (p.t > lastT) have.push(p);
    state.history[cid] = have.slice(-360);
  }
}

function drawConversion() {
  const pts = state.history[state.campaign] || [];
  const arms = [...new Set(pts.flatMap((p) => Object.keys(p.arms)))].sort((a, b) => (a === 'control' ? -1 : b === 'control' ? 1 : a < b ? -1 : 1));
  $('c-conv').parentElement.classList.toggle('nodata', pts.length < 2);
  $('conv-note').textContent = pts.length > 1 ? 'cumulative conversion rate, sampled every 10 s since this API process started'
    : 'collecting samples (every 10 s)…';
  charts.conv.set(pts.map((p) => p.t / 1000), arms.length
    ? arms.map((a, i) => ({ name: a, color: a === 'control' ? PALETTE[8] : PALETTE[i % 8], values: pts.map((p) => (p.arms[a] ? p.arms[a].conversion_rate : null)) }))
    : [{ name: 'conversion', values: pts.map(() => null) }]);
}

// -- learning: off-policy evaluation, the arms' share of decisions, drift ------------------------------
const evaluation = { id: null, timer: null, seq: 0 };

function drawLearnPick(camps) {
  const learning = (camps || []).filter((c) => c.policy && c.policy !== 'fixed');
  const pick = $('learn-pick');
  const ids = learning.map((c) => c.id);
  if (pick.dataset.ids !== ids.join(',')) {
    pick.dataset.ids = ids.join(',');
    pick.replaceChildren(...learning.map((c) => h('option', { value: c.id }, `${c.name} (${c.policy})`)));
    pick.value = ids.includes(evaluation.id) ? evaluation.id : ids[0] || '';
  }
  pick.hidden = !ids.length;
  watchEvaluation(ids.includes(pick.value) ? pick.value : null, camps ? ids.length : null);
}

function watchEvaluation(id, nLearning) {
  if (id === evaluation.id) return;
  evaluation.id = id;
  evaluation.seq += 1;
  clearInterval(evaluation.timer);
  $('learn-body').hidden = !id;
  if (!id) {
    $('eval-note').textContent = nLearning == null ? 'no data yet'
      : 'no campaign with a policy: set `policy: thompson` (or epsilon_greedy) in a campaign to evaluate it';
    return;
  }
  $('eval-note').textContent = 'evaluating…';
  $('eval-rows').replaceChildren();
  loadEvaluation();
  evaluation.timer = setInterval(() => {
    if (!document.hidden) loadEvaluation();
  }, EVAL_EVERY_MS);
}

async function loadEvaluation() {
  const id = evaluation.id;
  const seq = evaluation.seq;
  if (!id) return;
  try {
    const r = await fetch(`/v1/campaigns/${encodeURIComponent(id)}/evaluation?bootstrap=200`, { cache: 'no-store' });
    if (seq !== evaluation.seq) return;
    if (!r.ok) {
      let why = `HTTP ${r.status}`;
      try {
        why = (await r.json()).error || why;
      } catch { /* not JSON */ }
      if (seq === evaluation.seq) {
        $('eval-note').textContent = `cannot evaluate: ${why}`;
        retryEvaluation(seq);
      }
      return;
    }
    const doc = await r.json();
    if (seq === evaluation.seq) drawEvaluation(doc);
  } catch (err) {
    if (seq === evaluation.seq) {
      $('eval-note').textContent = `cannot read the evaluation (${err.message}); retrying`;
      retryEvaluation(seq);
    }
  }
}

// a failed read is tried again soon, not only at the next 30 s refresh
function retryEvaluation(seq) {
  setTimeout(() => {
    if (seq === evaluation.seq && !document.hidden) loadEvaluation();
  }, EVAL_RETRY_MS);
}

function cell(e) {
  return h('td', { class: 'n' }, e.value, e.ci ? h('small', { class: 'muted ci' }, e.ci) : null);
}

function drawEvaluation(doc) {
  $('learn-body').dataset.rows = String(doc.rows || 0);
  $('eval-note').textContent = evaluationNote(doc);
  const rows = evaluationRows(doc);
  $('eval-rows').replaceChildren(...(rows.length ? rows.map((r) => h('tr', { 'data-policy': r.name },
    h('td', { title: r.distribution ? Object.entries(r.distribution).map(([a, p]) => `${a} ${pct(p)}`).join(', ') : 'the logged probabilities' }, r.label),
    cell(r.ips), cell(r.snips), cell(r.dr),
    h('td', { class: 'n' }, r.ess, r.essShare ? h('small', { class: 'muted ci' }, `${r.essShare} of rows`) : null),
    h('td', {}, r.verdict ? h('span', { class: `pill ${r.verdict.cls}`, title: r.verdict.title }, r.verdict.text) : h('span', { class: 'muted' }, 'baseline'))))
    : [h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'nothing logged yet'))]));
  const { xs, series } = shareSeries(doc.traffic_over_time, doc.arms);
  $('c-share').parentElement.classList.toggle('nodata', xs.length < 1);
  const w = doc.traffic_over_time && doc.traffic_over_time.width_ms;
  $('share-note').textContent = xs.length ? `share of the logged decisions (the holdout excluded) per ${ms(w)}, by decision time`
    : 'no logged decisions yet';
  charts.share.set(xs, series.length ? series.map((x, i) => ({ ...x, color: PALETTE[i % 8] })) : [{ name: 'share', values: xs.map(() => null) }]);
}

function drawDrift(s) {
  const list = $('drift-list');
  const evs = s.drift;
  if (!evs || !evs.length) {
    list.replaceChildren(h('li', { class: 'empty' }, evs ? 'no drift detected' : 'no data'));
    return;
  }
  list.replaceChildren(...evs.map((e) => {
    const t = driftText(e);
    return h('li', { 'data-model': e.model },
      h('time', { datetime: ok(e.at) ? new Date(e.at).toISOString() : null, title: ok(e.at) ? ago(e.at, s.now) : null }, ok(e.at) ? time(e.at) : DASH),
      h('div', {}, h('span', { class: 'pill warn' }, 'drift'), ' ', t.what, t.reaction ? h('small', { class: 'muted' }, ` → ${t.reaction}`) : null));
  }));
}

// -- the stream ------------------------------------------------------------------------------------
function setStatus(st, text) {
  const el = $('status');
  el.dataset.state = st;
  el.querySelector('span').textContent = text;
}

function onSnapshot(s) {
  if (s.kind === 'full') state.seconds.clear();
  for (const row of s.series || []) state.seconds.set(row.t, row);
  mergeHistory(s.campaign_history, s.kind === 'full');
  state.snap = s;
  drawKpis(s);
  drawTraffic(s.now);
  drawTrending(s);
  drawSegments(s);
  drawCampaigns(s);
  drawLearnPick(s.campaigns);
  drawDrift(s);
  setStatus('live', `live · ${clock(s.now / 1000, true)}`);
}

let source = null;
function connect() {
  source = new EventSource('/v1/stats/stream');
  source.addEventListener('snapshot', (e) => {
    try {
      onSnapshot(JSON.parse(e.data));
    } catch (err) {
      console.warn('kairos dashboard: bad snapshot', err);
    }
  });
  source.onerror = () => {
    setStatus('down', 'reconnecting…');
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(connect, 3000);
    }
  };
}

// -- one visitor -----------------------------------------------------------------------------------

const time = (ts) => clock(ts / 1000, true);
const ok = (x) => typeof x === 'number' && Number.isFinite(x);

function chips(list, empty = DASH) {
  return list && list.length ? h('div', { class: 'chips' }, list.map((x) => h('span', { class: 'pill' }, x))) : empty;
}

function drawVisitor(p) {
  const now = Date.now();
  const field = (label, value) => h('div', {}, h('span', {}, label), value);
  $('v-head').replaceChildren(
    field('Profile', h('code', {}, p.profile_id)),
    field('User', p.user_id || 'anonymous'),
    field('Events', compact(p.event_count)),
    field('First seen', ago(p.first_seen, now)),
    field('Last seen', ago(p.last_seen, now)),
    field('Segments', chips(p.segments, 'none')),
    field('Cart', chips(p.cart, 'empty')),
    field('Purchased', p.purchased && p.purchased.length ? `${p.purchased.length} item${p.purchased.length === 1 ? '' : 's'}` : 'nothing'),
    field('Linked visitors', chips(p.linked_visitors, 'none')),
  );
  // purchase and exit propensity, learnt per event (null until the learner scored the visitor)
  const prop = p.propensity;
  const meter = (label, v, hint, kind) => {
    const m = propensityMeter(v);
    return h('div', { class: `meter ${kind} ${m.cls}`, id: `v-prop-${kind}`, title: hint },
      h('span', {}, label), h('b', {}, m.text), h('div', { class: 'bar' }, h('i', { style: `width:${m.width}%` })));
  };
  $('v-prop').replaceChildren(...(prop ? [
    meter('Purchase propensity', prop.purchase, 'calibrated probability that this session ends in a purchase', 'purchase'),
    meter('Exit propensity', prop.exit, 'calibrated probability that this event is the last of the session', 'exit'),
    h('small', { class: 'muted' }, `scored at their event of ${ok(prop.at) ? time(prop.at) : DASH} (${ago(prop.at, now)})`),
  ] : [h('span', { class: 'empty' }, 'propensity: not scored yet (the learner scores every event; off with propensity: false)')]));
  // affinities: one bar chart per dimension, each bar split by the event types that made it
  const dims = Object.entries(p.affinities || {});
  const types = new Set();
  $('v-aff').replaceChildren(...dims.map(([dim, rows]) => {
    const top = rows.slice(0, 6);
    const max = Math.max(0, ...top.map((r) => r.score)) || 1;
    const body = top.length ? top.map((r) => {
      const parts = Object.entries(r.by_type || {}).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
      parts.forEach(([t]) => types.add(t));
      const why = parts.map(([t, v]) => `${t} ${score(v)}`).join(' + ');
      const width = (100 * r.score) / max;
      return h('div', { class: 'arow', title: `${r.key} = ${score(r.score)}${why ? ` = ${why}` : ''}` },
        h('span', { class: 'k' }, r.key),
        h('div', { class: 'stack', style: `width:${Math.max(2, width).toFixed(1)}%` },
          parts.map(([t, v]) => h('i', { style: `width:${((100 * v) / (r.score || 1)).toFixed(1)}%;background:${typeColor(t)}` }))),
        h('span', { class: 's' }, score(r.score)));
    }) : [h('div', { class: 'empty' }, 'none yet')];
    const first = top[0];
    const explain = first && first.by_type ? h('div', { class: 'hint small', style: 'margin:2px 0 0' },
      `${first.key}: `, Object.entries(first.by_type).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
        .map(([t, v]) => `${t} ${pct(v / (first.score || 1), 0)}`).join(', ')) : null;
    return h('div', {}, h('h4', {}, dim), ...body, explain);
  }));
  $('v-legend').replaceChildren(...[...types].sort().map((t) => h('span', {}, h('i', { style: `background:${typeColor(t)}` }), t)));
  // recent events
  const acts = p.activity || [];
  const fresh = state.seenEvents.size > 0;
  const items = acts.map((a) => {
    const id = `${a.ts}|${a.type}|${(a.items || []).join(',')}`;
    const isNew = fresh && !state.seenEvents.has(id);
    state.seenEvents.add(id);
    const what = [a.category, a.brand].filter(Boolean).join(' · ');
    return h('li', { class: isNew ? 'new' : null },
      h('time', { datetime: new Date(a.ts).toISOString(), title: ago(a.ts, now) }, time(a.ts)),
      h('div', { class: 'what' }, h('span', { class: 'pill', style: `background:${typeColor(a.type)}33` }, a.type),
        (a.items || []).length ? h('code', {}, a.items.join(', ')) : null,
        what ? h('small', {}, what) : null,
        a.channel ? h('small', {}, a.channel) : null,
        a.decision_id ? h('small', { title: a.decision_id }, 'from a decision') : null));
  });
  $('v-timeline').replaceChildren(...(items.length ? items : [h('li', { class: 'empty' }, 'no recent events')]));
}

let polling = null;
async function loadVisitor() {
  const id = state.visitor;
  if (!id) return;
  try {
    const r = await fetch(`/v1/profiles/${encodeURIComponent(id)}?explain=true&activity=true&top=10`, { cache: 'no-store' });
    if (id !== state.visitor) return;
    if (r.status === 404) {
      $('v-state').textContent = `${id} is not known (yet): waiting for their first event…`;
      $('v-body').hidden = true;
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const p = await r.json();
    if (id !== state.visitor) return;
    $('v-state').textContent = `live · updated ${clock(Date.now() / 1000, true)}`;
    $('v-body').hidden = false;
    drawVisitor(p);
  } catch (err) {
    $('v-state').textContent = `cannot read the profile (${err.message}); retrying`;
  }
}

function selectVisitor(id) {
  state.visitor = id.trim() || null;
  state.seenEvents = new Set();
  clearInterval(polling);
  history.replaceState(null, '', state.visitor ? `#visitor=${encodeURIComponent(state.visitor)}` : location.pathname);
  if (!state.visitor) {
    $('v-body').hidden = true;
    $('v-state').textContent = '';
    return;
  }
  $('v-state').textContent = 'loading…';
  loadVisitor();
  polling = setInterval(() => {
    if (!document.hidden) loadVisitor();
  }, 1000);
}

// -- wiring ----------------------------------------------------------------------------------------
for (const b of document.querySelectorAll('.seg button')) {
  b.addEventListener('click', () => {
    state.halfLife = b.dataset.hl;
    localStorage.setItem('kairos_dash_hl', state.halfLife);
    if (state.snap) drawTrending(state.snap);
  });
}
$('camp-pick').addEventListener('change', (e) => {
  state.campaign = e.target.value;
  drawConversion();
});
$('learn-pick').addEventListener('change', (e) => {
  watchEvaluation(e.target.value || null, 1);
});
$('v-form').addEventListener('submit', (e) => {
  e.preventDefault();
  selectVisitor($('v-id').value);
});
const fromHash = new URLSearchParams(location.hash.slice(1)).get('visitor');
if (fromHash) {
  $('v-id').value = fromHash;
  selectVisitor(fromHash);
}
connect();
