// Availability figures of a run, from its records (pure functions).

// Longest interval without any acknowledged push while writers ran, and the
// faults overlapping it.
export function unavailability(sends, faults, tStart, tEnd) {
  const acks = sends.filter((s) => s.outcome === 'ok').map((s) => s.t1).sort((a, b) => a - b);
  let prev = tStart;
  let best = { ms: 0, from: tStart, to: tStart };
  for (const t of [...acks, tEnd]) {
    if (t - prev > best.ms) best = { ms: t - prev, from: prev, to: t };
    prev = Math.max(prev, t);
  }
  best.faults = faults.filter((f) => f.t0 <= best.to && (f.t1 ?? tEnd) >= best.from).map((f) => `${f.kind}[${f.targets}]${f.detail ? ` ${f.detail}` : ''}`);
  best.from -= tStart;
  best.to -= tStart;
  return best;
}

// Per fault kind, the longest time inside a fault of that kind (from its
// start to its heal) without an acknowledged push anywhere.
export function gapsByKind(sends, faults, tEnd) {
  const acks = sends.filter((s) => s.outcome === 'ok').map((s) => s.t1).sort((a, b) => a - b);
  const out = {};
  for (const f of faults) {
    const t1 = f.t1 ?? tEnd;
    let lo = 0;
    let hi = acks.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (acks[mid] < f.t0) lo = mid + 1; else hi = mid; }
    let prev = f.t0;
    let best = 0;
    for (let i = lo; i < acks.length && acks[i] <= t1; i++) {
      best = Math.max(best, acks[i] - prev);
      prev = acks[i];
    }
    best = Math.max(best, t1 - prev);
    out[f.kind] = Math.max(out[f.kind] ?? 0, best);
  }
  return out;
}

// Per fault kind, the longest time from a heal to the next acknowledged push.
export function recoveryByKind(sends, faults) {
  const acks = sends.filter((s) => s.outcome === 'ok').map((s) => s.t1).sort((a, b) => a - b);
  const out = {};
  for (const f of faults) {
    if (f.t1 == null) continue;
    let lo = 0;
    let hi = acks.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (acks[mid] < f.t1) lo = mid + 1; else hi = mid; }
    if (lo < acks.length) out[f.kind] = Math.max(out[f.kind] ?? 0, acks[lo] - f.t1);
  }
  return out;
}
