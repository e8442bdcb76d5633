// @vitest-environment node
// The size budget, on the bundle exactly as it ships (scripts/bundle.mjs: esbuild + terser). The
// budget is about the file a site downloads, /sdk/kairos.js as the engine serves it with the
// shipped sitemap compiled in: tests/integration/test_beacon_size.py measures that one, against
// a running engine. Here: the beacon alone must leave room for a sitemap.
import { describe, it, expect } from 'vitest';
import { gzipSync } from 'node:zlib';
import { BUDGET, bundle } from '../scripts/bundle.mjs';

describe('dist/kairos.js', () => {
  it(`is under ${BUDGET} bytes gzip and one self-contained script`, async () => {
    const js = await bundle();
    const gz = gzipSync(js, { level: 9 }).length;
    expect(gz).toBeLessThan(BUDGET);
    expect(js).not.toMatch(/\bimport\b|\bexport\b|require\(/);
    expect(js.startsWith('(()=>{')).toBe(true);
  }, 60_000); // terser on a busy machine
});
