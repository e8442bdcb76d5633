// Exponential backoff with jitter: attempt 1 -> ~base, 2 -> ~2*base, ... capped at max.
// `rand` in [0, 1) spreads the delay over [d/2, d) so that many tabs/visitors don't retry in step.
// A Retry-After header (seconds) wins over the computed delay.
export function backoff(attempt, rand, retryAfter, base = 1000, max = 60000) {
  const d = Math.min(max, base * 2 ** (attempt - 1));
  return retryAfter > 0 ? retryAfter * 1000 : Math.round((d * (1 + rand)) / 2);
}
