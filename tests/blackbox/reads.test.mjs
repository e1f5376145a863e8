// Linearizable reads: a get answered by any node includes every push that
// was acknowledged anywhere in the cluster before the get was sent. 1,000
// rounds of "push acknowledged by node A, then get on node B" (B != A,
// alternating HTTP and WebSocket gets) must never miss the push; a room
// created on one node is found at once on another (never "room not found").
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createRoom, httpRequest, httpSend, RawClient } from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere } from './lib/cluster.mjs';

const T = { timeout: 240000 };
const ROUNDS = Number(process.env.READ_ROUNDS ?? 1000);

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

describe('linearizable reads', () => {
  const ctx = useCluster({ size: 3, name: 'reads' });

  test(`${ROUNDS} rounds of push acked on A then get on B never miss the push`, T, async (t) => {
    const c = ctx.cluster;
    await c.waitLeader();
    const { room } = await createRoom(c.base(1));
    await waitRoomEverywhere(c, room);
    const ws = new Map();
    for (const id of c.ids) ws.set(id, await RawClient.connect(c.socketUrl(id, room), { label: `reader on ${id}` }));
    let lastSeq = 0;
    const stale = [];
    const lat = { http: [], ws: [] };
    for (let i = 1; i <= ROUNDS; i++) {
      const a = c.ids[i % 3];
      const b = c.ids[(i + 1 + (i % 2)) % 3];
      const r = await httpSend(c.base(a), room, { type: 'push', key: 'k', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200, `round ${i}: push on ${a}: ${r.status} ${r.text}`);
      const t0 = performance.now();
      let data;
      if (i % 2 === 0) {
        const g = await httpSend(c.base(b), room, { type: 'get', key: 'k', seq: lastSeq });
        assert.equal(g.status, 200, `round ${i}: get on ${b}: ${g.text}`);
        data = g.json().data;
        lat.http.push(performance.now() - t0);
      } else {
        data = (await ws.get(b).get('k', lastSeq, 10000)).data;
        lat.ws.push(performance.now() - t0);
      }
      const hit = data.find((e) => e.value === i);
      if (!hit) stale.push({ round: i, push: a, get: b, after: lastSeq, got: data.map((e) => e.value) });
      else lastSeq = hit.seq;
    }
    for (const w of ws.values()) await w.close();
    t.diagnostic(`get latency ms: http p50 ${pct(lat.http, 50).toFixed(2)} p99 ${pct(lat.http, 99).toFixed(2)}; ` +
      `ws p50 ${pct(lat.ws, 50).toFixed(2)} p99 ${pct(lat.ws, 99).toFixed(2)}`);
    assert.deepEqual(stale.slice(0, 5), [], `${stale.length} stale reads of ${ROUNDS}`);
  });

  test('a room created on one node is joined at once over WebSocket on another', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (let i = 0; i < 50; i++) {
      const { room } = await createRoom(c.base(c.ids[i % 3]));
      const ws = await RawClient.connect(c.socketUrl(c.ids[(i + 1) % 3], room), { label: `joiner ${i}` });
      const init = await ws.get('k', 0, 10000);
      assert.deepEqual(init.data, [], `room ${i}: ${JSON.stringify(init)}`);
      assert.equal(ws.closeInfo, null);
      await ws.close();
    }
  });

  test('a room created on one node is found at once on the others', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (let i = 0; i < 100; i++) {
      const from = c.ids[i % 3];
      const to = c.ids[(i + 1) % 3];
      const { room } = await createRoom(c.base(from));
      const info = await httpRequest(`${c.base(to)}/room/${room}`);
      assert.equal(info.status, 200, `room ${i} from ${from} on ${to}: ${info.status} ${info.text}`);
      const r = await httpSend(c.base(c.ids[(i + 2) % 3]), room, { type: 'push', key: 'k', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200, `push ${i}: ${r.text}`);
    }
  });
});
