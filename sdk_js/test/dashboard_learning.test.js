// @vitest-environment node
import { describe, it, expect } from 'vitest';
import { evaluationRows, evaluationNote, shareSeries, driftText, propensityMeter, estimate } from '../dashboard/learning.js';
import { DASH } from '../dashboard/format.js';

const est = (value, lo, hi, ess = 400, n = 1000) => ({ value, ci: [lo, hi], ess, n });
const DOC = {
  rows: 1000,
  arms: ['a', 'b'],
  mean_reward: 0.05,
  model_version: 7,
  events_needed_for_10pct_lift: 29792,
  replay: { value: 0.06, matched: 480, rows: 1000, valid: false },
  policies: {
    uniform: { ips: est(0.04, 0.03, 0.05), snips: est(0.041, 0.031, 0.051), dr: est(0.042, 0.032, 0.052), distribution: { a: 0.5, b: 0.5 }, snips_vs_logged: { value: -0.009, ci: [-0.02, 0.001], separated: false } },
    custom: { ips: est(0.1, 0.08, 0.12), snips: est(0.1, 0.08, 0.12), dr: est(0.1, 0.08, 0.12), snips_vs_logged: { value: 0.05, ci: [0.03, 0.07], separated: true } },
    logged: { ips: est(0.05, 0.04, 0.06, 1000), snips: est(0.05, 0.04, 0.06, 1000), dr: est(0.05, 0.04, 0.06, 1000) },
    greedy: { ips: est(0.02, 0.01, 0.03), snips: est(0.02, 0.01, 0.03, 120), dr: est(0.02, 0.01, 0.03), snips_vs_logged: { value: -0.03, ci: [-0.04, -0.02], separated: true } },
    bandit: { ips: est(0.052, 0.04, 0.06), snips: est(0.052, 0.04, 0.06), dr: est(0.052, 0.04, 0.06) },
  },
  traffic_over_time: { width_ms: 60000, points: [{ t: 60000, n: 10, share: { a: 0.5, b: 0.5 } }, { t: 120000, n: 4, share: { a: 0.25, b: 0.75 } }] },
};

describe('off-policy evaluation rows', () => {
  it('orders the standard candidates first, then the others by name', () => {
    expect(evaluationRows(DOC).map((r) => r.name)).toEqual(['logged', 'bandit', 'uniform', 'greedy', 'custom']);
  });
  it('formats each estimate with its interval, the ESS and its share of rows', () => {
    const [logged, , uniform, greedy, custom] = evaluationRows(DOC);
    expect(logged.snips).toEqual({ value: '5.0 %', ci: '[4.0 %, 6.0 %]' });
    expect(logged.ess).toBe('1.0k');
    expect(logged.essShare).toBe('100 %');
    expect(logged.verdict).toBe(null); // the baseline itself
    expect(greedy.ess).toBe('120');
    expect(greedy.essShare).toBe('12 %');
    expect(uniform.verdict.text).toBe('cannot tell apart');
    expect(uniform.verdict.cls).toBe('');
    expect(uniform.verdict.title).toContain('[-2.00, 0.10] points');
    expect(greedy.verdict).toMatchObject({ text: 'worse -3.00 pts', cls: 'bad' });
    expect(custom.verdict).toMatchObject({ text: 'better +5.00 pts', cls: 'good' });
    expect(custom.label).toBe('custom');
    expect(uniform.distribution).toEqual({ a: 0.5, b: 0.5 });
  });
  it('answers dashes for missing figures, never NaN', () => {
    expect(estimate(null)).toEqual({ value: DASH, ci: '' });
    expect(estimate({ value: 0.1, ci: [null, 1] })).toEqual({ value: '10 %', ci: '' });
    const [row] = evaluationRows({ rows: 3, policies: { logged: {} } });
    expect(row.ips.value).toBe(DASH);
    expect(row.ess).toBe(DASH);
    expect(evaluationRows(null)).toEqual([]);
  });
  it('summarises the log', () => {
    const note = evaluationNote(DOC);
    expect(note).toContain('1.0k logged decisions');
    expect(note).toContain('mean reward 5.0 %');
    expect(note).toContain('model v7');
    expect(note).toContain('≈ 30k events');
    expect(note).toContain('not valid');
    expect(evaluationNote({ rows: 0 })).toContain('no logged decisions yet');
  });
});

describe('share of decisions over time', () => {
  it('gives one series per arm in the campaign order, x in seconds', () => {
    const { xs, series } = shareSeries(DOC.traffic_over_time, DOC.arms);
    expect(xs).toEqual([60, 120]);
    expect(series).toEqual([{ name: 'a', values: [0.5, 0.25] }, { name: 'b', values: [0.5, 0.75] }]);
  });
  it('takes the arms from the points when none are given, and copes with nothing', () => {
    expect(shareSeries(DOC.traffic_over_time).series.map((s) => s.name)).toEqual(['a', 'b']);
    expect(shareSeries(null, ['a'])).toEqual({ xs: [], series: [{ name: 'a', values: [] }] });
    expect(shareSeries({ points: [{ t: 1000, n: 1, share: { a: 1 } }] }, ['a', 'z']).series[1].values).toEqual([null]);
  });
});

describe('drift events and propensity', () => {
  it('says what drifted and how the model reacted', () => {
    expect(driftText({ kind: 'arm', campaign: 'hero', arm: 'b', detections: 2, reaction: 'restarted' }))
      .toEqual({ what: 'campaign hero, arm b: its reward rate changed (#2)', reaction: 'restarted' });
    expect(driftText({ kind: 'propensity', target: 'exit', detections: 1 }).what).toBe('exit propensity model: its errors changed (#1)');
    expect(driftText(null).what).toBe(DASH);
  });
  it('draws a propensity as a bounded meter', () => {
    expect(propensityMeter(0.734)).toEqual({ text: '73 %', width: 73.4, cls: 'high' });
    expect(propensityMeter(0.05)).toMatchObject({ text: '5.0 %', cls: 'low' });
    expect(propensityMeter(0.3).cls).toBe('');
    expect(propensityMeter(1.2).width).toBe(100);
    expect(propensityMeter(undefined)).toEqual({ text: DASH, width: 0, cls: '' });
  });
});
