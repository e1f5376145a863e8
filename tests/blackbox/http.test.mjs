// POST /room/ID/send, raw and through the driftdb HttpConnection class.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDriftd, shutdownTest, createRoom, httpRequest, httpSend, RawClient, HttpConnection, withTimeout,
} from './lib/harness.mjs';

describe('http send', () => {
  const ctx = useDriftd({ name: 'http' });

  test('push answers null, then stream_size once more than one entry is retained; subscribers get the broadcast', async () => {
    const { room, socket_url: url } = await createRoom(ctx.srv.base);
    const sub = await RawClient.connect(url);
    await sub.get('h');
    const r1 = await httpSend(ctx.srv.base, room, { type: 'push', key: 'h', value: { a: 1 }, action: { type: 'append' } });
    assert.equal(r1.status, 200, r1.text);
    assert.match(String(r1.headers['content-type']), /application\/json/);
    assert.equal(r1.json(), null, `first push answered ${r1.text}`);
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'h', value: { a: 1 }, seq: 1 });

    const r2 = await httpSend(ctx.srv.base, room, { type: 'push', key: 'h', value: { a: 2 }, action: { type: 'append' } });
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(r2.json(), { type: 'stream_size', key: 'h', size: 2 });
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'h', value: { a: 2 }, seq: 2 });

    const r3 = await httpSend(ctx.srv.base, room, { type: 'push', key: 'h', value: 'r', action: { type: 'replace' } });
    assert.equal(r3.status, 200);
    assert.equal(r3.json(), null, 'replace leaves one entry: null');
    const r4 = await httpSend(ctx.srv.base, room, { type: 'push', key: 'h', value: 'x', action: { type: 'relay' } });
    assert.equal(r4.status, 200);
    assert.equal(r4.json(), null, 'relay on a one-entry stream: null');
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'h', value: 'r', seq: 3 });
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'h', value: 'x', seq: 4 });
    assert.deepEqual(await sub.roundTrip(), [], 'stream_size leaked to a websocket subscriber');
  });

  test('push is acknowledged after it is applied: an immediate get sees it', async () => {
    const { room } = await createRoom(ctx.srv.base);
    for (let i = 1; i <= 5; i++) {
      const r = await httpSend(ctx.srv.base, room, { type: 'push', key: 'seq', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200);
      const g = await httpSend(ctx.srv.base, room, { type: 'get', key: 'seq', seq: i - 1 });
      assert.deepEqual(g.json(), { type: 'init', key: 'seq', data: [{ value: i, seq: i }] });
    }
  });

  test('get answers the init message', async () => {
    const { room, socket_url: url } = await createRoom(ctx.srv.base);
    const w = await RawClient.connect(url);
    await w.get('g');
    for (let i = 1; i <= 3; i++) { w.push('g', `v${i}`); await w.next('push'); }
    const all = await httpSend(ctx.srv.base, room, { type: 'get', key: 'g', seq: 0 });
    assert.equal(all.status, 200, all.text);
    assert.deepEqual(all.json(), { type: 'init', key: 'g', data: [{ value: 'v1', seq: 1 }, { value: 'v2', seq: 2 }, { value: 'v3', seq: 3 }] });
    const tail = await httpSend(ctx.srv.base, room, { type: 'get', key: 'g', seq: 2 });
    assert.deepEqual(tail.json(), { type: 'init', key: 'g', data: [{ value: 'v3', seq: 3 }] });
    const noSeq = await httpSend(ctx.srv.base, room, { type: 'get', key: 'g' });
    assert.equal(noSeq.json().data.length, 3);
    const empty = await httpSend(ctx.srv.base, room, { type: 'get', key: 'nothing', seq: 0 });
    assert.deepEqual(empty.json(), { type: 'init', key: 'nothing', data: [] });
  });

  test('ping answers pong', async () => {
    const { room } = await createRoom(ctx.srv.base);
    const r = await httpSend(ctx.srv.base, room, { type: 'ping', nonce: 42 });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { type: 'pong', nonce: 42 });
    const r2 = await httpSend(ctx.srv.base, room, { type: 'ping' });
    const j = r2.json();
    assert.equal(j.type, 'pong');
    assert.ok(j.nonce === undefined || j.nonce === null);
  });

  test('unknown room answers 404', async () => {
    for (const id of ['AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'nope']) {
      const r = await httpSend(ctx.srv.base, id, { type: 'ping', nonce: 1 });
      assert.equal(r.status, 404, `POST /room/${id}/send answered ${r.status}: ${r.text}`);
      const p = await httpSend(ctx.srv.base, id, { type: 'push', key: 'k', value: 1, action: { type: 'append' } });
      assert.equal(p.status, 404);
    }
  });

  test('an invalid body answers 400 with an error message', async () => {
    const { room } = await createRoom(ctx.srv.base);
    const r = await httpSend(ctx.srv.base, room, '{"type":"push"');
    assert.equal(r.status, 400, r.text);
    const j = r.json();
    assert.equal(j.type, 'error');
    assert.equal(typeof j.message, 'string');
    assert.ok(j.message.length > 0);
  });

  test('a WebSocket client and an HTTP client see the same stream', async () => {
    const { room, socket_url: url } = await createRoom(ctx.srv.base);
    const ws = await RawClient.connect(url);
    await ws.get('mix');
    for (let i = 0; i < 10; i++) {
      if (i % 2) {
        ws.push('mix', i);
        await ws.next((m) => m.type === 'push' && m.value === i);
      } else {
        const r = await httpSend(ctx.srv.base, room, { type: 'push', key: 'mix', value: i, action: { type: 'append' } });
        assert.equal(r.status, 200);
        await ws.next((m) => m.type === 'push' && m.value === i);
      }
    }
    const g = await httpSend(ctx.srv.base, room, { type: 'get', key: 'mix', seq: 0 });
    assert.deepEqual(g.json().data, Array.from({ length: 10 }, (_, i) => ({ value: i, seq: i + 1 })));
  });

  test('the driftdb HttpConnection class works against it', async () => {
    const { http_url: httpUrl, socket_url: url } = await createRoom(ctx.srv.base);
    const sub = await RawClient.connect(url);
    await sub.get('hc');
    const conn = new HttpConnection(httpUrl);
    const a = await withTimeout(conn.send({ type: 'push', key: 'hc', value: { hello: 'world' }, action: { type: 'append' } }), 5000, 'HttpConnection push');
    assert.equal(a, null);
    const b = await withTimeout(conn.send({ type: 'push', key: 'hc', value: [1, 2], action: { type: 'append' } }), 5000, 'HttpConnection push 2');
    assert.deepEqual(b, { type: 'stream_size', key: 'hc', size: 2 });
    const init = await withTimeout(conn.send({ type: 'get', key: 'hc', seq: 0 }), 5000, 'HttpConnection get');
    assert.deepEqual(init, { type: 'init', key: 'hc', data: [{ value: { hello: 'world' }, seq: 1 }, { value: [1, 2], seq: 2 }] });
    const pong = await withTimeout(conn.send({ type: 'ping', nonce: 5 }), 5000, 'HttpConnection ping');
    assert.deepEqual(pong, { type: 'pong', nonce: 5 });
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'hc', value: { hello: 'world' }, seq: 1 });
    assert.deepEqual(await sub.next('push'), { type: 'push', key: 'hc', value: [1, 2], seq: 2 });
    // An unknown room makes it throw (non-2xx).
    const bad = new HttpConnection(`${ctx.srv.base}/room/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/send`);
    await assert.rejects(bad.send({ type: 'ping' }), /HTTP error 404/);
  });

  test('GET on the send path is not a send', async () => {
    const { room } = await createRoom(ctx.srv.base);
    const r = await httpRequest(`${ctx.srv.base}/room/${room}/send`);
    assert.ok(r.status === 404 || r.status === 405, `GET /room/ID/send answered ${r.status}`);
  });

  shutdownTest(ctx);
});
