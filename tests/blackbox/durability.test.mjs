// Durability: every acknowledged push survives kill -9 and a restart, with
// its seq; the seq counter continues. Crosses snapshots (a low
// --snapshot-threshold).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import {
  useDriftd, shutdownTest, createRoom, RawClient, httpRequest, httpSend, waitFor,
} from './lib/harness.mjs';

const SNAPSHOT_THRESHOLD = 64;

function extraArgs() {
  return ['--snapshot-threshold', String(SNAPSHOT_THRESHOLD), '--snapshot-trailing', '16'];
}

// The node's log since its latest start.
function sinceStart(srv) {
  const s = srv.output();
  const i = s.lastIndexOf(`start #${srv.starts}:`);
  return i < 0 ? s : s.slice(i);
}

// Pushes n values on key (pipelined), waits for every own broadcast (the ack),
// returns [{value, seq}] in ack order.
async function pushAndAck(c, key, values, action = 'append') {
  for (const v of values) c.push(key, v, action);
  const acked = [];
  for (let i = 0; i < values.length; i++) {
    const m = await c.next((x) => x.type === 'push' && x.key === key, 15000, `ack ${i + 1}/${values.length} on ${key}`);
    acked.push({ value: m.value, seq: m.seq });
  }
  return acked;
}

async function retained(url, key) {
  const c = await RawClient.connect(url, { label: `reader of ${key}` });
  const init = await c.get(key, 0, 15000);
  await c.close();
  return init.data;
}

describe('durability', () => {
  const ctx = useDriftd({ name: 'durability', args: extraArgs() });

  test('acknowledged appends survive kill -9 (twice) with their seqs; the seq counter continues', async () => {
    const { room, socket_url: url } = await createRoom(ctx.srv.base);
    const expect = { d: [], e: [] };

    // Round 1: 200 appends on one key, acknowledged.
    const w1 = await RawClient.connect(url, { label: 'writer 1' });
    await w1.get('d');
    const round1 = await pushAndAck(w1, 'd', Array.from({ length: 200 }, (_, i) => ({ r: 1, i, pad: 'p'.repeat(i % 50) })));
    assert.deepEqual(round1.map((e) => e.seq), Array.from({ length: 200 }, (_, i) => i + 1));
    expect.d.push(...round1);
    await w1.close();

    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'd'), expect.d, 'after the first kill -9');
    const info = await httpRequest(`${ctx.srv.base}/room/${room}`);
    assert.equal(info.status, 200, 'the room is gone after kill -9');

    // Round 2: the counter continues; two keys, a replace key and a compaction.
    const w2 = await RawClient.connect(url, { label: 'writer 2' });
    await w2.get('d');
    await w2.get('e');
    await w2.get('r');
    const first = await pushAndAck(w2, 'd', [{ r: 2, i: 0 }]);
    assert.equal(first[0].seq, 201, 'the seq counter did not continue after restart');
    expect.d.push(...first);
    for (let i = 0; i < 150; i++) {
      w2.push('d', { r: 2, i: i + 1 });
      w2.push('e', { r: 2, i });
      if (i % 30 === 0) w2.push('r', { r: 2, i }, 'replace');
    }
    let lastR = null;
    for (let n = 0; n < 150 * 2 + 5; n++) {
      const m = await w2.next('push', 15000);
      if (m.key === 'r') lastR = { value: m.value, seq: m.seq };
      else expect[m.key].push({ value: m.value, seq: m.seq });
    }
    assert.equal(expect.d.length, 200 + 151);
    assert.equal(expect.e.length, 150);
    const allSeqs = [...expect.d, ...expect.e, lastR].map((e) => e.seq).sort((a, b) => a - b);
    assert.deepEqual(allSeqs.slice(-1), [200 + 1 + 305]);
    // Compact key e at its 100th entry's seq.
    const S = expect.e[99].seq;
    w2.push('e', { folded: 100 }, { type: 'compact', seq: S });
    await w2.roundTrip();
    expect.e = [{ value: { folded: 100 }, seq: S }, ...expect.e.slice(100)];
    assert.deepEqual(await retained(url, 'e'), expect.e, 'compaction before the kill');
    await w2.close();

    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'd'), expect.d, 'key d after the second kill -9');
    assert.deepEqual(await retained(url, 'e'), expect.e, 'key e (compacted) after the second kill -9');
    assert.deepEqual(await retained(url, 'r'), [lastR], 'replace key after the second kill -9');

    const w3 = await RawClient.connect(url, { label: 'writer 3' });
    await w3.get('d');
    const next = await pushAndAck(w3, 'd', ['after']);
    assert.equal(next[0].seq, allSeqs.at(-1) + 1, 'the seq counter did not continue after the second restart');
    expect.d.push(...next);
    await w3.close();

    // A clean restart keeps everything too.
    await ctx.srv.restart();
    assert.deepEqual(await retained(url, 'd'), expect.d, 'after a clean restart');
  });

  test('a room is durable once POST /new has answered', async () => {
    const rooms = [];
    for (let i = 0; i < 5; i++) rooms.push(await createRoom(ctx.srv.base));
    await ctx.srv.kill9();
    await ctx.srv.launch();
    for (const r of rooms) {
      const g = await httpRequest(`${ctx.srv.base}/room/${r.room}`);
      assert.equal(g.status, 200, `room ${r.room} lost by kill -9`);
      const c = await RawClient.connect(r.socket_url);
      assert.deepEqual(await c.roundTrip(), []);
    }
  });

  test('HTTP-acknowledged pushes survive kill -9', async () => {
    const { room, socket_url: url } = await createRoom(ctx.srv.base);
    const acked = [];
    for (let i = 0; i < 30; i++) {
      const r = await httpSend(ctx.srv.base, room, { type: 'push', key: 'h', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200, r.text);
      acked.push(i);
    }
    await ctx.srv.kill9();
    await ctx.srv.launch();
    const data = await retained(url, 'h');
    assert.deepEqual(data, acked.map((v, i) => ({ value: v, seq: i + 1 })));
  });

  test('many rooms and a large history cross snapshots and survive kill -9', async () => {
    const rooms = [];
    for (let r = 0; r < 4; r++) rooms.push(await createRoom(ctx.srv.base));
    const writers = await Promise.all(rooms.map(async (r) => {
      const c = await RawClient.connect(r.socket_url);
      await c.get('s');
      return c;
    }));
    // 4 rooms x 300 appends, acknowledged in small waves so the log has many
    // entries (group commit packs a wave into few entries).
    const expected = rooms.map(() => []);
    for (let wave = 0; wave < 30; wave++) {
      await Promise.all(writers.map(async (c, r) => {
        const acked = await pushAndAck(c, 's', Array.from({ length: 10 }, (_, i) => ({ wave, i, room: r })));
        expected[r].push(...acked);
      }));
    }
    // 30 waves of 40 pushes take far more than SNAPSHOT_THRESHOLD entries.
    await waitFor(() => /event=snapshot bytes=\d+/.test(sinceStart(ctx.srv)), 10000,
      `a snapshot after 1200 pushes with --snapshot-threshold ${SNAPSHOT_THRESHOLD}`);
    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.match(sinceStart(ctx.srv), /event=restore bytes=\d+/, 'the restart did not restore a snapshot');
    for (let r = 0; r < rooms.length; r++) {
      assert.deepEqual(await retained(rooms[r].socket_url, 's'), expected[r], `room ${r}`);
    }
    await ctx.srv.kill9();
    await ctx.srv.launch();
    for (let r = 0; r < rooms.length; r++) {
      const c = await RawClient.connect(rooms[r].socket_url);
      await c.get('s', null);
      c.push('s', 'next');
      const m = await c.next('push');
      assert.equal(m.seq, expected[r].at(-1).seq + 1, `room ${r}: seq after two restarts`);
    }
  });

  shutdownTest(ctx);
});

