// "Not ready" is not "not found". A node that has not yet applied what its
// leader had committed (just restarted, or no leader known) answers every
// read with a retryable HTTP 503 carrying Retry-After and a JSON error that
// says "not ready" (GET /room/ID, a `get` sent to /room/ID/send, the
// WebSocket upgrade, /healthz), never 404 "room not found" nor an empty
// `init`; once it has caught up it serves the data.
//
// Scenario: a 3-node cluster with rooms and data; kill -9 a follower, freeze
// the other two (SIGSTOP), restart the follower (its leader unreachable) and
// poll it; thaw the others; it must become ready and serve everything.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useCluster } from './lib/cluster.mjs';
import {
  WebSocket, createRoom, httpRequest, httpSend, safeJson, waitFor,
} from './lib/harness.mjs';

const T = { timeout: 120000 };
const ROOMS = 3;
const PUSHES = 6;
const POLL_MS = 3000;

// One WebSocket attempt: connect, `get` key from seq 0, first answer.
// {kind: 'refused', status, headers, body} | {kind: 'msg', msg} |
// {kind: 'error', error} (no HTTP answer at all, e.g. not listening yet).
function wsAttempt(url, key, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const done = (r) => {
      clearTimeout(timer);
      try { ws.terminate(); } catch { /* gone */ }
      resolve(r);
    };
    const timer = setTimeout(() => done({ kind: 'error', error: new Error('no answer in time') }), timeoutMs);
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => done({ kind: 'refused', status: res.statusCode, headers: res.headers, body }));
      res.on('error', (error) => done({ kind: 'error', error }));
    });
    ws.once('open', () => ws.send(JSON.stringify({ type: 'get', key, seq: 0 })));
    ws.on('message', (d) => {
      let msg;
      try { msg = JSON.parse(d.toString('utf8')); } catch (e) { msg = { type: '__undecodable__', error: e.message }; }
      done({ kind: 'msg', msg });
    });
    ws.once('error', (error) => done({ kind: 'error', error }));
  });
}

function refusedConnect(e) {
  return /ECONNREFUSED|ECONNRESET|socket hang up/.test(e?.message ?? String(e));
}

// A 503 "not ready" answer: Retry-After and a JSON error saying so.
function assertNotReady(what, status, headers, body) {
  assert.equal(status, 503, `${what}: ${status} ${body}`);
  assert.ok(headers['retry-after'] !== undefined && Number(headers['retry-after']) > 0,
    `${what}: 503 without Retry-After (${safeJson(headers)})`);
  let j;
  try { j = JSON.parse(body); } catch { assert.fail(`${what}: 503 body is not JSON: ${body}`); }
  assert.equal(j.type, 'error', `${what}: ${body}`);
  assert.match(j.message, /not ready/, `${what}: ${body}`);
}

