// Bundle browser/entry.js (with @segment/analytics-next from node_modules) into one file, and
// copy the page beside it: dist/index.html + dist/analytics-next.js. No network at run time.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const out = join(here, 'dist')
mkdirSync(out, { recursive: true })
await build({
  entryPoints: [join(here, 'browser', 'entry.js')],
  outfile: join(out, 'analytics-next.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome110'],
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
})
copyFileSync(join(here, 'browser', 'index.html'), join(out, 'index.html'))
