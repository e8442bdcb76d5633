// Send a sequence of calls through the real @segment/analytics-node, then flush.
//
//   node send_node.mjs < plan.json
//
// plan.json: {"settings": {"writeKey": "...", "host": "http://127.0.0.1:PORT", ...any other
//             Analytics setting (path, flushAt, flushInterval, maxRetries, httpRequestTimeout)},
//             "calls": [{"method": "track", "args": {"userId": "u1", "event": "Product Viewed",
//                        "properties": {...}}}, ...],
//             "closeTimeout": 30000}
// Prints one JSON line per call, in order ({"index", "method", "messageId", "delivered",
// "error"}), then {"done": true, "http": [{"status"}...]} with every HTTP answer the client got.
import { Analytics } from '@segment/analytics-node'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const plan = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const analytics = new Analytics(plan.settings)
const http = []
analytics.on('http_response', (r) => http.push({ status: r.status, url: r.url }))

const results = plan.calls.map(({ method, args }, index) =>
  new Promise((resolve) => {
    analytics[method](args, (err, ctx) => {
      resolve({
        index,
        method,
        messageId: ctx?.event?.messageId ?? null,
        delivered: !err,
        error: err ? String(err.message ?? err) : null,
      })
    })
  })
)
await analytics.closeAndFlush({ timeout: plan.closeTimeout ?? 30000 })
for (const r of await Promise.all(results)) process.stdout.write(JSON.stringify(r) + '\n')
process.stdout.write(JSON.stringify({ done: true, http }) + '\n')