describe('not ready is never "not found"', () => {
  const ctx = useCluster({ size: 3, name: 'notready' });

  test('a restarted follower with its leader unreachable answers 503 not ready, then serves the data', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const f = c.ids.find((id) => id !== leader);
    const others = c.ids.filter((id) => id !== f);

    const rooms = [];
    for (let r = 0; r < ROOMS; r++) {
      const { room } = await createRoom(c.base(leader));
      const values = [];
      for (let i = 0; i < PUSHES; i++) {
        const value = { r, i };
        const res = await httpSend(c.base(leader), room, { type: 'push', key: 'k', value, action: { type: 'append' } });
        assert.equal(res.status, 200, `push: ${res.status} ${res.text}`);
        values.push(value);
      }
      rooms.push({ room, values });
    }
    const getBody = { type: 'get', key: 'k', seq: 0 };
    const isFull = (room, data) => JSON.stringify((data ?? []).map((e) => e.value)) === JSON.stringify(room.values);
    // The follower holds everything in its log before it is killed.
    for (const room of rooms) {
      await waitFor(async () => {
        const r = await httpSend(c.base(f), room.room, getBody, { timeoutMs: 2000 });
        return r.status === 200 && isFull(room, r.json().data);
      }, 10000, `node ${f} to have room ${room.room}`);
    }

    await c.kill9(f);
    for (const id of others) c.sigstop(id);
    await c.node(f).launch({ waitHealthy: false });

    const counts = { notReady: 0, served: 0, noAnswer: 0 };
    // A push sent while the node cannot know the room (once it listens):
    // the log decides, never a 404 from the node's incomplete state.
    let latePush = null;
    const deadline = Date.now() + POLL_MS;
    while (Date.now() < deadline || counts.notReady === 0) {
      if (Date.now() > deadline + 20000) assert.fail(`no answer from node ${f}: ${safeJson(counts)}`);
      for (const room of rooms) {
        try {
          const h = await httpRequest(`${c.base(f)}/healthz`, { timeoutMs: 2000 });
          assert.equal(h.status, 503, `/healthz while the leader is unreachable: ${h.status} ${h.text}`);
          assert.match(h.text, /not ready/);
          const st = await c.status(f);
          assert.equal(st.ready, false, `/cluster/status: ${safeJson(st)}`);
          assert.equal(typeof st.not_ready, 'string', `/cluster/status: ${safeJson(st)}`);
          latePush ??= httpSend(c.base(f), rooms[0].room,
            { type: 'push', key: 'late', value: 'late', action: { type: 'append' } }, { timeoutMs: 30000 })
            .catch((e) => ({ error: e }));

          const info = await httpRequest(`${c.base(f)}/room/${room.room}`, { timeoutMs: 2000 });
          if (info.status === 200) counts.served++;
          else { assertNotReady('GET /room/ID', info.status, info.headers, info.text); counts.notReady++; }

          const g = await httpSend(c.base(f), room.room, getBody, { timeoutMs: 2000 });
          if (g.status === 200) {
            assert.ok(isFull(room, g.json().data), `HTTP get served partial data: ${g.text}`);
            counts.served++;
          } else {
            assertNotReady('HTTP get', g.status, g.headers, g.text);
            counts.notReady++;
          }
        } catch (e) {
          if (!refusedConnect(e)) throw e;
          counts.noAnswer++;
          continue;
        }
        const w = await wsAttempt(`${c.wsBase(f)}/room/${room.room}/connect`, 'k');
        if (w.kind === 'refused') {
          assertNotReady('WebSocket upgrade', w.status, w.headers, w.body);
          counts.notReady++;
        } else if (w.kind === 'msg') {
          assert.equal(w.msg.type, 'init', `WebSocket get answered ${safeJson(w.msg)}`);
          assert.ok(isFull(room, w.msg.data), `WebSocket init with partial data: ${safeJson(w.msg)}`);
          counts.served++;
        } else {
          assert.ok(refusedConnect(w.error), `WebSocket: ${w.error?.message}`);
          counts.noAnswer++;
        }
      }
    }
    assert.ok(counts.notReady > 0, `never saw "not ready": ${safeJson(counts)}`);

    for (const id of others) c.sigcont(id);
    await c.node(f).waitHealthy(30000);
    assert.equal((await c.status(f)).ready, true);
    for (const room of rooms) {
      const info = await httpRequest(`${c.base(f)}/room/${room.room}`);
      assert.equal(info.status, 200, `GET /room/ID once ready: ${info.status} ${info.text}`);
      const g = await httpSend(c.base(f), room.room, getBody);
      assert.equal(g.status, 200, g.text);
      assert.ok(isFull(room, g.json().data), `HTTP get once ready: ${g.text}`);
      const w = await wsAttempt(`${c.wsBase(f)}/room/${room.room}/connect`, 'k');
      assert.equal(w.kind, 'msg', `WebSocket once ready: ${safeJson(w)}`);
      assert.ok(isFull(room, w.msg.data), `WebSocket init once ready: ${safeJson(w.msg)}`);
    }
    const late = await latePush;
    assert.ok(!late.error, `the late push got no answer: ${late.error?.message}`);
    assert.notEqual(late.status, 404, `the late push was answered 404: ${late.text}`);
    if (late.status === 200) {
      const g = await httpSend(c.base(f), rooms[0].room, { type: 'get', key: 'late', seq: 0 });
      assert.deepEqual(g.json().data.map((e) => e.value), ['late'], g.text);
    } else {
      assert.equal(late.status, 503, late.text);
      assert.match(late.text, /not applied|unknown/, late.text);
    }
  });
});
