// Total order: concurrent writers, every subscriber sees the same order.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useDriftd, shutdownTest, createRoom, RawClient, waitFor, dbConnect, recordDb } from './lib/harness.mjs';

const WRITERS = ['json', 'cbor', 'msgpack'];
const PER_WRITER = 500;
const TOTAL = WRITERS.length * PER_WRITER;

describe('order', () => {
  const ctx = useDriftd({ name: 'order' });

  test(`${WRITERS.length} writers x ${PER_WRITER} appends: every subscriber sees all, in one order`, async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const subs = [];
    for (const fmt of ['json', 'cbor', 'msgpack']) {
      const s = await RawClient.connect(url, { format: fmt, label: `${fmt} subscriber` });
      await s.get('o');
      subs.push(s);
    }
    // The real client, CBOR, as a fourth subscriber.
    const db = await dbConnect(url, true);
    const dbSeen = [];
    const dbMsgs = recordDb(db);
    db.subscribe('o', (sv) => dbSeen.push(sv));
    await waitFor(() => dbMsgs.some((m) => m.type === 'init'), 5000, 'init on the driftdb client');

    const writers = [];
    for (let w = 0; w < WRITERS.length; w++) {
      writers.push(await RawClient.connect(url, { format: WRITERS[w], label: `writer ${w}` }));
    }
    // Interleaved, as fast as possible: no waiting between sends.
    for (let i = 0; i < PER_WRITER; i++) {
      for (let w = 0; w < writers.length; w++) writers[w].push('o', { w, i }, 'append');
    }

    const got = await Promise.all(subs.map(async (s) => {
      await waitFor(() => s.queue.filter((e) => e.msg.type === 'push').length >= TOTAL, 60000,
        `${s.label} to receive ${TOTAL} pushes (has ${s.queue.filter((e) => e.msg.type === 'push').length})`, 50);
      return s.drain().filter((m) => m.type === 'push');
    }));
    await waitFor(() => dbSeen.length >= TOTAL, 30000, `driftdb client to receive ${TOTAL} (has ${dbSeen.length})`, 50);

    const reference = got[0];
    assert.equal(reference.length, TOTAL);
    const seqs = reference.map((m) => m.seq);
    assert.equal(seqs[0], 1, 'first seq of a new room');
    for (let k = 1; k < TOTAL; k++) {
      assert.equal(seqs[k], seqs[k - 1] + 1, `seq gap or reorder at ${k}: ${seqs[k - 1]} then ${seqs[k]}`);
    }
    for (let s = 1; s < got.length; s++) {
      assert.equal(got[s].length, TOTAL, `${subs[s].label} count`);
      for (let k = 0; k < TOTAL; k++) {
        if (got[s][k].seq !== reference[k].seq || got[s][k].value.w !== reference[k].value.w || got[s][k].value.i !== reference[k].value.i) {
          assert.fail(`${subs[s].label} differs at ${k}: ${JSON.stringify(got[s][k])} vs ${JSON.stringify(reference[k])}`);
        }
      }
    }
    assert.equal(dbSeen.length, TOTAL, 'the driftdb client saw extra messages');
    for (let k = 0; k < TOTAL; k++) {
      if (dbSeen[k].seq !== reference[k].seq || dbSeen[k].value.w !== reference[k].value.w || dbSeen[k].value.i !== reference[k].value.i) {
        assert.fail(`driftdb client differs at ${k}: ${JSON.stringify(dbSeen[k])} vs ${JSON.stringify(reference[k])}`);
      }
    }
    // Each writer's own messages in the order it sent them, each exactly once.
    for (let w = 0; w < WRITERS.length; w++) {
      const mine = reference.filter((m) => m.value.w === w).map((m) => m.value.i);
      assert.deepEqual(mine, Array.from({ length: PER_WRITER }, (_, i) => i), `writer ${w} (${WRITERS[w]}) order`);
    }
    // The retained stream is the same sequence.
    const late = await RawClient.connect(url, { format: 'msgpack' });
    const init = await late.get('o', 0, 20000);
    assert.equal(init.data.length, TOTAL);
    for (let k = 0; k < TOTAL; k++) {
      const e = init.data[k];
      if (e.seq !== reference[k].seq || e.value.w !== reference[k].value.w || e.value.i !== reference[k].value.i) {
        assert.fail(`retained entry ${k} differs: ${JSON.stringify(e)} vs ${JSON.stringify(reference[k])}`);
      }
    }
    // Writers were not subscribed: they got stream_size only, never a push.
    for (const wr of writers) {
      const rest = await wr.roundTrip(20000);
      assert.equal(rest.filter((m) => m.type === 'push').length, 0, `${wr.label} got broadcasts without a get`);
      assert.ok(rest.every((m) => m.type === 'stream_size' && m.key === 'o'), `${wr.label} got ${JSON.stringify(rest.find((m) => m.type !== 'stream_size'))}`);
    }
  });

  test('writers on several keys: one seq counter, every subscriber of all keys sees one order', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const keys = ['a', 'b', 'c'];
    const subs = [];
    for (const fmt of ['json', 'cbor']) {
      const s = await RawClient.connect(url, { format: fmt, label: `${fmt} subscriber` });
      for (const k of keys) await s.get(k);
      subs.push(s);
    }
    const debug = await RawClient.connect(url, { query: { debug: 'true' }, label: 'debug subscriber' });
    await debug.roundTrip();
    const writers = [];
    for (let w = 0; w < keys.length; w++) writers.push(await RawClient.connect(url, { format: WRITERS[w], label: `writer ${w}` }));
    const N = 200;
    for (let i = 0; i < N; i++) {
      for (let w = 0; w < writers.length; w++) writers[w].push(keys[(i + w) % keys.length], { w, i }, i % 5 === 0 ? 'relay' : 'append');
    }
    const all = [...subs, debug];
    const got = await Promise.all(all.map(async (s) => {
      await waitFor(() => s.queue.filter((e) => e.msg.type === 'push').length >= N * keys.length, 30000, `${s.label} pushes`, 50);
      return s.drain().filter((m) => m.type === 'push');
    }));
    for (const g of got) {
      assert.equal(g.length, N * keys.length);
      assert.deepEqual(g.map((m) => m.seq), Array.from({ length: N * keys.length }, (_, k) => k + 1));
      assert.deepEqual(g, got[0]);
    }
    for (let w = 0; w < writers.length; w++) {
      assert.deepEqual(got[0].filter((m) => m.value.w === w).map((m) => m.value.i), Array.from({ length: N }, (_, i) => i));
    }
  });

  shutdownTest(ctx);
});
