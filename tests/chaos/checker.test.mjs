// The chaos checker on hand-made histories: clean ones pass, and each check
// fires on the violation it exists for. Needs no privileges (pure function).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { check, selfTest, CHECKS } from './lib/checker.mjs';

// Two rooms, keys a and b, three nodes with identical streams; writers over
// WebSocket (seq known) and HTTP; subscribers that reconnected once.
function history() {
  const rooms = ['R1', 'R2'];
  const keys = ['a', 'b'];
  const sends = [];
  const stream = { R1: { a: [], b: [] }, R2: { a: [], b: [] } };
  const seq = { R1: 0, R2: 0 };
  let t = 1000;
  const push = (via, conn, room, key, value, outcome) => {
    const s = { i: sends.length, writer: `${via}w`, node: 1, via, conn, room, key, value, t0: t, t1: t + 5, outcome, seq: null, detail: outcome === 'ok' ? null : `planted ${outcome}` };
    t += 10;
    sends.push(s);
    if (outcome === 'ok' || (outcome === 'unknown' && value.endsWith('3'))) {
      seq[room] += 1;
      stream[room][key].push({ seq: seq[room], value });
      if (via === 'ws' && outcome === 'ok') s.seq = seq[room];
    }
  };
  for (let i = 0; i < 12; i++) {
    push('ws', 'c1', 'R1', i % 2 ? 'a' : 'b', `v.ws.${i}`, 'ok');
    push('http', null, i % 3 ? 'R1' : 'R2', i % 2 ? 'b' : 'a', `v.http.${i}`, i === 4 ? 'not_applied' : i === 6 ? 'unknown' : i === 3 ? 'unknown' : i === 8 ? 'refused' : 'ok');
  }
  const finals = {};
  for (const id of [1, 2, 3]) finals[id] = JSON.parse(JSON.stringify(stream));
  const subs = [];
  for (const id of [1, 2, 3]) {
    for (const room of rooms) {
      for (const key of keys) {
        const fin = stream[room][key];
        const half = Math.floor(fin.length / 2);
        const events = fin.map((e, i) => ({ ...e, src: i < half ? 'push' : i === half ? 'init' : 'push', conn: i < half ? 's#1' : 's#2' }));
        subs.push({ sub: `s${id}`, node: id, room, key, events: events.slice(0, fin.length - (id === 3 ? 1 : 0)), reconnects: 1 });
      }
    }
  }
  const acked = sends.find((s) => s.via === 'ws' && s.outcome === 'ok');
  const reads = [{ value: acked.value, room: acked.room, key: acked.key, seq: acked.seq, ackNode: 1, ackAt: acked.t1, node: 2, t0: acked.t1 + 1, t1: acked.t1 + 2, outcome: 'fresh', detail: null }];
  return { rooms, keys, sends, subs, reads, finals };
}

describe('chaos checker', () => {
  test('a consistent history passes every check', () => {
    const r = check(history(), { checkStale: true });
    assert.deepEqual(r.violations, []);
    assert.equal(r.stats.unknownApplied, 1);
  });

  test('self-test: one planted violation per check, each caught', () => {
    const st = selfTest(history());
    assert.deepEqual([...new Set(st.map((s) => s.check))].sort(), [...CHECKS].sort());
    for (const s of st) assert.ok(s.caught, `${s.check} not caught: ${s.planted}`);
  });

  test('a push whose outcome was unknown may be applied once, not twice', () => {
    const h = history();
    const u = h.sends.find((s) => s.outcome === 'unknown' && s.value.endsWith('3'));
    for (const id of Object.keys(h.finals)) {
      const l = h.finals[id][u.room][u.key];
      const top = Math.max(...Object.values(h.finals[id][u.room]).flat().map((e) => e.seq));
      l.push({ seq: top + 1, value: u.value });
    }
    const r = check(h);
    assert.ok(r.counts.no_duplicate > 0, JSON.stringify(r.violations));
  });

  test('stale reads fail only when asked to', () => {
    const h = history();
    h.reads[0].outcome = 'stale';
    assert.equal(check(h).ok, true);
    assert.equal(check(h, { checkStale: true }).counts.stale_read, 1);
  });

  test('a subscriber that received an entry twice (a resume that re-fetched it) is caught', () => {
    const h = history();
    const s = h.subs.find((x) => x.events.length >= 2);
    s.events.splice(1, 0, { ...s.events[0], src: 'init', conn: 's#9' });
    assert.ok(check(h).counts.subscriber > 0);
  });

  test('an acknowledged push at another seq than its ack said is caught', () => {
    const h = history();
    const s = h.sends.find((x) => x.via === 'ws' && x.outcome === 'ok');
    s.seq += 100;
    assert.ok(check(h).counts.ack_present > 0);
  });
});
