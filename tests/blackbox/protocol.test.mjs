// The WebSocket protocol, raw (no client library): actions, seqs, get/init,
// stream_size, ping/pong, debug, subscriptions, formats and values.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useDriftd, shutdownTest, createRoom, RawClient, msgpack, cbor, safeJson } from './lib/harness.mjs';

const FORMATS = ['json', 'cbor', 'msgpack'];

async function newRoom(ctx) {
  const r = await createRoom(ctx.srv.base);
  return r.socket_url;
}

const connect = (url, format = 'json', opts = {}) => RawClient.connect(url, { format, label: opts.label ?? format, ...opts });

// Pushes and waits for the sender's own broadcast (sender must be subscribed).
async function pushAcked(c, key, value, action = 'append') {
  c.push(key, value, action);
  return c.next((m) => m.type === 'push' && m.key === key, 5000, `own broadcast on ${JSON.stringify(key)}`);
}

// JSON text with BigInt written as plain digits.
function jsonText(v) {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(jsonText).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${jsonText(x)}`).join(',')}}`;
  return JSON.stringify(v);
}

// What a JSON receiver gets from JSON.parse: BigInt become (imprecise) numbers.
function asParsedJson(v) {
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof Uint8Array) return [...v];
  if (Array.isArray(v)) return v.map(asParsedJson);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asParsedJson(x)]));
  return v;
}

// Normalise decoded values so byte strings compare as plain Uint8Array.
function normBytes(v) {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(normBytes);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normBytes(x)]));
  return v;
}

const RICH_VALUE = {
  i64max: 9223372036854775807n,
  i64min: -9223372036854775808n,
  above53: 9007199254740993n,
  maxSafe: 9007199254740991,
  minSafe: -9007199254740991,
  neg: -1,
  zero: 0,
  small: 42,
  int32min: -2147483648,
  u32max: 4294967295,
  f: 1.5,
  pi: Math.PI,
  tiny: 5e-324,
  huge: 1e300,
  negf: -0.25,
  third: 1 / 3,
  nested: { a: { b: { c: { d: { e: { f: { g: { h: [1, [2, [3, { deep: 'yes' }]]] } } } } } } } },
  arr: [1, 'two', 3.5, null, true, false, [], {}],
  uni: 'héllo wörld ✓ 🎉 中文 עברית',
  esc: 'quote " backslash \\ newline \n tab \t ctrl \u0001 slash / end',
  empty: '',
  t: true,
  no: false,
  nothing: null,
};
const BIG_FIELDS = { i64max: '9223372036854775807', i64min: '-9223372036854775808', above53: '9007199254740993' };

