// A small seeded PRNG (splitmix32 seeding xoshiro128**): the nemesis and the
// workload each draw from their own stream derived from CHAOS_SEED, so a seed
// replays the same fault kinds, durations, targets-by-rank and pauses.
// (What a fault hits when it targets "the leader" still depends on the run.)

function splitmix32(a) {
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  // seed: any non-negative integer; stream: a label giving an independent
  // sequence for the same seed.
  constructor(seed, stream = '') {
    let h = seed >>> 0;
    for (const ch of stream) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    const sm = splitmix32(h ^ Math.floor(seed / 0x100000000));
    this.s = [sm(), sm(), sm(), sm()];
  }

  // Uniform 32-bit unsigned integer.
  u32() {
    const s = this.s;
    const r = Math.imul(((Math.imul(s[1], 5) << 7) | (Math.imul(s[1], 5) >>> 25)), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return r;
  }

  float() { return this.u32() / 0x100000000; }
  // Integer in [lo, hi] (both included).
  int(lo, hi) { return lo + Math.floor(this.float() * (hi - lo + 1)); }
  pick(arr) { return arr[Math.floor(this.float() * arr.length)]; }
  chance(p) { return this.float() < p; }
  shuffle(arr) {
    const a = [...arr];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.float() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

export function newSeed() {
  return Math.floor(Math.random() * 2 ** 48);
}
