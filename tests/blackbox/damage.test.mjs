// Damaged data on disk: what a node does with a torn open segment, a bad
// byte in a closed segment and a bad byte in a snapshot (docs/operations.md,
// "Damaged data").
//
// - A torn tail of the open segment (a power loss cuts the last write; the
//   file is shorter than what was written) is cut off at the last whole
//   batch and the node starts: a single node keeps a gap-free prefix of its
//   pushes, a cluster member catches up from its peers and loses nothing.
//   Before the libraft patch (deploy/patches/raft/) the node crashed at start
//   with a double free.
// - A damaged closed segment or snapshot: the node refuses to start, exit 1,
//   with a message naming the file and pointing at the documentation; it
//   never starts with entries missing (libraft's auto-recovery, which moved
//   a damaged last segment aside, is off) or with a state that differs from
//   what was written (snapshots carry a CRC-32C since this change). The
//   documented way back (remove the member, clear its data folder, add it
//   again) is followed to the end in a 3-node cluster.
//
// Every damage is made by the test on a killed or stopped node's files.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';

import { createRoom, httpSend, withTimeout } from './lib/harness.mjs';
import { replay, waitRoomEverywhere, waitSameReplay } from './lib/cluster.mjs';
import { ctlOk, requireCtl, runCluster, waitMembers } from './lib/admin.mjs';

const T = { timeout: 120000 };

// Sends pushes one at a time (each its own log entry), each answered 200.
async function pushSeq(c, id, room, from, count, key = 'k') {
  for (let n = from; n < from + count; n++) {
    const r = await httpSend(c.base(id), room, { type: 'push', action: { type: 'append' }, key, value: { n } });
    assert.equal(r.status, 200, `push ${n}: ${r.status} ${r.text}`);
  }
}

// The open segment holding data (libraft preallocates open-N files with
// zeros) and where its data ends.
async function openSegmentWithData(dir) {
  for (const f of (await fsp.readdir(dir)).filter((x) => /^open-\d+$/.test(x)).sort()) {
    const buf = await fsp.readFile(path.join(dir, f));
    let end = buf.length;
    while (end > 0 && buf[end - 1] === 0) end--;
    if (end > 8) return { file: path.join(dir, f), end };
  }
  throw new Error(`no open segment with data in ${dir}: ${(await fsp.readdir(dir)).join(' ')}`);
}

// Closed segments (FIRST-LAST), in log order.
async function closedSegments(dir) {
  return (await fsp.readdir(dir)).filter((x) => /^\d{16}-\d{16}$/.test(x)).sort();
}

// Flips one byte of file at offset.
async function flipByte(file, offset) {
  const fh = await fsp.open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] ^= 0x5a;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

// Starts node id and waits for it to exit; returns {code, output}.
async function startFails(c, id) {
  const d = c.node(id);
  await d.launch({ waitHealthy: false });
  const info = await withTimeout(d.exited, 20000, `${d.name} to exit`);
  return { code: info.code, output: d.output().split(`start #${d.starts}:`).pop() };
}

function assertPrefix(data, sent, what) {
  data.forEach((e, i) => {
    assert.equal(e.seq, i + 1, `${what}: seqs gap-free from 1 (${JSON.stringify(data.slice(0, 5))}...)`);
    assert.deepEqual(e.value, { n: i }, `${what}: entry ${i} is push ${i}`);
  });
  assert.ok(data.length <= sent, `${what}: ${data.length} entries of ${sent} sent`);
}

