// Bad input over WebSocket and HTTP: an error, the connection and the server
// keep working. Oversized frames, slow consumers.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDriftd, shutdownTest, createRoom, RawClient, httpSend, httpRequest, waitFor, withTimeout,
  msgpack, cbor, safeJson,
} from './lib/harness.mjs';

const MAX_MESSAGE = 65536;
const DEPTH_BOMB = 100000;

const validPush = { type: 'push', key: 'k', value: 1, action: { type: 'append' } };

// Each case: a name, the format of the connection, and the frame.
// frame: {text} or {binary}.
const WS_CASES = [
  ['malformed JSON text', 'json', { text: '{"type":"push","key":"k",' }],
  ['JSON text that is not JSON at all', 'json', { text: 'hello there' }],
  ['empty text frame', 'json', { text: '' }],
  ['a JSON number instead of an object', 'json', { text: '42' }],
  ['a JSON array instead of an object', 'json', { text: '[{"type":"ping"}]' }],
  ['JSON null', 'json', { text: 'null' }],
  ['type is a number', 'json', { text: '{"type":5}' }],
  ['no type', 'json', { text: '{"key":"k","value":1,"action":{"type":"append"}}' }],
  ['unknown type', 'json', { text: '{"type":"subscribe","key":"k"}' }],
  ['push: key is a number', 'json', { text: '{"type":"push","key":5,"value":1,"action":{"type":"append"}}' }],
  ['push: key missing', 'json', { text: '{"type":"push","value":1,"action":{"type":"append"}}' }],
  ['push: value missing', 'json', { text: '{"type":"push","key":"k","action":{"type":"append"}}' }],
  ['push: action missing', 'json', { text: '{"type":"push","key":"k","value":1}' }],
  ['push: action is a string', 'json', { text: '{"type":"push","key":"k","value":1,"action":"append"}' }],
  ['push: action type unknown', 'json', { text: '{"type":"push","key":"k","value":1,"action":{"type":"explode"}}' }],
  ['push: action type a number', 'json', { text: '{"type":"push","key":"k","value":1,"action":{"type":1}}' }],
  ['push: compact without seq', 'json', { text: '{"type":"push","key":"k","value":1,"action":{"type":"compact"}}' }],
  ['push: compact with a string seq', 'json', { text: '{"type":"push","key":"k","value":1,"action":{"type":"compact","seq":"3"}}' }],
  ['push: compact with a negative seq', 'json', { text: '{"type":"push","key":"k","value":1,"action":{"type":"compact","seq":-1}}' }],
  ['get: key missing', 'json', { text: '{"type":"get","seq":0}' }],
  ['get: key is an object', 'json', { text: '{"type":"get","key":{},"seq":0}' }],
  ['get: seq is a string', 'json', { text: '{"type":"get","key":"k","seq":"abc"}' }],
  ['get: seq is negative', 'json', { text: '{"type":"get","key":"k","seq":-5}' }],
  ['get: seq is a float', 'json', { text: '{"type":"get","key":"k","seq":1.5}' }],
  ['ping: nonce is a string', 'json', { text: '{"type":"ping","nonce":"abc"}' }],
  ['ping: nonce is negative', 'json', { text: '{"type":"ping","nonce":-1}' }],
  ['ping: nonce is fractional', 'json', { text: '{"type":"ping","nonce":1.5}' }],
  [`JSON nesting bomb (${DEPTH_BOMB} arrays)`, 'json', {
    text: `{"type":"push","key":"k","value":${'['.repeat(DEPTH_BOMB)}${']'.repeat(DEPTH_BOMB)},"action":{"type":"append"}}`,
  }],
  [`JSON nesting bomb (${DEPTH_BOMB} objects)`, 'json', {
    text: `{"type":"push","key":"k","value":${'{"a":'.repeat(DEPTH_BOMB)}1${'}'.repeat(DEPTH_BOMB)},"action":{"type":"append"}}`,
  }],
  ['garbage binary frame on a plain connection (read as CBOR)', 'json', { binary: Buffer.from([0xff, 0xfe, 0x00, 0x13]) }],
  ['truncated CBOR', 'cbor', { binary: cbor.encode(validPush).subarray(0, cbor.encode(validPush).length - 3) }],
  ['CBOR: a single byte', 'cbor', { binary: Buffer.from([0xa4]) }],
  ['CBOR: trailing garbage after the message', 'cbor', { binary: Buffer.concat([cbor.encode(validPush), Buffer.from([0x01, 0x02])]) }],
  ['CBOR: an integer instead of a map', 'cbor', { binary: cbor.encode(12) }],
  ['CBOR: type is a number', 'cbor', { binary: cbor.encode({ type: 5 }) }],
  ['CBOR: nonce is a string', 'cbor', { binary: cbor.encode({ type: 'ping', nonce: 'abc' }) }],
  // {"type":"push","key":"k","value":<text "\xc3(">,"action":{"type":"append"}}
  ['CBOR: a text string that is not UTF-8', 'cbor', {
    binary: Buffer.concat([Buffer.from([0xa4, 0x64]), Buffer.from('type'), Buffer.from([0x64]), Buffer.from('push'),
      Buffer.from([0x63]), Buffer.from('key'), Buffer.from([0x61]), Buffer.from('k'),
      Buffer.from([0x65]), Buffer.from('value'), Buffer.from([0x62, 0xc3, 0x28]),
      Buffer.from([0x66]), Buffer.from('action'), Buffer.from([0xa1, 0x64]), Buffer.from('type'),
      Buffer.from([0x66]), Buffer.from('append')]),
  }],
  ['CBOR: indefinite-length map never closed', 'cbor', { binary: Buffer.from([0xbf, 0x64, 0x74, 0x79, 0x70, 0x65]) }],
  ['CBOR: byte string length beyond the frame', 'cbor', { binary: Buffer.from([0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]) }],
  ['CBOR: array count 2^64-1 in a tiny frame', 'cbor', { binary: Buffer.from([0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) }],
  [`CBOR nesting bomb (${DEPTH_BOMB} arrays)`, 'cbor', {
    binary: Buffer.concat([
      cbor.encode({ type: 'push', key: 'k', action: { type: 'append' } }).subarray(0, 1).map((b) => b + 1),
      cbor.encode({ type: 'push', key: 'k', action: { type: 'append' } }).subarray(1),
      cbor.encode('value'), Buffer.alloc(DEPTH_BOMB, 0x81), Buffer.from([0x80]),
    ]),
  }],
  ['truncated msgpack', 'msgpack', { binary: msgpack.encode(validPush).subarray(0, msgpack.encode(validPush).length - 3) }],
  ['msgpack: a single byte', 'msgpack', { binary: Buffer.from([0x84]) }],
  ['msgpack: trailing garbage', 'msgpack', { binary: Buffer.concat([msgpack.encode(validPush), Buffer.from([0xc1])]) }],
  ['msgpack: reserved byte 0xc1', 'msgpack', { binary: Buffer.from([0xc1]) }],
  ['msgpack: str32 length beyond the frame', 'msgpack', { binary: Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]) }],
  ['msgpack: array32 count 2^32-1 in a tiny frame', 'msgpack', { binary: Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]) }],
  ['msgpack: type is a number', 'msgpack', { binary: msgpack.encode({ type: 5 }) }],
  ['msgpack: nonce is a string', 'msgpack', { binary: msgpack.encode({ type: 'ping', nonce: 'abc' }) }],
  [`msgpack nesting bomb (${DEPTH_BOMB} arrays)`, 'msgpack', {
    binary: Buffer.concat([
      Buffer.from([0x84]),
      msgpack.encode('type'), msgpack.encode('push'), msgpack.encode('key'), msgpack.encode('k'),
      msgpack.encode('action'), msgpack.encode({ type: 'append' }), msgpack.encode('value'),
      Buffer.alloc(DEPTH_BOMB, 0x91), Buffer.from([0x90]),
    ]),
  }],
];