// --snapshot-bytes: with the entry threshold out of reach, a snapshot is
// still taken once 1 MiB of log has been applied, and the node restores from
// it after kill -9.
describe('snapshots by log size', () => {
  const ctx = useDriftd({
    name: 'snapshot-bytes',
    args: ['--snapshot-threshold', '1000000', '--snapshot-bytes', '1', '--snapshot-trailing', '16'],
  });

  test('1 MiB of log triggers a snapshot although the entry threshold is far; kill -9 restores from it', async () => {
    const snapshots = async () => (await fsp.readdir(ctx.srv.dataDir)).filter((f) => /^snapshot-.*\.meta$/.test(f));
    assert.deepEqual(await snapshots(), [], 'a snapshot before any push');
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await RawClient.connect(url, { label: 'writer' });
    await w.get('big');
    // 5 KiB values in waves of 10: ~1.5 MiB of log over ~30 entries.
    const acked = [];
    for (let wave = 0; wave < 30; wave++) {
      acked.push(...await pushAndAck(w, 'big', Array.from({ length: 10 }, (_, i) => `${wave}.${i}.${'x'.repeat(5120)}`)));
    }
    await w.close();
    const deadline = Date.now() + 10000;
    while ((await snapshots()).length === 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    assert.ok((await snapshots()).length > 0, 'no snapshot after 1.5 MiB of log with --snapshot-bytes 1');
    assert.match(ctx.srv.output(), /event=snapshot bytes=\d+/);

    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.match(ctx.srv.output(), /event=restore bytes=\d+/, 'the restart did not restore the snapshot');
    assert.deepEqual(await retained(url, 'big'), acked, 'retained entries after kill -9');
  });

  shutdownTest(ctx);
});
