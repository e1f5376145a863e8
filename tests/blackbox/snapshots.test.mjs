// Snapshots encoded off the loop (src/consensus/snapjob.c).
//
// By a thread (the default): the thread encodes a view of the state taken
// at the snapshot's index (src/relay/view.c) while the node goes on
// applying. A test hook (DRIFTD_TEST_SNAPSHOT_DELAY_MS) holds the thread
// after its view is taken, so compactions, replacements, appends and a
// room's deletion are applied under the view through the node's own paths;
// the snapshot written must still be the one of its index: a restart from
// it (plus the log after it) gives exactly what the node served before.
//
// By a forked child (--snapshot-mode fork): while the child encodes, the
// node goes on acknowledging pushes; a child that dies costs nothing but a
// later snapshot; a node that stops (SIGTERM) or dies (kill -9) while its
// child encodes takes the child with it; the child holds none of the
// node's sockets. Every acknowledged push survives each case.
//
// The child is caught in the act: the test watches for a process whose
// parent is the node and stops it (SIGSTOP) before it finishes. A child that
// finishes first is simply missed and the next snapshot is tried.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  useDriftd, createRoom, RawClient, waitFor, shutdownTest, sleep,
} from './lib/harness.mjs';

// A snapshot per 2 MiB of log (the count threshold out of the way), values
// of 16 KiB: a snapshot every ~128 pushes, each bigger than the last.
const ARGS = ['--snapshot-threshold', '1000000', '--snapshot-bytes', '2',
  '--snapshot-trailing', '16', '--log-level', 'debug'];
const VALUE = 'v'.repeat(16 * 1024);

// Processes whose parent is pid (/proc/N/stat: "N (comm) S PPID ...").
function childrenOf(pid) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    const n = Number(name);
    if (!Number.isInteger(n) || n <= pid) continue; // forked after the node
    let stat;
    try { stat = fs.readFileSync(`/proc/${n}/stat`, 'utf8'); } catch { continue; }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[1]) === pid) out.push({ pid: n, state: rest[0] });
  }
  return out;
}

function stateOf(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return null; // gone (reaped)
  }
}

const gone = (pid) => { const s = stateOf(pid); return s === null || s === 'Z' || s === 'X'; };

class Writer {
  constructor(client, key) {
    this.c = client;
    this.key = key;
    this.acked = [];
    this.n = 0;
  }

  static async open(url, key) {
    const c = await RawClient.connect(url, { label: `writer of ${key}` });
    await c.get(key);
    return new Writer(c, key);
  }

  // Pushes count values, pipelined, and waits for every ack.
  async push(count) {
    const first = this.n;
    for (let i = 0; i < count; i++) this.c.push(this.key, { i: this.n++, pad: VALUE });
    for (let i = 0; i < count; i++) {
      const m = await this.c.next((x) => x.type === 'push' && x.key === this.key, 30000,
        `ack ${first + i} on ${this.key}`);
      this.acked.push({ value: m.value, seq: m.seq });
    }
  }
}

// Pushes in rounds of 16 until a snapshot child of the node appears, and
// stops it. A child that finishes before it is stopped is missed; the next
// snapshot is tried. Returns the stopped child's pid.
// The child is stopped only once it has closed what it inherited (its
// first step; fds counts what it still held when last seen), so that what
// the test then sees of it is what it holds while it encodes.
async function catchEncoder(srv, w, maxPushes = 4000) {
  let caught = null;
  let done = false;
  const fdsSeen = [];
  const watcher = (async () => {
    while (!done && caught === null) {
      for (const ch of childrenOf(srv.pid)) {
        let fds;
        try { fds = fs.readdirSync(`/proc/${ch.pid}/fd`).length; } catch { continue; }
        fdsSeen.push(fds);
        if (fds > 4) continue; // 0-2 and the pipe
        try { process.kill(ch.pid, 'SIGSTOP'); } catch { continue; }
        if (stateOf(ch.pid) === 'T') { caught = ch.pid; break; }
      }
      await new Promise((r) => setImmediate(r));
    }
  })();
  try {
    while (caught === null && w.n < maxPushes) await w.push(16);
  } finally {
    done = true;
    await watcher;
  }
  assert.ok(caught !== null, `no snapshot child caught in ${w.n} pushes (descriptors seen in children: ${fdsSeen.slice(-20).join(' ')}):\n${srv.tail(4000)}`);
  return caught;
}

async function retained(url, key) {
  const c = await RawClient.connect(url, { label: `reader of ${key}` });
  const init = await c.get(key, 0, 30000);
  await c.close();
  return init.data;
}

