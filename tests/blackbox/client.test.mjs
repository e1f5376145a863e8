// The real npm driftdb client (1.0.12) against driftd.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useDriftd, shutdownTest, createRoom, RawClient, dbConnect, recordDb, waitFor, withTimeout,
  StateListener, Reducer,
} from './lib/harness.mjs';

describe('driftdb client', () => {
  const ctx = useDriftd({ name: 'client' });

  // testLatency() times a ping/pong round trip: its value lies between 0 and
  // the time the call took as seen from outside.
  async function timedLatency(db, what) {
    const t0 = performance.now();
    const p = db.testLatency();
    assert.ok(p, `${what}: testLatency() returned null on an open connection`);
    const ms = await withTimeout(p, 5000, what);
    const elapsed = performance.now() - t0;
    assert.equal(typeof ms, 'number', what);
    assert.ok(ms >= 0 && ms <= elapsed + 1, `${what}: latency ${ms} ms, the call took ${elapsed} ms`);
    return ms;
  }

  test('testLatency() resolves to the round trip, within the time the call took', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const db = await dbConnect(url);
    await timedLatency(db, 'testLatency()');
    // A second test works too (the pong was consumed).
    await timedLatency(db, 'second testLatency()');
  });

  test('testLatency() over CBOR', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const db = await dbConnect(url, true);
    await timedLatency(db, 'testLatency() over CBOR');
  });

  test('StateListener: state set on one connection is seen by another and by a late joiner', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const db1 = await dbConnect(url);
    const db2 = await dbConnect(url);
    const seen1 = [];
    const seen2 = [];
    const msgs2 = recordDb(db2);
    const s2 = new StateListener({ db: db2, key: 'shared', callback: (v) => seen2.push(v) });
    s2.subscribe();
    await waitFor(() => msgs2.some((m) => m.type === 'init' && m.key === 'shared'), 5000, 'init on db2');
    const s1 = new StateListener({ db: db1, key: 'shared', callback: (v) => seen1.push(v) });
    s1.subscribe();
    const value = { x: 1, label: 'héllo ✓', list: [1, 2, 3], nested: { ok: true } };
    s1.setStateOptimistic(value);
    await waitFor(() => seen2.some((v) => JSON.stringify(v) === JSON.stringify(value)), 5000, 'db2 to see the state');
    // Two quick updates: the debounced last one wins.
    s1.setStateOptimistic({ x: 2 });
    s1.setStateOptimistic({ x: 3 });
    await waitFor(() => JSON.stringify(seen2.at(-1)) === JSON.stringify({ x: 3 }), 5000, 'db2 to see {x:3}');
    // A late joiner gets the retained (replaced) state from init.
    const db3 = await dbConnect(url);
    const seen3 = [];
    const s3 = new StateListener({ db: db3, key: 'shared', callback: (v) => seen3.push(v) });
    s3.subscribe();
    await waitFor(() => seen3.length > 0, 5000, 'late joiner to get the state');
    assert.deepEqual(seen3, [{ x: 3 }], 'late joiner sees only the last state (replace retains one entry)');
    s1.destroy(); s2.destroy(); s3.destroy();
  });

  test('Reducer: compaction past sizeThreshold, a new connection reconstructs the same state', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const N = 60;
    const THRESHOLD = 10;
    const reducer = (state, action) => ({ count: state.count + 1, sum: state.sum + action.n, last: action.n });
    const init = { count: 0, sum: 0, last: null };
    const expected = { count: N, sum: (N * (N + 1)) / 2, last: N };

    // A raw subscriber counts the broadcasts (compactions are not broadcast).
    const watcher = await RawClient.connect(url, { label: 'watcher' });
    await watcher.get('counter');

    const db1 = await dbConnect(url);
    const msgs1 = recordDb(db1);
    const states1 = [];
    const r1 = new Reducer({ key: 'counter', reducer, initialValue: init, sizeThreshold: THRESHOLD, db: db1, callback: (s) => states1.push(s) });
    r1.subscribe();
    await waitFor(() => msgs1.some((m) => m.type === 'init'), 5000, 'init on db1');
    for (let i = 1; i <= N; i++) r1.dispatch({ n: i });
    assert.deepEqual(states1.at(-1), expected, 'optimistic state');

    const pushes = [];
    for (let i = 0; i < N; i++) pushes.push(await watcher.next('push', 10000));
    assert.deepEqual(pushes.map((p) => p.value.apply.n), Array.from({ length: N }, (_, i) => i + 1));
    const seqs = pushes.map((p) => p.seq);
    for (let i = 1; i < N; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `seqs not consecutive: ${seqs}`);
    // The client got stream_size messages and sent compactions; the server
    // retains fewer entries than actions sent, a reset first.
    // db1's stream_size messages travel on its own connection: they may
    // arrive after the watcher has seen every push.
    await waitFor(() => msgs1.some((m) => m.type === 'stream_size' && m.key === 'counter' && m.size > THRESHOLD),
      5000, 'a stream_size above the threshold on db1');
    const checker = await RawClient.connect(url, { label: 'checker' });
    const init2 = await waitFor(async () => {
      const m = await checker.get('counter');
      return m.data.length > 0 && m.data[0].value.reset !== undefined && m.data.length <= THRESHOLD + 2 ? m : null;
    }, 10000, 'the retained stream to be compacted');
    assert.ok(init2.data.length < N, `retained ${init2.data.length} entries for ${N} actions`);
    const rs = init2.data.map((e) => e.seq);
    for (let i = 1; i < rs.length; i++) assert.ok(rs[i] > rs[i - 1], `retained seqs not increasing: ${rs}`);
    assert.ok(rs[0] >= seqs[0] && rs.at(-1) === seqs.at(-1), `retained seqs ${rs} vs broadcast ${seqs[0]}..${seqs.at(-1)}`);
    // Entries after the reset are the tail of the actions, with their seqs.
    for (const e of init2.data.slice(1)) {
      const p = pushes.find((x) => x.seq === e.seq);
      assert.ok(p, `retained seq ${e.seq} was never broadcast`);
      assert.deepEqual(e.value, p.value);
    }

    // A brand-new connection's Reducer reconstructs the same state.
    const db2 = await dbConnect(url);
    const states2 = [];
    const r2 = new Reducer({ key: 'counter', reducer, initialValue: init, sizeThreshold: THRESHOLD, db: db2, callback: (s) => states2.push(s) });
    r2.subscribe();
    await waitFor(() => JSON.stringify(states2.at(-1)) === JSON.stringify(expected), 5000,
      `the new reducer to reach ${JSON.stringify(expected)} (has ${JSON.stringify(states2.at(-1))})`);
    r1.destroy(); r2.destroy();
  });

  test('CBOR: a Uint8Array survives to a CBOR client as bytes and to a JSON client as numbers', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const bytes = new Uint8Array([0, 1, 2, 127, 128, 200, 255, 10, 13]);
    const jsonPeer = await RawClient.connect(url, { label: 'json peer' });
    await jsonPeer.get('bin');
    const a = await dbConnect(url, true);
    const b = await dbConnect(url, true);
    const gotB = [];
    const msgsB = recordDb(b);
    b.subscribe('bin', (sv) => gotB.push(sv));
    await waitFor(() => msgsB.some((m) => m.type === 'init' && m.key === 'bin'), 5000, 'init on the CBOR peer');
    a.send({ type: 'push', key: 'bin', value: { data: bytes, n: 7, s: 'ü' }, action: { type: 'append' } });

    await waitFor(() => gotB.length > 0, 5000, 'the CBOR peer to receive the push');
    const v = gotB[0].value;
    assert.ok(v.data instanceof Uint8Array, `CBOR peer got ${typeof v.data} ${v.data?.constructor?.name}, not bytes`);
    assert.deepEqual([...v.data], [...bytes]);
    assert.equal(v.n, 7);
    assert.equal(v.s, 'ü');
    assert.equal(gotB[0].seq, 1, 'the first push of a new room has seq 1');

    const j = await jsonPeer.next('push');
    assert.deepEqual(j, { type: 'push', key: 'bin', value: { data: [...bytes], n: 7, s: 'ü' }, seq: gotB[0].seq });

    // And a late CBOR joiner gets the bytes back from init.
    const c = await dbConnect(url, true);
    const gotC = [];
    c.subscribe('bin', (sv) => gotC.push(sv));
    await waitFor(() => gotC.length > 0, 5000, 'init replay on the late CBOR client');
    assert.ok(gotC[0].value.data instanceof Uint8Array);
    assert.deepEqual([...gotC[0].value.data], [...bytes]);
  });

  test('a JSON client and a CBOR client see the same pushes', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const j = await dbConnect(url, false);
    const c = await dbConnect(url, true);
    const gotJ = [];
    const gotC = [];
    j.subscribe('k', (sv) => gotJ.push(sv));
    c.subscribe('k', (sv) => gotC.push(sv));
    // Let both gets reach the server before pushing.
    await withTimeout(j.testLatency(), 5000, 'ping j');
    await withTimeout(c.testLatency(), 5000, 'ping c');
    for (let i = 0; i < 10; i++) (i % 2 ? j : c).send({ type: 'push', key: 'k', value: { i, f: i + 0.5 }, action: { type: 'append' } });
    await waitFor(() => gotJ.length === 10 && gotC.length === 10, 5000, '10 pushes on both');
    assert.deepEqual(gotJ, gotC, 'both clients see the same values, seqs and order');
    const is = gotJ.map((x) => x.value.i);
    assert.deepEqual([...is].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(is.filter((i) => i % 2 === 0), [0, 2, 4, 6, 8], 'the CBOR sender order');
    assert.deepEqual(is.filter((i) => i % 2 === 1), [1, 3, 5, 7, 9], 'the JSON sender order');
    for (let k = 1; k < gotJ.length; k++) assert.equal(gotJ[k].seq, gotJ[k - 1].seq + 1);
  });

  shutdownTest(ctx);
});
