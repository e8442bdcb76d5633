// Build dist/kairos.js (one minified IIFE) and fail if it is over the gzip size budget. The engine
// serves it with the site's compiled sitemap in front (GET /sdk/kairos.js); that served file is
// what the budget is about, measured by tests/integration/test_beacon_size.py against the engine.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { BUDGET, bundle } from './bundle.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = root + 'dist/kairos.js';

mkdirSync(root + 'dist', { recursive: true });
writeFileSync(out, await bundle());
const raw = readFileSync(out);
const gz = gzipSync(raw, { level: 9 }).length;
console.log(`dist/kairos.js: ${raw.length} bytes, ${gz} bytes gzip (budget ${BUDGET} with the sitemap)`);
if (gz > BUDGET) {
  console.error(`over the size budget by ${gz - BUDGET} bytes`);
  process.exit(1);
}

// The analyst dashboard (served by the engine at /dashboard): dist/dashboard.js and the
// dist/dashboard.css that its CSS imports become, uPlot bundled in. No size budget, kept lean.
const dash = root + 'dist/dashboard.js';
await build({
  entryPoints: [root + 'dashboard/main.js'],
  outfile: dash,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  legalComments: 'none',
  logLevel: 'warning',
});
const dashJs = readFileSync(dash);
const dashCss = readFileSync(root + 'dist/dashboard.css');
console.log(`dist/dashboard.js: ${dashJs.length} bytes, ${gzipSync(dashJs, { level: 9 }).length} bytes gzip; `
  + `dist/dashboard.css: ${dashCss.length} bytes`);
