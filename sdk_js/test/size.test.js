// @vitest-environment node
// The size budget: the built beacon stays under 6 KB gzip (scripts/build.mjs checks it too).
import { describe, it, expect } from 'vitest';
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const BUDGET = 6 * 1024;

describe('dist/kairos.js', () => {
  it(`is under ${BUDGET} bytes gzip and one self-contained script`, async () => {
    const out = await build({
      entryPoints: [fileURLToPath(new URL('../src/main.js', import.meta.url))],
      bundle: true,
      minify: true,
      format: 'iife',
      target: ['es2020'],
      legalComments: 'none',
      write: false,
    });
    const js = out.outputFiles[0].text;
    const gz = gzipSync(js, { level: 9 }).length;
    expect(gz).toBeLessThan(BUDGET);
    expect(js).not.toMatch(/\bimport\b|\bexport\b|require\(/);
    expect(js.startsWith('(()=>{')).toBe(true);
  });
});