// HTTP bodies that are not a valid message.
const HTTP_CASES = [
  ['malformed JSON', '{"type":"push",'],
  ['empty body', ''],
  ['not an object', '17'],
  ['type is a number', '{"type":5}'],
  ['unknown type', '{"type":"subscribe","key":"k"}'],
  ['push: key a number', '{"type":"push","key":5,"value":1,"action":{"type":"append"}}'],
  ['push: value missing', '{"type":"push","key":"k","action":{"type":"append"}}'],
  ['push: action a string', '{"type":"push","key":"k","value":1,"action":"append"}'],
  ['push: action type unknown', '{"type":"push","key":"k","value":1,"action":{"type":"explode"}}'],
  ['get: seq a string', '{"type":"get","key":"k","seq":"x"}'],
  ['ping: nonce a string', '{"type":"ping","nonce":"abc"}'],
  [`nesting bomb (${DEPTH_BOMB} arrays)`, `{"type":"push","key":"k","value":${'['.repeat(DEPTH_BOMB)}${']'.repeat(DEPTH_BOMB)},"action":{"type":"append"}}`],
];

function sendFrame(c, frame) {
  if (frame.text !== undefined) c.sendText(frame.text); else c.sendBinary(frame.binary);
}

describe('bad input', () => {
  // Default --max-message (1 MiB): the nesting bombs (100-500 KB) fit in it.
  const ctx = useDriftd({ name: 'badinput' });
  let url;
  let room;
  before(async () => {
    ({ socket_url: url, room } = await createRoom(ctx.srv.base));
  });

  for (const [name, fmt, frame] of WS_CASES) {
    test(`ws ${fmt}: ${name} -> error, the connection and the server keep working`, async () => {
      const c = await RawClient.connect(url, { format: fmt, label: `${fmt} offender` });
      const peer = await RawClient.connect(url, { format: 'json', label: 'peer' });
      await c.get('ok');
      await peer.get('ok');
      sendFrame(c, frame);
      const err = await c.next((m) => m.type !== 'stream_size', 10000, 'the error answer');
      assert.equal(err.type, 'error', `expected an error, got ${safeJson(err)}`);
      assert.equal(typeof err.message, 'string');
      assert.ok(err.message.length > 0, 'empty error message');
      assert.deepEqual(await c.roundTrip(), [], 'more than one answer to one bad frame');
      // The same connection still works: push is broadcast to both.
      c.push('ok', { after: name }, 'append');
      const mine = await c.next('push');
      assert.deepEqual(mine.value, { after: name });
      assert.deepEqual(await peer.next('push'), { type: 'push', key: 'ok', value: { after: name }, seq: mine.seq });
      assert.deepEqual(await peer.roundTrip(), [], 'the peer saw something of the bad frame');
      // A new connection works.
      const fresh = await RawClient.connect(url, { label: 'fresh' });
      assert.deepEqual(await fresh.roundTrip(), []);
      assert.equal(c.closeInfo, null, 'offender connection closed');
    });
  }

  // RFC 6455 section 5.4: a message may start with an empty fragment
  // (the server once did NULL + 0 pointer arithmetic on it; UBSan caught it).
  test('a message split into fragments, the first one empty, is one message', async () => {
    const c = await RawClient.connect(url);
    for (const first of ['', '{"type":"ping",']) {
      c.ws.send(first, { binary: false, fin: false });
      c.ws.send('', { binary: false, fin: false });
      c.ws.send(first === '' ? '{"type":"ping","nonce":5}' : '"nonce":5}', { binary: false, fin: true });
      assert.deepEqual(await c.next(), { type: 'pong', nonce: 5 });
    }
    assert.equal(c.closeInfo, null);
  });

  test('a nested value within reason (depth 16) is accepted', async () => {
    const c = await RawClient.connect(url);
    await c.get('nest');
    let v = 'leaf';
    for (let i = 0; i < 16; i++) v = i % 2 ? [v] : { d: v };
    c.push('nest', v);
    assert.deepEqual((await c.next('push')).value, v);
  });

  for (const [name, body] of HTTP_CASES) {
    test(`http: ${name} -> 400 with an error message, the server keeps working`, async () => {
      const r = await httpSend(ctx.srv.base, room, body, { headers: { 'Content-Type': 'application/json' } });
      assert.equal(r.status, 400, `answered ${r.status}: ${r.text.slice(0, 300)}`);
      const j = r.json();
      assert.equal(j.type, 'error', r.text);
      assert.equal(typeof j.message, 'string');
      assert.ok(j.message.length > 0);
      const ok = await httpSend(ctx.srv.base, room, { type: 'ping', nonce: 1 });
      assert.deepEqual(ok.json(), { type: 'pong', nonce: 1 });
    });
  }

  test('http: many concurrent bad requests do not harm a live socket', async () => {
    const c = await RawClient.connect(url);
    await c.get('live');
    await Promise.all(Array.from({ length: 50 }, (_, i) => httpSend(ctx.srv.base, room, `{"bad":${i}`)
      .then((r) => assert.equal(r.status, 400))));
    c.push('live', 'ok');
    assert.equal((await c.next('push')).value, 'ok');
    const h = await httpRequest(`${ctx.srv.base}/healthz`);
    assert.equal(h.status, 200);
  });

  shutdownTest(ctx);
});

