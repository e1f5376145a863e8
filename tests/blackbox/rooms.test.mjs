// Room API: POST /new, GET /room/ID, unknown rooms, public URL, CORS,
// /healthz, clean shutdown with open connections.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  useDriftd, shutdownTest, createRoom, httpRequest, RawClient, dbConnect, withTimeout,
} from './lib/harness.mjs';

const ROOM_ID_RE = /^[A-Za-z0-9_-]{22,64}$/;
// Well-formed but never created.
const UNKNOWN_ROOM = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

// Opens a WebSocket and resolves with how it failed: {status} for a refused
// upgrade, {error} or {closeCode}. Rejects if the upgrade succeeds.
function wsRefusal(url, timeoutMs = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('unexpected-response', (req, res) => {
      res.resume();
      resolve({ status: res.statusCode });
      ws.terminate();
    });
    ws.once('open', () => { ws.terminate(); reject(new Error(`WebSocket upgrade to ${url} succeeded`)); });
    ws.once('error', (e) => resolve({ error: e.message }));
  }), timeoutMs, `WebSocket refusal of ${url}`);
}

function headerList(v) {
  return String(v ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
}

describe('rooms', () => {
  const ctx = useDriftd({ name: 'rooms' });

  test('GET /healthz answers 200', async () => {
    const r = await httpRequest(`${ctx.srv.base}/healthz`);
    assert.equal(r.status, 200);
  });

  test('POST /new returns room, socket_url and http_url built from the Host header', async () => {
    const host = `127.0.0.1:${ctx.srv.httpPort}`;
    const r = await httpRequest(`${ctx.srv.base}/new`, { method: 'POST' });
    assert.equal(r.status, 200, r.text);
    assert.match(String(r.headers['content-type']), /application\/json/);
    const j = r.json();
    assert.deepEqual(Object.keys(j).sort(), ['http_url', 'room', 'socket_url']);
    assert.match(j.room, ROOM_ID_RE, `room id ${j.room} must be URL-safe and >= 22 chars`);
    assert.equal(j.socket_url, `ws://${host}/room/${j.room}/connect`);
    assert.equal(j.http_url, `http://${host}/room/${j.room}/send`);
  });

  test('POST /new uses whatever Host the request carries', async () => {
    const r = await httpRequest(`${ctx.srv.base}/new`, { method: 'POST', headers: { Host: 'relay.test:4321' } });
    assert.equal(r.status, 200, r.text);
    const j = r.json();
    assert.equal(j.socket_url, `ws://relay.test:4321/room/${j.room}/connect`);
    assert.equal(j.http_url, `http://relay.test:4321/room/${j.room}/send`);
  });

  test('room ids are distinct and random-looking', async () => {
    const ids = new Set();
    for (let i = 0; i < 20; i++) ids.add((await createRoom(ctx.srv.base)).room);
    assert.equal(ids.size, 20);
    // 20 ids sharing a long common prefix would mean a counter, not a CSPRNG.
    const list = [...ids];
    const common = (a, b) => { let n = 0; while (n < a.length && a[n] === b[n]) n++; return n; };
    const maxPrefix = Math.max(...list.slice(1).map((id) => common(list[0], id)));
    assert.ok(maxPrefix < 8, `ids share a ${maxPrefix}-char prefix: ${list.slice(0, 3).join(', ')}`);
  });

  test('GET /room/ID answers the same object as POST /new', async () => {
    const created = await createRoom(ctx.srv.base);
    const r = await httpRequest(`${ctx.srv.base}/room/${created.room}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json(), created);
  });

  test('GET /room/ID of an unknown room answers 404', async () => {
    for (const id of [UNKNOWN_ROOM, 'unknown', 'x']) {
      const r = await httpRequest(`${ctx.srv.base}/room/${id}`);
      assert.equal(r.status, 404, `GET /room/${id} answered ${r.status}: ${r.text}`);
    }
  });

  test('WebSocket connect to an unknown room is closed with 4004 "room not found"', async () => {
    // The upgrade is accepted (the room may have been created elsewhere a
    // moment ago); after a read barrier the session is closed.
    const c = await RawClient.connect(`${ctx.srv.wsBase}/room/${UNKNOWN_ROOM}/connect`);
    const info = await c.closed;
    assert.deepEqual(info, { code: 4004, reason: 'room not found' });
    assert.deepEqual(c.log, [], 'nothing but the close');
  });

  test('WebSocket connect to a known room opens and answers a ping', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const c = await RawClient.connect(url);
    c.send({ type: 'ping', nonce: 1 });
    assert.deepEqual(await c.next('pong'), { type: 'pong', nonce: 1 });
  });

  test('CORS preflight on /new and /room/ID/send', async () => {
    const { room } = await createRoom(ctx.srv.base);
    for (const p of ['/new', `/room/${room}/send`, `/room/${room}`]) {
      const r = await httpRequest(`${ctx.srv.base}${p}`, {
        method: 'OPTIONS',
        headers: {
          Origin: 'https://app.example.com',
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'content-type',
        },
      });
      assert.ok(r.status === 200 || r.status === 204, `OPTIONS ${p} answered ${r.status}`);
      assert.equal(r.headers['access-control-allow-origin'], '*', `OPTIONS ${p}: ${JSON.stringify(r.headers)}`);
      const methods = headerList(r.headers['access-control-allow-methods']);
      for (const m of ['get', 'post']) assert.ok(methods.includes(m), `OPTIONS ${p}: allow-methods ${methods} lacks ${m}`);
      const hdrs = headerList(r.headers['access-control-allow-headers']);
      for (const h of ['content-type', 'authorization', 'accept']) {
        assert.ok(hdrs.includes(h), `OPTIONS ${p}: allow-headers ${hdrs} lacks ${h}`);
      }
    }
  });

  test('CORS header on normal answers', async () => {
    const origin = { Origin: 'https://app.example.com' };
    const created = await httpRequest(`${ctx.srv.base}/new`, { method: 'POST', headers: origin });
    assert.equal(created.status, 200);
    assert.equal(created.headers['access-control-allow-origin'], '*', 'POST /new');
    const { room } = created.json();
    const info = await httpRequest(`${ctx.srv.base}/room/${room}`, { headers: origin });
    assert.equal(info.status, 200);
    assert.equal(info.headers['access-control-allow-origin'], '*', 'GET /room/ID');
    const send = await httpRequest(`${ctx.srv.base}/room/${room}/send`, {
      method: 'POST', headers: origin, body: { type: 'ping', nonce: 3 },
    });
    assert.equal(send.status, 200, send.text);
    assert.equal(send.headers['access-control-allow-origin'], '*', 'POST /room/ID/send');
  });

  test('SIGTERM with open connections: clients see close 1001 and driftd exits 0', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const raw = await RawClient.connect(url);
    await raw.get('k');
    const db = await dbConnect(url);
    assert.equal(db.status.connected, true);
    await ctx.srv.stopClean();
    const info = await withTimeout(raw.closed, 5000, 'client close after SIGTERM');
    assert.equal(info.code, 1001, `close code after SIGTERM: ${info.code}`);
  });
});

describe('rooms with --public-url', () => {
  const ctx = useDriftd({ name: 'rooms-public', args: ['--public-url', 'https://relay.example.com'] });

  test('urls use wss:// and https:// on the public host', async () => {
    const j = await createRoom(ctx.srv.base);
    assert.match(j.room, ROOM_ID_RE);
    assert.equal(j.socket_url, `wss://relay.example.com/room/${j.room}/connect`);
    assert.equal(j.http_url, `https://relay.example.com/room/${j.room}/send`);
    const r = await httpRequest(`${ctx.srv.base}/room/${j.room}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), j);
  });

  test('the public url wins over the Host header', async () => {
    const r = await httpRequest(`${ctx.srv.base}/new`, { method: 'POST', headers: { Host: 'other.test' } });
    const j = r.json();
    assert.equal(j.socket_url, `wss://relay.example.com/room/${j.room}/connect`);
  });

  shutdownTest(ctx);
});

describe('idle rooms expire (--room-ttl)', () => {
  const ctx = useDriftd({ name: 'ttl', args: ['--room-ttl', '1'] });

  test('a room with no push for the TTL is deleted and its sessions closed; a busy room stays', async () => {
    const idle = (await createRoom(ctx.srv.base)).room;
    const busy = await createRoom(ctx.srv.base);
    const sub = await RawClient.connect(`${ctx.srv.wsBase}/room/${idle}/connect`, { label: 'idle subscriber' });
    await sub.get('k');
    const w = await RawClient.connect(busy.socket_url, { label: 'busy writer' });
    await w.get('k');
    // Keep the busy room active (one relay push every 200 ms) until the idle
    // room is gone: activity, not connections, keeps a room.
    let stop = false;
    let pushes = 0;
    const writer = (async () => {
      while (!stop) {
        w.push('k', pushes++, 'relay');
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    try {
      const info = await withTimeout(sub.closed, 20000, 'the idle room to expire');
      assert.equal(info.code, 4004, `close code ${info.code} ${info.reason}`);
      const r = await httpRequest(`${ctx.srv.base}/room/${idle}`);
      assert.equal(r.status, 404, 'the expired room is gone');
      // The busy room outlived the TTL several times over meanwhile.
      assert.equal((await httpRequest(`${ctx.srv.base}/room/${busy.room}`)).status, 200);
    } finally {
      stop = true;
      await writer;
    }
    assert.ok(pushes > 5, `the busy room got ${pushes} pushes while the idle one expired`);
  });

  shutdownTest(ctx);
});