describe('protocol', () => {
  const ctx = useDriftd({ name: 'protocol' });

  test('first seq is 1 and the counter is shared by all keys', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('x');
    await a.get('y');
    const s1 = await pushAcked(a, 'x', 'one');
    const s2 = await pushAcked(a, 'y', 'two', 'replace');
    const s3 = await pushAcked(a, 'x', 'three', 'relay');
    assert.deepEqual(s1, { type: 'push', key: 'x', value: 'one', seq: 1 });
    assert.deepEqual(s2, { type: 'push', key: 'y', value: 'two', seq: 2 });
    assert.deepEqual(s3, { type: 'push', key: 'x', value: 'three', seq: 3 });
  });

  test('rooms are isolated: own seq counters, own streams, own subscribers', async () => {
    const u1 = await newRoom(ctx);
    const u2 = await newRoom(ctx);
    const a = await connect(u1, 'json', { label: 'room 1' });
    const b = await connect(u2, 'json', { label: 'room 2' });
    await a.get('same');
    await b.get('same');
    assert.deepEqual(await pushAcked(a, 'same', 'one'), { type: 'push', key: 'same', value: 'one', seq: 1 });
    assert.deepEqual(await pushAcked(a, 'same', 'two'), { type: 'push', key: 'same', value: 'two', seq: 2 });
    assert.deepEqual(await pushAcked(b, 'same', 'other'), { type: 'push', key: 'same', value: 'other', seq: 1 });
    assert.deepEqual((await b.roundTrip()).filter((m) => m.type === 'push'), [], 'room 2 saw a push of room 1');
    assert.deepEqual((await b.get('same')).data, [{ value: 'other', seq: 1 }]);
    assert.deepEqual((await a.get('same')).data, [{ value: 'one', seq: 1 }, { value: 'two', seq: 2 }]);
  });

  test('relay: broadcast with a seq to every subscriber, never retained', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'a' });
    const b = await connect(url, 'json', { label: 'b' });
    assert.deepEqual(await a.get('r'), { type: 'init', key: 'r', data: [] });
    await b.get('r');
    a.push('r', { hello: 1 }, 'relay');
    const pa = await a.next('push');
    const pb = await b.next('push');
    assert.deepEqual(pa, { type: 'push', key: 'r', value: { hello: 1 }, seq: 1 });
    assert.deepEqual(pb, pa);
    assert.deepEqual(await a.roundTrip(), [], 'relay must not produce stream_size or anything else');
    const c = await connect(url, 'json', { label: 'c' });
    assert.deepEqual(await c.get('r'), { type: 'init', key: 'r', data: [] }, 'relay retained something');
  });

  test('replace leaves exactly one entry', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('k');
    await pushAcked(a, 'k', 'v1');
    await pushAcked(a, 'k', 'v2');
    const r = await pushAcked(a, 'k', 'v3', 'replace');
    assert.equal(r.seq, 3);
    const c = await connect(url);
    assert.deepEqual(await c.get('k'), { type: 'init', key: 'k', data: [{ value: 'v3', seq: 3 }] });
    await pushAcked(a, 'k', 'v4', 'replace');
    assert.deepEqual(await c.get('k'), { type: 'init', key: 'k', data: [{ value: 'v4', seq: 4 }] });
  });

  test('append retains every entry in seq order', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('log');
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push(await pushAcked(a, 'log', { i }));
    assert.deepEqual(acks.map((m) => m.seq), [1, 2, 3, 4, 5]);
    const c = await connect(url);
    assert.deepEqual(await c.get('log'), {
      type: 'init', key: 'log', data: [0, 1, 2, 3, 4].map((i) => ({ value: { i }, seq: i + 1 })),
    });
  });

  test('compact: removes seq <= S, puts the value first with seq S, no broadcast, no new seq', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'sender' });
    const b = await connect(url, 'json', { label: 'other subscriber' });
    await a.get('c');
    await b.get('c');
    for (let i = 1; i <= 5; i++) await pushAcked(a, 'c', `v${i}`);
    for (let i = 1; i <= 5; i++) await b.next('push');
    a.push('c', { folded: 3 }, { type: 'compact', seq: 3 });
    const extraA = (await a.roundTrip()).filter((m) => m.type !== 'stream_size');
    assert.deepEqual(extraA, [], 'compact must not be broadcast to its sender');
    assert.deepEqual(await b.roundTrip(), [], 'compact must not be broadcast');
    const c = await connect(url);
    assert.deepEqual(await c.get('c'), {
      type: 'init', key: 'c', data: [{ value: { folded: 3 }, seq: 3 }, { value: 'v4', seq: 4 }, { value: 'v5', seq: 5 }],
    });
    const next = await pushAcked(a, 'c', 'v6');
    assert.equal(next.seq, 6, 'compact must not take a seq');
    assert.deepEqual(await c.get('c', 4), { type: 'init', key: 'c', data: [{ value: 'v5', seq: 5 }, { value: 'v6', seq: 6 }] });
  });

  test('compact at the last seq leaves one entry; compact below the first entry keeps all', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('c');
    for (let i = 1; i <= 4; i++) await pushAcked(a, 'c', i);
    a.push('c', 'all', { type: 'compact', seq: 4 });
    await a.roundTrip();
    assert.deepEqual(await a.get('c'), { type: 'init', key: 'c', data: [{ value: 'all', seq: 4 }] });
    // A compact on another key, whose stream starts later: entries > S stay.
    await a.get('d');
    await pushAcked(a, 'd', 'd5');
    await pushAcked(a, 'd', 'd6');
    a.push('d', 'base', { type: 'compact', seq: 2 });
    await a.roundTrip();
    assert.deepEqual(await a.get('d'), {
      type: 'init', key: 'd', data: [{ value: 'base', seq: 2 }, { value: 'd5', seq: 5 }, { value: 'd6', seq: 6 }],
    });
  });

  test('compact with S greater than the last seq is refused with an error', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('c');
    await pushAcked(a, 'c', 'x');
    await pushAcked(a, 'c', 'y');
    a.push('c', 'future', { type: 'compact', seq: 3 });
    const err = await a.next('error');
    assert.equal(typeof err.message, 'string');
    assert.ok(err.message.length > 0);
    assert.deepEqual(await a.get('c'), { type: 'init', key: 'c', data: [{ value: 'x', seq: 1 }, { value: 'y', seq: 2 }] });
    assert.equal((await pushAcked(a, 'c', 'z')).seq, 3);
  });

  test('stream_size goes to the sender only, and only when more than one entry is retained', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'sender' });
    const b = await connect(url, 'json', { label: 'subscriber' });
    await a.get('s');
    await b.get('s');
    a.push('s', 1, 'replace');
    assert.deepEqual(await a.roundTrip(), [{ type: 'push', key: 's', value: 1, seq: 1 }], 'one retained entry: no stream_size');
    a.push('s', 2, 'append');
    const afterAppend = await a.roundTrip();
    assert.deepEqual(afterAppend.filter((m) => m.type === 'push'), [{ type: 'push', key: 's', value: 2, seq: 2 }]);
    assert.deepEqual(afterAppend.filter((m) => m.type === 'stream_size'), [{ type: 'stream_size', key: 's', size: 2 }]);
    assert.equal(afterAppend.length, 2);
    a.push('s', 3, 'append');
    const third = await a.roundTrip();
    assert.deepEqual(third.filter((m) => m.type === 'stream_size'), [{ type: 'stream_size', key: 's', size: 3 }]);
    // The other subscriber only saw the broadcasts.
    assert.deepEqual(await b.roundTrip(), [
      { type: 'push', key: 's', value: 1, seq: 1 },
      { type: 'push', key: 's', value: 2, seq: 2 },
      { type: 'push', key: 's', value: 3, seq: 3 },
    ]);
    // Relay on a fresh key retains nothing: no stream_size.
    await a.get('rel');
    a.push('rel', 'x', 'relay');
    assert.deepEqual(await a.roundTrip(), [{ type: 'push', key: 'rel', value: 'x', seq: 4 }]);
  });

  test('stream_size reaches a sender that is not subscribed to the key (and no broadcast does)', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    a.push('u', 1, 'append');
    assert.deepEqual(await a.roundTrip(), [], 'no subscription, one entry: nothing');
    a.push('u', 2, 'append');
    assert.deepEqual(await a.roundTrip(), [{ type: 'stream_size', key: 'u', size: 2 }]);
  });

  test('get with seq N replays the entries with seq > N', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('g');
    for (let i = 1; i <= 5; i++) await pushAcked(a, 'g', i);
    const c = await connect(url);
    assert.deepEqual((await c.get('g', 3)).data, [{ value: 4, seq: 4 }, { value: 5, seq: 5 }]);
    assert.deepEqual((await c.get('g', 5)).data, []);
    assert.deepEqual((await c.get('g', 100)).data, []);
    assert.deepEqual((await c.get('g', 0)).data.map((e) => e.seq), [1, 2, 3, 4, 5]);
  });

  test('get without seq means seq 0', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    await a.get('g');
    for (let i = 1; i <= 3; i++) await pushAcked(a, 'g', `e${i}`);
    const c = await connect(url);
    const init = await c.get('g', undefined);
    assert.deepEqual(init, { type: 'init', key: 'g', data: [{ value: 'e1', seq: 1 }, { value: 'e2', seq: 2 }, { value: 'e3', seq: 3 }] });
  });

  test('get with seq null subscribes without an init', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'writer' });
    await a.get('n');
    await pushAcked(a, 'n', 'old');
    const c = await connect(url, 'json', { label: 'null-seq reader' });
    await c.get('n', null);
    assert.deepEqual(await c.roundTrip(), [], 'seq null must not answer init');
    await pushAcked(a, 'n', 'new');
    assert.deepEqual(await c.next('push'), { type: 'push', key: 'n', value: 'new', seq: 2 });
  });

  test('a second get replays again but each broadcast arrives once', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'writer' });
    const c = await connect(url, 'json', { label: 'double get' });
    await a.get('d');
    await pushAcked(a, 'd', 1);
    assert.deepEqual((await c.get('d')).data, [{ value: 1, seq: 1 }]);
    assert.deepEqual((await c.get('d')).data, [{ value: 1, seq: 1 }], 'the second get replays again');
    await c.get('d', null);
    await pushAcked(a, 'd', 2);
    assert.deepEqual(await c.next('push'), { type: 'push', key: 'd', value: 2, seq: 2 });
    assert.deepEqual(await c.roundTrip(), [], 'a broadcast arrived more than once');
  });

  test('get on a key never pushed answers an empty init and subscribes', async () => {
    const url = await newRoom(ctx);
    const c = await connect(url);
    assert.deepEqual(await c.get('fresh'), { type: 'init', key: 'fresh', data: [] });
    const a = await connect(url);
    a.push('fresh', true, 'replace');
    assert.deepEqual(await c.next('push'), { type: 'push', key: 'fresh', value: true, seq: 1 });
  });

  test('ping with a nonce gets a pong with the same nonce; without, a pong without one', async () => {
    const url = await newRoom(ctx);
    for (const fmt of FORMATS) {
      const c = await connect(url, fmt);
      c.send({ type: 'ping', nonce: 7 });
      assert.deepEqual(await c.shift(), { type: 'pong', nonce: 7 }, `${fmt}: pong 7`);
      c.send({ type: 'ping', nonce: 0 });
      assert.deepEqual(await c.shift(), { type: 'pong', nonce: 0 }, `${fmt}: pong 0`);
      c.send({ type: 'ping', nonce: 4294967296 });
      assert.deepEqual(await c.shift(), { type: 'pong', nonce: 4294967296 }, `${fmt}: pong 2^32`);
      c.send({ type: 'ping' });
      const p = await c.shift();
      assert.equal(p.type, 'pong', `${fmt}: ${safeJson(p)}`);
      assert.ok(p.nonce === undefined || p.nonce === null, `${fmt}: pong without nonce carries ${safeJson(p.nonce)}`);
      assert.deepEqual(Object.keys(p).filter((k) => k !== 'nonce'), ['type']);
    }
  });

  test('debug=true: an init for every key on connect, then every broadcast whatever the key', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'writer' });
    await a.get('k1');
    await a.get('k2');
    await pushAcked(a, 'k1', 'a');
    await pushAcked(a, 'k1', 'b');
    await pushAcked(a, 'k2', 'c', 'replace');
    await a.roundTrip(); // drop the writer's stream_size
    for (const fmt of ['json', 'cbor']) {
      const d = await connect(url, fmt, { query: { debug: 'true' }, label: `debug ${fmt}` });
      const i1 = await d.next((m) => m.type === 'init' && m.key === 'k1', 5000, 'init k1');
      const i2 = await d.next((m) => m.type === 'init' && m.key === 'k2', 5000, 'init k2');
      assert.deepEqual(i1.data, [{ value: 'a', seq: 1 }, { value: 'b', seq: 2 }]);
      assert.deepEqual(i2.data, [{ value: 'c', seq: 3 }]);
      assert.deepEqual(await d.roundTrip(), [], `${fmt}: more than one init per key`);
      await d.close();
    }
    const d = await connect(url, 'json', { query: { debug: 'true' }, label: 'debug' });
    await d.next((m) => m.type === 'init' && m.key === 'k2');
    await d.next((m) => m.type === 'init' && m.key === 'k1');
    const other = await connect(url, 'json', { label: 'other writer' });
    other.push('k3', 'new key', 'append');
    other.push('k1', 'relayed', 'relay');
    assert.deepEqual(await d.next('push'), { type: 'push', key: 'k3', value: 'new key', seq: 4 });
    assert.deepEqual(await d.next('push'), { type: 'push', key: 'k1', value: 'relayed', seq: 5 });
    // The writer, subscribed to k1 and k2 only, did not get k3.
    assert.deepEqual(await a.roundTrip(), [{ type: 'push', key: 'k1', value: 'relayed', seq: 5 }]);
  });

  test('debug=false is off', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url);
    a.push('k', 1, 'append');
    await a.roundTrip();
    const d = await connect(url, 'json', { query: { debug: 'false' } });
    assert.deepEqual(await d.roundTrip(), [], 'debug=false sent inits');
    a.push('k', 2, 'append');
    await a.roundTrip();
    assert.deepEqual(await d.roundTrip(), [], 'debug=false received a broadcast of an unsubscribed key');
  });

  test('a connection receives only the keys it subscribed to', async () => {
    const url = await newRoom(ctx);
    const a = await connect(url, 'json', { label: 'subscriber of x' });
    const w = await connect(url, 'json', { label: 'writer' });
    await a.get('x');
    w.push('y', 'to y', 'append');
    w.push('x', 'to x', 'append');
    w.push('z', 'to z', 'relay');
    w.push('X', 'to X', 'append');
    await w.roundTrip();
    assert.deepEqual(await a.next('push'), { type: 'push', key: 'x', value: 'to x', seq: 2 });
    assert.deepEqual(await a.roundTrip(), []);
  });

  test('values survive across JSON, CBOR and msgpack: 64-bit ints, floats, nesting, unicode', async () => {
    const url = await newRoom(ctx);
    const rx = {};
    for (const fmt of FORMATS) {
      rx[fmt] = await connect(url, fmt, { label: `${fmt} receiver` });
      await rx[fmt].get('v');
    }
    for (const sender of FORMATS) {
      const s = await connect(url, sender, { label: `${sender} sender` });
      const value = { ...RICH_VALUE, from: sender };
      if (sender === 'json') s.sendText(jsonText({ type: 'push', key: 'v', value, action: { type: 'append' } }));
      else s.push('v', value, 'append');
      const seqs = new Set();
      for (const fmt of FORMATS) {
        const e = await rx[fmt].nextEntry('push', 5000);
        seqs.add(e.msg.seq);
        assert.equal(e.msg.key, 'v');
        if (fmt === 'json') {
          assert.equal(e.binary, false, 'JSON connections get text frames');
          assert.deepEqual(e.msg.value, asParsedJson(value), `${sender} -> json`);
          for (const [k, digits] of Object.entries(BIG_FIELDS)) {
            assert.match(e.raw, new RegExp(`"${k}":\\s*${digits}[,}\\s]`), `${sender} -> json: ${k} must be exactly ${digits} in ${e.raw.slice(0, 400)}`);
          }
        } else {
          assert.equal(e.binary, true, `${fmt} connections get binary frames`);
          assert.deepEqual(normBytes(e.msg.value), value, `${sender} -> ${fmt}: ${safeJson(e.msg.value)}`);
        }
      }
      assert.equal(seqs.size, 1, 'every receiver sees the same seq');
    }
    // And the retained copies come back equal from init.
    const c = await connect(url, 'msgpack');
    const init = await c.get('v');
    assert.deepEqual(init.data.map((e) => e.value), FORMATS.map((f) => ({ ...RICH_VALUE, from: f })));
  });

  test('unsigned 64-bit max survives (JSON text in, every format out)', async () => {
    const url = await newRoom(ctx);
    const rx = {};
    for (const fmt of FORMATS) {
      rx[fmt] = await connect(url, fmt);
      await rx[fmt].get('u');
    }
    const w = await connect(url);
    w.sendText('{"type":"push","key":"u","value":{"u64max":18446744073709551615},"action":{"type":"append"}}');
    const j = await rx.json.nextEntry('push');
    assert.match(j.raw, /"u64max":\s*18446744073709551615[,}\s]/);
    assert.deepEqual((await rx.cbor.next('push')).value, { u64max: 18446744073709551615n });
    assert.deepEqual((await rx.msgpack.next('push')).value, { u64max: 18446744073709551615n });
  });

  test('a string holding NUL characters survives', async () => {
    const url = await newRoom(ctx);
    const rx = await connect(url, 'msgpack');
    await rx.get('nul');
    const w = await connect(url);
    w.push('nul', 'a\u0000b', 'append');
    assert.equal((await rx.next('push')).value, 'a\u0000b');
  });

  test('the empty key and a non-ASCII key work', async () => {
    const url = await newRoom(ctx);
    for (const key of ['', 'ключ🔑', 'with space/and?query#hash', 'a'.repeat(200)]) {
      for (const fmt of FORMATS) {
        const c = await connect(url, fmt);
        const init = await c.get(key);
        assert.equal(init.key, key, `${fmt}: init key`);
        c.push(key, { fmt }, 'append');
        const p = await c.next('push');
        assert.equal(p.key, key, `${fmt}: push key ${JSON.stringify(key)}`);
        assert.deepEqual(p.value, { fmt });
        await c.close();
      }
      const c = await connect(url);
      const init = await c.get(key);
      assert.deepEqual(init.data.map((e) => e.value), FORMATS.map((fmt) => ({ fmt })), `key ${JSON.stringify(key)}`);
    }
    // The empty key is a key of its own.
    const c = await connect(url);
    assert.deepEqual((await c.get(' ')).data, []);
  });

  test('msgpack: byte strings round trip with JSON and CBOR peers', async () => {
    const url = await newRoom(ctx);
    const rx = {};
    for (const fmt of FORMATS) {
      rx[fmt] = await connect(url, fmt, { label: `${fmt} receiver` });
      await rx[fmt].get('b');
    }
    const bytes = new Uint8Array([0, 1, 2, 254, 255, 128, 7]);
    const mp = await connect(url, 'msgpack', { label: 'msgpack sender' });
    mp.push('b', { bin: bytes, n: 1 }, 'append');
    assert.deepEqual(normBytes((await rx.msgpack.next('push')).value), { bin: bytes, n: 1 });
    assert.deepEqual(normBytes((await rx.cbor.next('push')).value), { bin: bytes, n: 1 });
    assert.deepEqual((await rx.json.next('push')).value, { bin: [...bytes], n: 1 });

    // CBOR plain byte string -> msgpack bin.
    const cb = await connect(url, 'cbor', { label: 'cbor sender' });
    cb.push('b', { bin: bytes, n: 2 }, 'append');
    assert.deepEqual(normBytes((await rx.msgpack.next('push')).value), { bin: bytes, n: 2 });
    assert.deepEqual(normBytes((await rx.cbor.next('push')).value), { bin: bytes, n: 2 });
    assert.deepEqual((await rx.json.next('push')).value, { bin: [...bytes], n: 2 });

    // CBOR as the real client encodes it (a Uint8Array is tag 64 + bytes).
    cb.send({ type: 'push', key: 'b', value: { bin: bytes, n: 3 }, action: { type: 'append' } }, 'cbor-client');
    assert.deepEqual(normBytes((await rx.msgpack.next('push')).value), { bin: bytes, n: 3 });
    assert.deepEqual((await rx.json.next('push')).value, { bin: [...bytes], n: 3 });

    // JSON map -> msgpack map.
    const js = await connect(url, 'json', { label: 'json sender' });
    js.push('b', { list: [1, 2, 3], s: 'x', n: 4 }, 'append');
    assert.deepEqual((await rx.msgpack.next('push')).value, { list: [1, 2, 3], s: 'x', n: 4 });

    // The retained bytes come back from init as bytes (msgpack) and numbers (JSON).
    const late = await connect(url, 'msgpack');
    const init = await late.get('b');
    assert.deepEqual(normBytes(init.data[0].value), { bin: bytes, n: 1 });
    const lateJ = await connect(url);
    assert.deepEqual((await lateJ.get('b')).data[1].value, { bin: [...bytes], n: 2 });
  });

  test('msgpack connections get init, stream_size, pong and error in msgpack binary frames', async () => {
    const url = await newRoom(ctx);
    const c = await connect(url, 'msgpack');
    c.send({ type: 'get', key: 'm', seq: 0 });
    const init = await c.nextEntry('init');
    assert.equal(init.binary, true);
    assert.deepEqual(init.msg, { type: 'init', key: 'm', data: [] });
    c.push('m', 1, 'append');
    c.push('m', 2, 'append');
    const ss = await c.nextEntry('stream_size');
    assert.equal(ss.binary, true);
    assert.deepEqual(ss.msg, { type: 'stream_size', key: 'm', size: 2 });
    c.send({ type: 'ping', nonce: 99 });
    const pong = await c.nextEntry('pong');
    assert.equal(pong.binary, true);
    assert.deepEqual(pong.msg, { type: 'pong', nonce: 99 });
    c.send({ type: 'bogus' });
    const err = await c.nextEntry('error');
    assert.equal(err.binary, true);
    assert.equal(typeof err.msg.message, 'string');
  });

  test('a text frame is JSON on any connection; a binary frame is the connection format', async () => {
    const url = await newRoom(ctx);
    // msgpack connection sending JSON text: answered in msgpack.
    const mp = await connect(url, 'msgpack');
    mp.sendText(JSON.stringify({ type: 'ping', nonce: 1 }));
    const p1 = await mp.nextEntry('pong');
    assert.equal(p1.binary, true);
    assert.deepEqual(p1.msg, { type: 'pong', nonce: 1 });
    // cbor connection sending JSON text.
    const cb = await connect(url, 'cbor');
    cb.sendText(JSON.stringify({ type: 'ping', nonce: 2 }));
    const p2 = await cb.nextEntry('pong');
    assert.equal(p2.binary, true);
    assert.deepEqual(p2.msg, { type: 'pong', nonce: 2 });
    // plain connection sending a CBOR binary frame: answered in JSON text.
    const js = await connect(url, 'json');
    js.sendBinary(cbor.encode({ type: 'ping', nonce: 3 }));
    const p3 = await js.nextEntry('pong');
    assert.equal(p3.binary, false);
    assert.deepEqual(p3.msg, { type: 'pong', nonce: 3 });
    // plain connection sending a CBOR push: broadcast to all.
    await js.get('mixed');
    js.sendBinary(cbor.encode({ type: 'push', key: 'mixed', value: { x: 1 }, action: { type: 'append' } }));
    const push = await js.nextEntry('push');
    assert.equal(push.binary, false);
    assert.deepEqual(push.msg, { type: 'push', key: 'mixed', value: { x: 1 }, seq: 1 });
    // cbor connection sending a msgpack-looking binary frame is read as CBOR:
    // a msgpack map is not a valid CBOR message -> error, not a crash.
    cb.sendBinary(msgpack.encode({ type: 'ping', nonce: 4 }));
    const err = await cb.next((m) => m.type === 'error' || m.type === 'pong', 5000);
    assert.equal(err.type, 'error', `msgpack bytes on a CBOR connection: ${safeJson(err)}`);
  });

  shutdownTest(ctx);
});
