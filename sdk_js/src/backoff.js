// Exponential backoff with jitter: attempt 1 -> ~1 s, 2 -> ~2 s, ... capped at 60 s.
// `rand` in [0, 1) spreads the delay over [d/2, d) so that many tabs/visitors don't retry in step.
// A Retry-After header (seconds) wins over the computed delay.
export function backoff(attempt, rand, retryAfter) {
  const d = Math.min(60000, 1000 * 2 ** (attempt - 1));
  return retryAfter > 0 ? retryAfter * 1000 : Math.round((d * (1 + rand)) / 2);
}
