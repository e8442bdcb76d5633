// The beacon as the engine serves it: esbuild bundles src/main.js into one IIFE, terser minifies
// it (about 200 bytes gzip smaller than esbuild's own minifier). Shared by scripts/build.mjs and
// test/size.test.js, so the budget is checked on exactly what ships.
import { build } from 'esbuild';
import { minify } from 'terser';
import { fileURLToPath } from 'node:url';

export const BUDGET = 6 * 1024; // bytes, gzip level 9, of /sdk/kairos.js as the engine serves it

export async function bundle() {
  const out = await build({
    entryPoints: [fileURLToPath(new URL('../src/main.js', import.meta.url))],
    bundle: true,
    format: 'iife',
    target: ['es2020'],
    legalComments: 'none',
    write: false,
    logLevel: 'warning',
  });
  const min = await minify(out.outputFiles[0].text, {
    ecma: 2020,
    toplevel: true,
    compress: { passes: 2, unsafe: true, unsafe_arrows: true, pure_getters: true },
    mangle: true,
    format: { comments: false },
  });
  return min.code;
}