// Log lines matching re since the node's latest start.
function countSinceStart(srv, re) {
  const s = srv.output();
  const i = s.lastIndexOf(`start #${srv.starts}:`);
  return ((i < 0 ? s : s.slice(i)).match(re) ?? []).length;
}

const TAKEN = /event=snapshot bytes=\d+ applied=\d+ mode=fork/g;

const TAKEN_THREAD = /event=snapshot bytes=\d+ applied=(\d+) mode=thread/g;
const STARTED = /event=snapshot_started applied=\d+/g;

// Threads of pid (/proc/PID/task/TID): name and nice value.
function threads(pid) {
  const out = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      out.push({ name, nice });
    } catch { /* gone */ }
  }
  return out;
}
const threadNames = (pid) => threads(pid).map((t) => t.name);

// Pushes in rounds of 16 until the node has started a snapshot (a view is
// out; the test hook holds its encoder).
async function untilViewTaken(srv, w, maxPushes = 4000) {
  const s0 = countSinceStart(srv, STARTED);
  while (countSinceStart(srv, STARTED) === s0) {
    assert.ok(w.n < maxPushes, `no snapshot started in ${w.n} pushes:\n${srv.tail(4000)}`);
    await w.push(16);
  }
}

describe('snapshots by a thread, from a view', () => {
  // The encoder waits 1.5 s after its view is taken (test hook).
  const ctx = useDriftd({ name: 'snapshots-thread', args: ARGS,
    env: { DRIFTD_TEST_SNAPSHOT_DELAY_MS: '1500' } });

  test('compact, replace and appends under a view: acknowledged at once, and the snapshot is still its index\'s', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await Writer.open(url, 'a');
    const c = await RawClient.connect(url, { label: 'changer' });
    await c.get('b');
    c.push('b', 'b1');
    c.push('b', 'b2');
    await c.roundTrip();
    const t0 = countSinceStart(ctx.srv, TAKEN_THREAD);
    await untilViewTaken(ctx.srv, w);

    // Under the view: a's array compacted in place, b's replaced, new
    // entries, a new key. Every one is applied and answered while the
    // encoder still holds its view.
    const { data } = await c.get('a', 0);
    assert.ok(data.length > 8, `a holds ${data.length} entries`);
    c.push('a', 'folded', { type: 'compact', seq: data[Math.floor(data.length / 2)].seq });
    c.push('b', 'b3');
    c.push('b', 'only', 'replace');
    c.push('b', 'b4');
    c.push('n', 'new key');
    await c.roundTrip(); // all five applied and answered
    await w.push(16);
    assert.equal(countSinceStart(ctx.srv, TAKEN_THREAD), t0,
      'the changes were answered only after the snapshot: the encoder did not hold its view');
    // The encoder runs below the loop (nice 10), the loop at the node's own.
    const encoder = threads(ctx.srv.pid).find((t) => t.name === 'driftd-snap');
    assert.ok(encoder, 'an encoder thread in the node');
    assert.equal(encoder.nice, 10, 'the encoder\'s nice value');
    assert.equal(threads(ctx.srv.pid).find((t) => t.name === 'driftd').nice, 0, 'the loop thread\'s nice value');

    // The snapshot ends; raft writes it.
    await waitFor(() => countSinceStart(ctx.srv, TAKEN_THREAD) > t0, 15000, 'the thread\'s snapshot');
    const index = [...ctx.srv.output().matchAll(TAKEN_THREAD)].at(-1)[1];
    await waitFor(() => fs.readdirSync(ctx.srv.dataDir).some((f) => new RegExp(`^snapshot-\\d+-${index}-\\d+\\.meta$`).test(f)),
      10000, `the snapshot file of index ${index}`);
    assert.ok(!threadNames(ctx.srv.pid).includes('driftd-snap'), 'the encoder thread ended');

    // What the node serves now is what a restart from that snapshot (and
    // the log after it) serves: had the view seen the changes, the log
    // would apply them a second time.
    const before = { a: await retained(url, 'a'), b: await retained(url, 'b'), n: await retained(url, 'n') };
    assert.deepEqual(before.b.map((e) => e.value), ['only', 'b4']);
    assert.equal(before.a[0].value, 'folded');
    await w.c.close();
    await c.close();
    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.equal(countSinceStart(ctx.srv, /event=restore bytes=\d+/g), 1, 'restarted from a snapshot');
    assert.deepEqual({ a: await retained(url, 'a'), b: await retained(url, 'b'), n: await retained(url, 'n') }, before);
  });

  shutdownTest(ctx);
});

