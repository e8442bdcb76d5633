// The test page's script: @segment/analytics-next from npm, bundled by esbuild (build.mjs),
// loaded with its settings inline so that it never asks Segment's CDN for anything.
import { AnalyticsBrowser } from '@segment/analytics-next'

// What the Segment CDN would answer for /v1/projects/<writeKey>/settings, reduced to what
// the Segment.io destination needs. `apiKey` here (not load()'s writeKey) is what the
// destination sends as Basic auth and as `writeKey` in the body.
export function cdnSettings({ writeKey, apiHost, protocol = 'http', httpConfig }) {
  return {
    integrations: {
      'Segment.io': { apiKey: writeKey, apiHost, protocol, ...(httpConfig ? { httpConfig } : {}) },
    },
    plan: { track: {}, identify: {}, group: {} },
    remotePlugins: [],
    enabledMiddleware: {},
    legacyVideoPluginsEnabled: false,
    metrics: { sampleRate: 0 }, // otherwise it POSTs its own metrics to <apiHost>/m
  }
}

// Load analytics-next against a given host. `apiHost` is host[:port]/path without the scheme,
// e.g. "127.0.0.1:8000/v1"; the client posts to <protocol>://<apiHost>/<t|p|i|a|g|s>, or to
// /b when `batching` is set ({size, timeout}).
export async function load({ writeKey, apiHost, protocol = 'http', batching, httpConfig, options = {} }) {
  const segment = { apiHost, protocol }
  if (batching) segment.deliveryStrategy = { strategy: 'batching', config: batching }
  const [analytics] = await AnalyticsBrowser.load(
    { writeKey, cdnSettings: cdnSettings({ writeKey, apiHost, protocol, httpConfig }) },
    { ...options, integrations: { 'Segment.io': segment, ...(options.integrations ?? {}) } }
  )
  window.analytics = analytics
  return analytics
}

window.kairosSegment = { load, cdnSettings, AnalyticsBrowser }
