// DriftDB compatibility: where driftd must answer exactly as the reference
// server (driftdb-server) does. Each point runs over every encoding it
// applies to (WebSocket JSON, CBOR `?cbor=true`, msgpack `?msgpack=true`, and
// POST /room/ID/send) on one node, and again through a follower of a 3-node
// cluster (the follower forwards the pushes to the leader and answers from
// its own applied log).
//
// 1. stream_size after every push, whatever the action: the sender hears
//    {"type":"stream_size","key":K,"size":N} whenever the key retains N > 1
//    entries after the push (relay included); HTTP answers that object, or
//    null.
// 2. null is a value: retained, replayed and broadcast (CBOR undefined reads
//    as null); a push without a value field is an error.
// 3. nonce is an optional u64: a string, negative or fractional nonce is an
//    error; a missing or null nonce gets a pong whose nonce is null.
//
// Waits poll with deadlines (RawClient.next, roundTrip); no fixed sleeps.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDriftd, shutdownTest, createRoom, RawClient, httpSend, cbor, msgpack, safeJson,
} from './lib/harness.mjs';
import { useCluster } from './lib/cluster.mjs';

const FORMATS = ['json', 'cbor', 'msgpack'];

// A frame in a connection's format, built by hand where the test helpers'
// encoders cannot express it (CBOR undefined).
function cborWithUndefinedValue(key) {
  const b = cbor.encode({ type: 'push', key, value: null, action: { type: 'append' } });
  const at = b.indexOf(0xf6);
  assert.ok(at >= 0 && at === b.lastIndexOf(0xf6), 'exactly one CBOR null in the frame');
  b[at] = 0xf7; // undefined
  return b;
}

// Appends n entries to key from client c (not subscribed) and checks the
// stream_size answers on the way, so the key retains exactly n entries.
async function appendN(c, key, n) {
  for (let i = 1; i <= n; i++) {
    c.push(key, i, 'append');
    const got = await c.roundTrip();
    const want = i > 1 ? [{ type: 'stream_size', key, size: i }] : [];
    assert.deepEqual(got, want, `append ${i} of ${n} on ${key}`);
  }
}