describe('a thread\'s view at shutdown', () => {
  // The encoder would wait ten minutes: only its cancellation ends it.
  const ctx = useDriftd({ name: 'snapshots-thread-stop', args: ARGS,
    env: { DRIFTD_TEST_SNAPSHOT_DELAY_MS: '599000' } });

  test('SIGTERM while the encoder holds its view: the encoder is cancelled, exit 0, nothing acknowledged is lost', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await Writer.open(url, 'a');
    await untilViewTaken(ctx.srv, w);
    await w.push(16);
    await w.c.close();
    await ctx.srv.stopClean(); // within 20 s, so not waiting for the encoder
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'a'), w.acked);
  });

  shutdownTest(ctx);
});

describe('snapshots by a forked child', () => {
  const ctx = useDriftd({ name: 'snapshots', args: [...ARGS, '--snapshot-mode', 'fork'] });

  test('the node acknowledges pushes while its child encodes; a killed child costs only that snapshot', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await Writer.open(url, 'a');
    const child = await catchEncoder(ctx.srv, w);

    // The child holds the standard streams and its pipe, none of the
    // node's sockets or files: a port the node closes is closed.
    const fds = fs.readdirSync(`/proc/${child}/fd`).map(Number).sort((a, b) => a - b);
    const links = fds.filter((fd) => fd > 2).map((fd) => fs.readlinkSync(`/proc/${child}/fd/${fd}`));
    assert.deepEqual(links.map((l) => l.replace(/\[\d+\]/, '[]')), ['pipe:[]'],
      `the child's descriptors beyond 0-2: ${links.join(' ')}`);

    // Stopped mid-snapshot, and the node goes on: 64 more pushes acked.
    const before = w.acked.length;
    await w.push(64);
    assert.equal(w.acked.length, before + 64);
    assert.equal(stateOf(child), 'T', 'the child is still stopped: the acks did not wait for it');

    // The child dies: the snapshot is dropped, logged, and a later one is
    // taken (after the retry pause, at the next 2 MiB of log).
    const taken = countSinceStart(ctx.srv, TAKEN);
    process.kill(child, 'SIGKILL');
    await waitFor(() => /event=snapshot_failed/.test(ctx.srv.output()), 10000, 'event=snapshot_failed in the log');
    // Its exit status is collected without blocking the loop: at once, or at
    // the node's next tick.
    await waitFor(() => /event=snapshot_child_failed pid=\d+ signal=9/.test(ctx.srv.output()), 5000,
      'event=snapshot_child_failed ... signal=9 in the log');
    // The writer is paced (16 pushes per 50 ms at most): a fast node would
    // otherwise pile up state long before the retry pause (5 s) is over.
    const deadline = Date.now() + 30000;
    while (countSinceStart(ctx.srv, TAKEN) === taken) {
      assert.ok(Date.now() < deadline, `no snapshot within 30 s of the failed one (${w.n} pushes):\n${ctx.srv.tail(4000)}`);
      await Promise.all([w.push(16), sleep(50)]);
    }

    // Everything acknowledged is there after a kill -9 and a restart
    // (from the later snapshot, once raft has written it, and the log).
    await w.c.close();
    await waitFor(() => fs.readdirSync(ctx.srv.dataDir).some((f) => /^snapshot-.*\.meta$/.test(f)),
      10000, 'a snapshot file in the data dir');
    await ctx.srv.kill9();
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'a'), w.acked);
    assert.equal(countSinceStart(ctx.srv, /event=restore bytes=\d+/g), 1, 'restarted from a snapshot');
  });

  test('SIGTERM while the child encodes: exit 0, the child ends too, nothing acknowledged is lost', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await Writer.open(url, 'b');
    const child = await catchEncoder(ctx.srv, w);
    await w.push(16);
    await w.c.close();
    await ctx.srv.stopClean();
    assert.ok(gone(child), `child ${child} outlived its node (state ${stateOf(child)})`);
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'b'), w.acked);
  });

  test('kill -9 while the child encodes: the child dies with its node; a restart on the same ports keeps everything', async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const w = await Writer.open(url, 'c');
    const child = await catchEncoder(ctx.srv, w);
    await w.push(16);
    await w.c.close();
    await ctx.srv.kill9();
    await waitFor(() => gone(child), 5000, `child ${child} to die with its node`);
    await ctx.srv.launch();
    assert.deepEqual(await retained(url, 'c'), w.acked);
  });

  shutdownTest(ctx);
});