describe('message size limit', () => {
  const ctx = useDriftd({ name: 'maxmsg', args: ['--max-message', String(MAX_MESSAGE)] });
  let url;
  let room;
  before(async () => {
    ({ socket_url: url, room } = await createRoom(ctx.srv.base));
  });

  test(`a frame over --max-message ${MAX_MESSAGE} closes that connection with 1009; others keep working`, async () => {
    const other = await RawClient.connect(url, { label: 'bystander' });
    await other.get('big');
    const c = await RawClient.connect(url, { label: 'oversize sender' });
    // Just under the limit is fine.
    const fits = 'x'.repeat(MAX_MESSAGE - 200);
    c.push('big', fits);
    assert.equal((await other.next('push', 10000)).value.length, fits.length);
    // Over the limit: close 1009.
    c.push('big', 'y'.repeat(MAX_MESSAGE + 1000));
    const info = await withTimeout(c.closed, 10000, 'the oversize connection to be closed');
    assert.equal(info.code, 1009, `close code ${info.code} ${info.reason}`);
    assert.deepEqual(await other.roundTrip(), [], 'the oversized message was broadcast');
    other.push('big', 'still here');
    assert.equal((await other.next('push')).value, 'still here');
    const fresh = await RawClient.connect(url);
    assert.deepEqual(await fresh.roundTrip(), []);
  });

  test('an oversized binary frame also closes with 1009', async () => {
    const c = await RawClient.connect(url, { format: 'cbor', label: 'oversize cbor' });
    c.push('big', new Uint8Array(MAX_MESSAGE + 10));
    const info = await withTimeout(c.closed, 10000, 'close');
    assert.equal(info.code, 1009);
    const fresh = await RawClient.connect(url);
    assert.deepEqual(await fresh.roundTrip(), []);
  });

  test('http: a body over the limit -> 413 or 400, the server keeps working', async () => {
    const big = JSON.stringify({ type: 'push', key: 'k', value: 'z'.repeat(MAX_MESSAGE * 4), action: { type: 'append' } });
    let r;
    try {
      r = await httpSend(ctx.srv.base, room, big);
    } catch (e) {
      // The server may answer and close before reading the whole body; the
      // client then sees a reset. That is acceptable only if it answered.
      assert.fail(`no HTTP answer to an oversized body: ${e.message}`);
    }
    assert.ok(r.status === 413 || r.status === 400, `answered ${r.status}`);
    const g = await httpSend(ctx.srv.base, room, { type: 'get', key: 'k', seq: 0 });
    assert.equal(g.status, 200);
    assert.ok(!g.json().data.some((e) => typeof e.value === 'string' && e.value.length > MAX_MESSAGE), 'oversized push was applied');
    const ok = await httpSend(ctx.srv.base, room, { type: 'ping', nonce: 2 });
    assert.deepEqual(ok.json(), { type: 'pong', nonce: 2 });
  });

  shutdownTest(ctx);
});