async function httpOk(base, room, msg) {
  const r = await httpSend(base, room, msg);
  assert.equal(r.status, 200, `${safeJson(msg)} answered ${r.status}: ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  return r;
}

const push = (key, value, action) => ({ type: 'push', key, value, action: typeof action === 'string' ? { type: action } : action });

// The tests, against one node: env() gives {base} (its HTTP URL) once the
// enclosing describe's servers run.
function compatTests(env) {
  let room;
  let url;
  before(async () => {
    ({ room, socket_url: url } = await createRoom(env().base));
  });

  describe('stream_size after every push', () => {
    for (const fmt of FORMATS) {
      test(`ws ${fmt}: relay on a key retaining 3 entries answers stream_size 3 to the sender only`, async () => {
        const key = `relay-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        const sub = await RawClient.connect(url, { format: fmt, label: `${fmt} subscriber` });
        await sub.get(key);
        await appendN(a, key, 3);
        const appended = await sub.roundTrip();
        assert.equal(appended.length, 3, safeJson(appended));
        a.push(key, 'r', 'relay');
        assert.deepEqual(await a.roundTrip(), [{ type: 'stream_size', key, size: 3 }]);
        assert.deepEqual(await sub.roundTrip(), [{ type: 'push', key, value: 'r', seq: appended[2].seq + 1 }],
          'the subscriber gets the broadcast and no stream_size');
      });

      test(`ws ${fmt}: a subscribed sender gets the relay broadcast, then stream_size 3`, async () => {
        const key = `relay-sub-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        await appendN(a, key, 3);
        const init = await a.get(key);
        a.push(key, { r: 1 }, 'relay');
        assert.deepEqual(await a.roundTrip(), [
          { type: 'push', key, value: { r: 1 }, seq: init.data[2].seq + 1 },
          { type: 'stream_size', key, size: 3 },
        ]);
      });

      test(`ws ${fmt}: compact leaving 2 entries answers stream_size 2`, async () => {
        const key = `compact-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        await appendN(a, key, 3);
        const { data } = await a.get(key, 0);
        a.push(key, 'folded', { type: 'compact', seq: data[1].seq });
        assert.deepEqual(await a.roundTrip(), [{ type: 'stream_size', key, size: 2 }]);
      });

      test(`ws ${fmt}: replace leaves one entry: no stream_size`, async () => {
        const key = `replace-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        await appendN(a, key, 3);
        a.push(key, 'only', 'replace');
        assert.deepEqual(await a.roundTrip(), []);
      });

      test(`ws ${fmt}: relay on a key retaining 1 entry: no stream_size`, async () => {
        const key = `relay-one-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        await appendN(a, key, 1);
        a.push(key, 'r', 'relay');
        assert.deepEqual(await a.roundTrip(), []);
      });
    }

    test('http: relay on a key retaining 3 entries answers exactly {"type":"stream_size","key":K,"size":3}', async () => {
      const key = 'relay-http';
      for (let i = 1; i <= 3; i++) await httpOk(env().base, room, push(key, i, 'append'));
      const r = await httpOk(env().base, room, push(key, 'r', 'relay'));
      assert.equal(r.text, `{"type":"stream_size","key":"${key}","size":3}`);
    });

    test('http: compact leaving 2 entries answers stream_size 2', async () => {
      const key = 'compact-http';
      for (let i = 1; i <= 3; i++) await httpOk(env().base, room, push(key, i, 'append'));
      const init = (await httpOk(env().base, room, { type: 'get', key, seq: 0 })).json();
      const r = await httpOk(env().base, room, push(key, 'folded', { type: 'compact', seq: init.data[1].seq }));
      assert.equal(r.text, `{"type":"stream_size","key":"${key}","size":2}`);
    });

    test('http: replace leaves one entry: the answer is null', async () => {
      const key = 'replace-http';
      for (let i = 1; i <= 3; i++) await httpOk(env().base, room, push(key, i, 'append'));
      const r = await httpOk(env().base, room, push(key, 'only', 'replace'));
      assert.equal(r.text, 'null');
    });
  });

  describe('null is a value', () => {
    for (const fmt of FORMATS) {
      test(`ws ${fmt}: a null value is broadcast, retained and replayed`, async () => {
        const key = `null-${fmt}`;
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        const sub = await RawClient.connect(url, { format: fmt, label: `${fmt} subscriber` });
        await sub.get(key);
        a.push(key, null, 'append');
        const b = await sub.next('push');
        assert.deepEqual(b, { type: 'push', key, value: null, seq: b.seq });
        const fresh = await RawClient.connect(url, { format: fmt, label: `${fmt} reader` });
        assert.deepEqual(await fresh.get(key), { type: 'init', key, data: [{ value: null, seq: b.seq }] });
      });

      test(`ws ${fmt}: a push without a value field is an error`, async () => {
        const a = await RawClient.connect(url, { format: fmt, label: `${fmt} sender` });
        a.send({ type: 'push', key: `novalue-${fmt}`, action: { type: 'append' } });
        const got = await a.roundTrip();
        assert.equal(got.length, 1, safeJson(got));
        assert.equal(got[0].type, 'error', safeJson(got));
        assert.match(got[0].message, /missing value/);
      });
    }

    test('ws cbor: undefined is pushed as null', async () => {
      const key = 'undefined-cbor';
      const a = await RawClient.connect(url, { format: 'cbor', label: 'cbor sender' });
      const sub = await RawClient.connect(url, { format: 'json', label: 'json subscriber' });
      await sub.get(key);
      a.sendBinary(cborWithUndefinedValue(key));
      const b = await sub.next('push');
      assert.deepEqual(b, { type: 'push', key, value: null, seq: b.seq });
    });

    test('ws: null pushed over msgpack reaches JSON and CBOR subscribers as null', async () => {
      const key = 'null-mixed';
      const a = await RawClient.connect(url, { format: 'msgpack', label: 'msgpack sender' });
      const j = await RawClient.connect(url, { format: 'json', label: 'json subscriber' });
      const c = await RawClient.connect(url, { format: 'cbor', label: 'cbor subscriber' });
      await j.get(key);
      await c.get(key);
      a.push(key, [null, { n: null }], 'append');
      const pj = await j.next('push');
      const pc = await c.next('push');
      assert.deepEqual([pj.value, pc.value], [[null, { n: null }], [null, { n: null }]]);
    });

    test('http: a null value is accepted, broadcast and replayed', async () => {
      const key = 'null-http';
      const sub = await RawClient.connect(url, { label: 'json subscriber' });
      await sub.get(key);
      const r = await httpOk(env().base, room, push(key, null, 'append'));
      assert.equal(r.text, 'null');
      const b = await sub.next('push');
      assert.deepEqual(b, { type: 'push', key, value: null, seq: b.seq });
      const init = await httpOk(env().base, room, { type: 'get', key, seq: 0 });
      assert.deepEqual(init.json(), { type: 'init', key, data: [{ value: null, seq: b.seq }] });
    });

    test('http: a push without a value field answers 400', async () => {
      const r = await httpSend(env().base, room, { type: 'push', key: 'novalue-http', action: { type: 'append' } });
      assert.equal(r.status, 400, r.text);
    });
  });

  describe('nonce is an optional unsigned 64-bit integer', () => {
    const BAD = [['string', 'abc'], ['negative', -1], ['fractional', 1.5]];
    for (const fmt of FORMATS) {
      for (const [what, nonce] of BAD) {
        test(`ws ${fmt}: a ${what} nonce answers an error, and the connection keeps working`, async () => {
          const c = await RawClient.connect(url, { format: fmt, label: `${fmt} pinger` });
          c.send({ type: 'ping', nonce });
          const err = await c.shift();
          assert.equal(err.type, 'error', `got ${safeJson(err)}`);
          assert.match(err.message, /nonce/);
          assert.deepEqual(await c.roundTrip(), []);
        });
      }

      test(`ws ${fmt}: a missing or null nonce gets a pong with nonce null; 2^32 and 0 are echoed`, async () => {
        const c = await RawClient.connect(url, { format: fmt, label: `${fmt} pinger` });
        c.send({ type: 'ping' });
        c.send({ type: 'ping', nonce: null });
        c.send({ type: 'ping', nonce: 4294967296 });
        c.send({ type: 'ping', nonce: 0 });
        const got = [await c.shift(), await c.shift(), await c.shift(), await c.shift()];
        assert.deepEqual(got, [
          { type: 'pong', nonce: null }, { type: 'pong', nonce: null },
          { type: 'pong', nonce: 4294967296 }, { type: 'pong', nonce: 0 },
        ]);
      });
    }

    test('ws msgpack: the largest u64 nonce is echoed', async () => {
      const c = await RawClient.connect(url, { format: 'msgpack', label: 'msgpack pinger' });
      c.sendBinary(msgpack.encode({ type: 'ping', nonce: 18446744073709551615n }));
      const p = await c.shift();
      assert.deepEqual(p, { type: 'pong', nonce: 18446744073709551615n });
    });

    for (const [what, nonce] of BAD) {
      test(`http: a ${what} nonce answers 400`, async () => {
        const r = await httpSend(env().base, room, { type: 'ping', nonce });
        assert.equal(r.status, 400, r.text);
        assert.match(r.json().message, /nonce/);
      });
    }

    test('http: a missing nonce answers exactly {"type":"pong","nonce":null}', async () => {
      const r = await httpOk(env().base, room, { type: 'ping' });
      assert.equal(r.text, '{"type":"pong","nonce":null}');
    });

    test('http: a null nonce answers exactly {"type":"pong","nonce":null}', async () => {
      const r = await httpOk(env().base, room, { type: 'ping', nonce: null });
      assert.equal(r.text, '{"type":"pong","nonce":null}');
    });
  });
}

describe('compat: one node', () => {
  const ctx = useDriftd({ name: 'compat' });
  compatTests(() => ({ base: ctx.srv.base }));
  shutdownTest(ctx);
});

describe('compat: through a follower of a 3-node cluster', () => {
  const ctx = useCluster({ name: 'compat-cluster' });
  let follower;
  before(async () => {
    const leader = await ctx.cluster.waitLeader();
    follower = ctx.cluster.ids.find((id) => id !== leader);
  });
  compatTests(() => ({ base: ctx.cluster.base(follower) }));
  test('the follower was a follower throughout', async () => {
    assert.notEqual(await ctx.cluster.waitLeader(), follower);
  });
});
