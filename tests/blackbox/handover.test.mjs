// Hand-over at stop: a leader that gets SIGTERM transfers leadership to
// another voter before it stops (src/consensus/handover.c), so a planned
// restart of the leader costs the cluster no election timeout; when every
// node stops at once there is nobody to hand over to, and the leader's own
// bound ends the wait: every node still exits 0 (also when the followers
// are frozen and cannot take over).
//
// Acknowledged = POST /room/ID/send answered 200; every acknowledged push
// must be retained afterwards. Conditions are polled; nothing asserts on
// timing (the figures are in docs/benchmarks.md, "Failover").
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRoom, httpRequest, sleep } from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere, waitSameReplay } from './lib/cluster.mjs';

const T = { timeout: 120000 };

// Pushes value after value (one at a time, over HTTP) to node `id` until
// stopped; returns { stop(), acked } with the acknowledged values.
function writer(c, id, room, key, tag) {
  const acked = [];
  let run = true;
  const done = (async () => {
    for (let n = 0; run; n++) {
      const value = `${tag}-${n}`;
      const r = await httpRequest(`${c.base(id)}/room/${room}/send`, {
        method: 'POST', body: { type: 'push', key, value, action: { type: 'append' } }, timeoutMs: 15000,
      }).catch(() => null);
      if (r && r.status === 200) acked.push(value);
      await sleep(5);
    }
  })();
  return { acked, stop: async () => { run = false; await done; } };
}

describe('hand-over at stop', () => {
  const ctx = useCluster({ size: 3, name: 'handover' });

  test('SIGTERM of the leader: another node leads before the old one has exited; no acknowledged push lost', T, async () => {
    const c = ctx.cluster;
    const old = await c.waitLeader();
    const others = c.ids.filter((id) => id !== old);
    const { room } = await createRoom(c.base(others[0]));
    await waitRoomEverywhere(c, room);
    const w = writer(c, others[0], room, 'k', 'a');
    try {
      // Some pushes acknowledged before the stop.
      while (w.acked.length < 20) await sleep(10);
      const stopped = c.stop(old); // SIGTERM; exit code 0 asserted
      // Poll the two others until the old process is gone: one of them
      // must have answered as leader while it was still running.
      let sawNewLeader = null;
      while (c.running(old)) {
        const st = await c.statuses(others, 1000);
        const lead = others.find((id) => !(st[id] instanceof Error) && st[id].role === 'leader');
        if (lead && c.running(old)) sawNewLeader = lead;
        if (sawNewLeader) break;
      }
      await stopped;
      assert.ok(sawNewLeader, `a node other than ${old} reported itself leader before node ${old} exited`);
      const now = await c.waitLeader({ ids: others });
      assert.notEqual(now, old);
      // More pushes under the new leader, then the old node comes back.
      const n = w.acked.length;
      while (w.acked.length < n + 20) await sleep(10);
      await c.restart(old);
    } finally {
      await w.stop();
    }
    const data = await waitSameReplay(c, room, 'k', { ids: c.ids, until: (d) => d.length >= w.acked.length });
    const retained = new Set(data.map((x) => x.value));
    const lost = w.acked.filter((v) => !retained.has(v));
    assert.deepEqual(lost, [], `acknowledged pushes missing (${w.acked.length} acknowledged, ${data.length} retained)`);
    assert.equal(new Set(data.map((x) => x.value)).size, data.length, 'no push retained twice');
  });

  test('SIGTERM of the leader while both followers are frozen: nobody to hand over to, it still exits 0', T, async () => {
    const c = ctx.cluster;
    const old = await c.waitLeader();
    const others = c.ids.filter((id) => id !== old);
    for (const id of others) c.sigstop(id);
    try {
      await c.stop(old); // SIGTERM; exit code 0 asserted (the wait for a new leader is bounded)
    } finally {
      for (const id of others) c.sigcont(id);
    }
    assert.match(c.node(old).tail(20000), /event=handover(_timeout|_failed)/,
      'the old leader gave the hand-over up (timeout or libraft gave up)');
    await c.waitLeader({ ids: others });
    await c.restart(old);
    await c.waitLeader({ ids: c.ids });
  });

  test('SIGTERM of all three at once under writes: every node exits 0 (the hand-over wait is bounded)', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const follower = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(follower));
    await waitRoomEverywhere(c, room);
    const w1 = writer(c, leader, room, 'a', 'l');
    const w2 = writer(c, follower, room, 'b', 'f');
    while (w1.acked.length < 10 || w2.acked.length < 10) await sleep(10);
    try {
      await c.stopAll(); // SIGTERM to all at once; asserts exit code 0 for each
    } finally {
      await w1.stop();
      await w2.stop();
    }
    await c.startAll();
    await c.waitLeader({ ids: c.ids });
    for (const [key, w] of [['a', w1], ['b', w2]]) {
      const data = await waitSameReplay(c, room, key, { ids: c.ids });
      const retained = new Set(data.map((x) => x.value));
      assert.deepEqual(w.acked.filter((v) => !retained.has(v)), [], `key ${key}: acknowledged pushes missing`);
    }
  });
});
