// @vitest-environment node
import { describe, it, expect } from 'vitest';
import { compact, rate, pct, signedPct, ms, ago, score, perMin, interval, DASH } from '../dashboard/format.js';

describe('dashboard number formatting', () => {
  it('compacts counts', () => {
    expect(compact(0)).toBe('0');
    expect(compact(7)).toBe('7');
    expect(compact(2.5)).toBe('2.5');
    expect(compact(0.25)).toBe('0.25');
    expect(compact(950)).toBe('950');
    expect(compact(999.7)).toBe('1.0k');
    expect(compact(1234)).toBe('1.2k');
    expect(compact(12_345)).toBe('12k');
    expect(compact(1_500_000)).toBe('1.5M');
    expect(compact(-2400)).toBe('-2.4k');
  });
  it('formats rates per second', () => {
    expect(rate(1234)).toBe('1.2k/s');
    expect(rate(0)).toBe('0/s');
    expect(rate(0.4)).toBe('0.40/s');
    expect(rate(42)).toBe('42/s');
  });
  it('formats percentages', () => {
    expect(pct(0.0342)).toBe('3.4 %');
    expect(pct(0.5)).toBe('50 %');
    expect(pct(0)).toBe('0.0 %');
    expect(pct(0.00012)).toBe('0.01 %');
    expect(pct(0.123, 2)).toBe('12.30 %');
    expect(signedPct(0.12)).toBe('+12 %');
    expect(signedPct(-0.05)).toBe('-5.0 %');
    expect(interval(-0.012, 0.08)).toBe('[-1.2 %, +8.0 %]');
  });
  it('formats durations', () => {
    expect(ms(0.42)).toBe('0.42 ms');
    expect(ms(3.25)).toBe('3.3 ms');
    expect(ms(12.3)).toBe('12 ms');
    expect(ms(1530)).toBe('1.5 s');
    expect(ms(90_000)).toBe('1.5 min');
  });
  it('says how long ago', () => {
    const now = 1_700_000_000_000;
    expect(ago(now - 500, now)).toBe('just now');
    expect(ago(now - 12_000, now)).toBe('12 s ago');
    expect(ago(now - 180_000, now)).toBe('3 min ago');
    expect(ago(now - 7_200_000, now)).toBe('2 h ago');
    expect(ago(now - 4 * 86_400_000, now)).toBe('4 d ago');
  });
  it('formats scores and per-minute changes', () => {
    expect(score(3.14159)).toBe('3.14');
    expect(score(0.000123456)).toBe('0.000123');
    expect(score(12345)).toBe('12k');
    expect(perMin(3, true)).toBe('+3/min');
    expect(perMin(-0.5, true)).toBe('-0.50/min');
    expect(perMin(12)).toBe('12/min');
  });
  it('never shows NaN or undefined', () => {
    for (const f of [compact, rate, pct, signedPct, ms, score, perMin]) {
      expect(f(undefined)).toBe(DASH);
      expect(f(null)).toBe(DASH);
      expect(f(NaN)).toBe(DASH);
    }
    expect(ago(null, 1)).toBe(DASH);
    expect(interval(null, 1)).toBe(DASH);
  });
});
