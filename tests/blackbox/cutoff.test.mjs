// Error texts name the real cause. A push that fails says whether it was
// certainly not applied ("push not applied: ...") or its outcome is unknown
// ("push outcome unknown: ..."), and why: no leader known, contact with the
// leader lost, link to the leader lost, or this node's leadership lost.
// The exact messages are part of the protocol notes (docs/protocol.md).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useCluster } from './lib/cluster.mjs';
import {
  RawClient, createRoom, httpRequest, httpSend, safeJson, waitFor,
} from './lib/harness.mjs';

const T = { timeout: 120000 };
const push = (value) => ({ type: 'push', key: 'k', value, action: { type: 'append' } });

// The first error a WebSocket session receives.
async function nextError(client, timeoutMs = 20000) {
  const m = await client.next((x) => x.type === 'error', timeoutMs, 'an error');
  return m.message;
}

describe('error texts name the cause', () => {
  const ctx = useCluster({ size: 3, name: 'cutoff' });

  test('a follower cut off from both peers: "contact with the leader lost", then "no leader known"', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const f = c.ids.find((id) => id !== leader);
    const others = c.ids.filter((id) => id !== f);
    const { room } = await createRoom(c.base(leader));
    // The forward link from f to the leader is up.
    await waitFor(async () => (await httpSend(c.base(f), room, push('warm'))).status === 200, 10000, 'a push through the follower');
    const ws = await RawClient.connect(c.socketUrl(f, room), { label: 'writer on the follower' });

    for (const id of others) c.sigstop(id);
    try {
      // Forwarded to a leader that may have it: outcome unknown, and the
      // follower never led, so not "leadership lost".
      ws.push('k', 'sent-to-frozen-leader');
      const http1 = httpSend(c.base(f), room, push('http-sent-to-frozen-leader'), { timeoutMs: 30000 });
      assert.equal(await nextError(ws), 'push outcome unknown: contact with the leader lost, no leader known');
      const r1 = await http1;
      assert.equal(r1.status, 503, r1.text);
      assert.equal(r1.json().message, 'push outcome unknown: contact with the leader lost, no leader known');

      // Once the follower knows no leader, a new push never leaves it.
      await waitFor(async () => (await c.status(f)).leader === null, 10000, `node ${f} to know no leader`);
      ws.push('k', 'never-sent');
      assert.equal(await nextError(ws), 'push not applied: no leader known');
      const r2 = await httpSend(c.base(f), room, push('http-never-sent'), { timeoutMs: 30000 });
      assert.equal(r2.status, 503, r2.text);
      assert.equal(r2.json().message, 'push not applied: no leader known');
    } finally {
      for (const id of others) c.sigcont(id);
    }
    await ws.close();
    await c.waitLeader();
  });

  test('a leader cut off from both followers: "leadership lost before commit"', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const others = c.ids.filter((id) => id !== leader);
    const { room } = await createRoom(c.base(leader));
    const ws = await RawClient.connect(c.socketUrl(leader, room), { label: 'writer on the leader' });
    await ws.get('k', null);
    await ws.roundTrip();

    for (const id of others) c.sigstop(id);
    try {
      ws.push('k', 'in-the-leaders-log');
      const r = httpSend(c.base(leader), room, push('http-in-the-leaders-log'), { timeoutMs: 30000 });
      const msg = await nextError(ws);
      assert.equal(msg, 'push outcome unknown: leadership lost before commit', `got ${safeJson(msg)}`);
      const res = await r;
      assert.equal(res.status, 503, res.text);
      assert.equal(res.json().message, 'push outcome unknown: leadership lost before commit');
    } finally {
      for (const id of others) c.sigcont(id);
    }
    await ws.close();
    await c.waitLeader();
  });

  test('POST /new during a write outage longer than the queue timeout answers 503 with the cause', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const others = c.ids.filter((id) => id !== leader);
    for (const id of others) c.sigstop(id);
    try {
      const t0 = Date.now();
      const r = await httpRequest(`${c.base(leader)}/new`, { method: 'POST', timeoutMs: 30000 });
      assert.equal(r.status, 503, `${r.status} ${r.text}`);
      assert.match(r.json().message, /^room (not created|creation outcome unknown): /);
      assert.ok(Date.now() - t0 >= 4000, 'answered after the queue timeout, not cut before');
    } finally {
      for (const id of others) c.sigcont(id);
    }
    await c.waitLeader();
  });
});
