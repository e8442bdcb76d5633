// The beacon as the engine serves it: esbuild bundles src/main.js into one IIFE (with its syntax
// minifier, which leaves terser a tighter start), terser minifies it (about 200 bytes gzip smaller
// than esbuild's own minifier). Shared by scripts/build.mjs and test/size.test.js, so the budget is
// checked on exactly what ships.
import { build } from 'esbuild';
import { minify } from 'terser';
import { fileURLToPath } from 'node:url';

export const BUDGET = 6 * 1024; // bytes, gzip level 9, of /sdk/kairos.js as the engine serves it

// Property names that only the beacon's own objects carry, so that terser may shorten them: the
// queue's claim/release/size, the stores' set/del, the exit detector's own thresholds, the
// config's fields (named apart from the data-* attributes they are read from), the tracker's
// onExit, the transport's answer. Never a name that the DOM objects the beacon touches, the page,
// the served sitemap, an event, a decision or a data-* attribute use: a name added here is renamed
// everywhere in the bundle (the e2e beacon tests run the served file in Chromium).
export const INTERNAL = ['claim', 'release', 'size', 'set', 'del', 'top_px', 'depth', 'up_px', 'up_ms',
  'cap', 'timeout', 'exit', 'sitemap', 'onExit', 'data', 'retryAfter', 'engine', 'batchSize',
  'flushDelay', 'pageOnLoad'];

export async function bundle() {
  const out = await build({
    entryPoints: [fileURLToPath(new URL('../src/main.js', import.meta.url))],
    bundle: true,
    format: 'iife',
    target: ['es2020'],
    minifySyntax: true,
    legalComments: 'none',
    write: false,
    logLevel: 'warning',
  });
  const min = await minify(out.outputFiles[0].text, {
    ecma: 2020,
    toplevel: true,
    compress: { passes: 3, unsafe: true, unsafe_arrows: true, pure_getters: true, inline: 1 },
    // builtins: also the names in INTERNAL that some DOM interface has too (size, release, ...)
    mangle: { properties: { regex: new RegExp(`^(${INTERNAL.join('|')})$`), builtins: true } },
    format: { comments: false },
  });
  return min.code;
}