describe('damaged data on disk', () => {
  for (const [what, cutAt] of [['a few bytes cut off', (end) => end - 3],
    ['only the first 4 KiB left', () => 4096]]) {
    test(`torn open segment (${what}): a single node starts with a gap-free prefix of its pushes`, T, async (t) => {
      await runCluster(t, { name: 'damage', size: 1 }, async (c) => {
        const { room } = await createRoom(c.base(1));
        await pushSeq(c, 1, room, 0, 120);
        await c.kill9(1);
        const seg = await openSegmentWithData(c.dataDir(1));
        const size = cutAt(seg.end);
        assert.ok(size < seg.end && size > 8, `cut at ${size} inside the data (ends at ${seg.end})`);
        await fsp.truncate(seg.file, size);

        await c.restart(1);
        const out = c.node(1).output();
        assert.match(out, new RegExp(`truncate open segment ${path.basename(seg.file)} at byte \\d+ of ${size}`));
        const data = await replay(c.socketUrl(1, room), 'k');
        assertPrefix(data, 120, 'after the restart');
        assert.ok(data.length >= 1 && data.length < 120, `some pushes kept, the torn ones gone: ${data.length}`);
        // It goes on from there: the next push takes the next seq.
        await pushSeq(c, 1, room, data.length, 1);
        assertPrefix(await replay(c.socketUrl(1, room), 'k'), data.length + 1, 'after one more push');
      });
    });
  }

  test('torn open segment on a cluster member: it starts, catches up, and every acknowledged push is on every node', T, async (t) => {
    await runCluster(t, { name: 'damage', size: 3 }, async (c) => {
      const leader = await c.waitLeader();
      const victim = c.ids.find((id) => id !== leader);
      const { room } = await createRoom(c.base(leader));
      await waitRoomEverywhere(c, room);
      await pushSeq(c, leader, room, 0, 60);
      await waitSameReplay(c, room, 'k', { until: (d) => d.length === 60 });
      await c.kill9(victim);
      const seg = await openSegmentWithData(c.dataDir(victim));
      await fsp.truncate(seg.file, seg.end - 5);
      await pushSeq(c, leader, room, 60, 20);
      await c.restart(victim);
      const data = await waitSameReplay(c, room, 'k', { until: (d) => d.length === 80 });
      assertPrefix(data, 80, 'every node');
    });
  });

  test('a bad byte in a closed segment: the node refuses to start, naming the file; removed, cleared and added again, it serves every push', T, async (t) => {
    requireCtl();
    await runCluster(t, { name: 'damage', size: 3 }, async (c) => {
      const leader = await c.waitLeader();
      const victim = c.ids.find((id) => id !== leader);
      const { room } = await createRoom(c.base(leader));
      await waitRoomEverywhere(c, room);
      await pushSeq(c, leader, room, 0, 40);
      await waitSameReplay(c, room, 'k', { until: (d) => d.length === 40 });
      // A clean stop and start closes the open segment; the damage goes
      // into the last closed one (the one libraft's auto-recovery would
      // have moved aside, starting without its entries).
      await c.stop(victim);
      await c.restart(victim);
      await c.stop(victim);
      const closed = await closedSegments(c.dataDir(victim));
      const last = closed[closed.length - 1];
      const file = path.join(c.dataDir(victim), last);
      const { size } = await fsp.stat(file);
      await flipByte(file, size - 10);

      const r = await startFails(c, victim);
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, new RegExp(`load closed segment ${last}: .*checksum mismatch`), r.output);
      assert.match(r.output, /data is damaged: docs\/operations\.md, "Damaged data"/, r.output);
      assert.ok(closed.every((f) => !f.startsWith('corrupt')), 'nothing moved aside');
      assert.deepEqual(await closedSegments(c.dataDir(victim)), closed, 'the segments are left as they were');

      // The way back, as docs/operations.md says.
      await ctlOk(['remove', String(victim)], { server: c.base(leader) });
      await pushSeq(c, leader, room, 40, 10);
      await fsp.rm(c.dataDir(victim), { recursive: true });
      await fsp.mkdir(c.dataDir(victim));
      const d = c.node(victim);
      const bi = d.args.indexOf('--bootstrap');
      d.args = [...d.args.slice(0, bi), '--join', ...d.args.slice(bi + 2)];
      await d.launch({ waitHealthy: false });
      await ctlOk(['add', String(victim), c.raftAddr(victim)], { server: c.base(leader) });
      await d.waitHealthy();
      await waitMembers(c.base(victim), { voters: [1, 2, 3] });
      const data = await waitSameReplay(c, room, 'k', { until: (x) => x.length === 50 });
      assertPrefix(data, 50, 'every node');
    });
  });

  test('a bad byte in a snapshot: the node refuses to start, naming the file, instead of serving a different value', T, async (t) => {
    await runCluster(t, { name: 'damage', size: 1, args: ['--snapshot-threshold', '16', '--snapshot-trailing', '4'] }, async (c) => {
      const { room } = await createRoom(c.base(1));
      // A value whose bytes the test can find in the snapshot.
      const r = await httpSend(c.base(1), room, { type: 'push', action: { type: 'replace' }, key: 'm', value: 'MARKER-abcdefgh' });
      assert.equal(r.status, 200, r.text);
      await pushSeq(c, 1, room, 0, 40);
      await c.stop(1);
      const snaps = (await fsp.readdir(c.dataDir(1))).filter((f) => /^snapshot-\d+-\d+-\d+$/.test(f))
        .sort((a, b) => Number(a.split('-')[2]) - Number(b.split('-')[2]));
      assert.ok(snaps.length > 0, 'a snapshot was taken');
      const newest = snaps[snaps.length - 1];
      const file = path.join(c.dataDir(1), newest);
      const at = (await fsp.readFile(file)).indexOf('MARKER-abcdefgh');
      assert.ok(at > 0, `the value is in ${newest}`);
      await flipByte(file, at + 8); // 'a' -> another letter: still valid msgpack

      const res = await startFails(c, 1);
      assert.equal(res.code, 1, res.output);
      assert.match(res.output, new RegExp(`${newest}: snapshot checksum mismatch`), res.output);
      assert.match(res.output, /data is damaged: docs\/operations\.md, "Damaged data"/, res.output);
    });
  });
});