describe('slow consumer', () => {
  // The fast subscriber has the same budget: bursts stay well below it, so
  // only the stalled reader can pass it, even on a loaded machine.
  const MAX_OUT = 4 * 1048576;
  // Frequent snapshots keep the raft log's memory small, so RSS reflects
  // the session queues.
  const snap = ['--snapshot-threshold', '64', '--snapshot-trailing', '16'];
  const ctx = useDriftd({ name: 'slow', args: ['--max-out-bytes', String(MAX_OUT), ...snap] });

  test('a subscriber that stops reading is disconnected; others get everything; RSS stays bounded', async (t) => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const VALUE = 'v'.repeat(60000);
    const BATCH = 25; // 1.5 MB bursts against a 4 MiB budget
    const BATCHES = 32; // 800 x 60 KB = 46 MB per phase

    const fast = await RawClient.connect(url, { label: 'fast subscriber' });
    await fast.get('big');
    const writer = await RawClient.connect(url, { label: 'writer' });

    // Warm-up: same traffic without a slow consumer, to learn the RSS cost of
    // the traffic itself (raft log, buffers).
    const rss0 = ctx.srv.rssKiB();
    let sent = 0;
    const pushBatches = async (n) => {
      let peak = 0;
      for (let b = 0; b < n; b++) {
        for (let i = 0; i < BATCH; i++) writer.push('big', `${sent++}:${VALUE}`, 'relay');
        const target = sent;
        await waitFor(() => fast.queue.length >= BATCH, 20000, `fast subscriber to get batch ${b}`, 10);
        const batch = fast.drain();
        assert.equal(batch.length, BATCH);
        assert.equal(batch.at(-1).value.split(':')[0], String(target - 1));
        peak = Math.max(peak, ctx.srv.rssKiB());
      }
      return peak;
    };
    const warmPeak = await pushBatches(BATCHES);

    const slow = await RawClient.connect(url, { label: 'slow subscriber' });
    await slow.get('big');
    slow.ws._socket.pause();
    const rss1 = ctx.srv.rssKiB();
    const slowPeak = await pushBatches(BATCHES);
    const slowMB = (slowPeak - rss1) / 1024;
    const warmMB = (warmPeak - rss0) / 1024;
    const pushedMB = (BATCHES * BATCH * VALUE.length) / (1024 * 1024);

    t.diagnostic(`RSS: start ${rss0} KiB, warm-up peak ${warmPeak} KiB (+${warmMB.toFixed(1)} MB), `
      + `before stall ${rss1} KiB, stalled peak ${slowPeak} KiB (+${slowMB.toFixed(1)} MB), pushed ${pushedMB.toFixed(1)} MB per phase`);
    // Resume: the server must have closed it with a close frame (1008, after
    // the frames it had already sent), before delivering everything.
    slow.ws._socket.resume();
    const info = await withTimeout(slow.closed, 20000, 'the slow subscriber to be disconnected');
    const slowGot = slow.log.filter((e) => e.msg.type === 'push').length;
    assert.equal(info.code, 1008, `close code ${info.code} ${info.reason}`);
    assert.match(info.reason, /slow consumer/);
    assert.ok(slowGot < BATCHES * BATCH, `slow subscriber got all ${slowGot} messages: it was never cut off`);
    // RSS: the slow session's queue is bounded (4 MiB) so the growth with a
    // stalled reader must stay far below the volume pushed past it.
    assert.ok(slowMB < warmMB + pushedMB / 3 + 16,
      `RSS grew ${slowMB.toFixed(1)} MB with a stalled reader (${warmMB.toFixed(1)} MB without, ${pushedMB.toFixed(1)} MB pushed)`);
    // The server is fine afterwards.
    writer.push('big', 'after', 'relay');
    assert.equal((await fast.next('push')).value, 'after');
    const again = await RawClient.connect(url, { label: 'reconnected' });
    assert.deepEqual(await again.roundTrip(), []);
  });

  shutdownTest(ctx);
});
