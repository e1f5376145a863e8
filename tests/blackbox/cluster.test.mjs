// Cluster: real 3- and 5-voter driftd clusters on loopback (lib/cluster.mjs).
// Rooms replicate, every node broadcasts the same seqs in the same order,
// acknowledged pushes survive kill -9 of the leader, a restarted node catches
// up through a snapshot install, a frozen (SIGSTOP) leader steps down without
// ever handing out a seq twice, a full SIGTERM / restart keeps everything,
// the real driftdb client keeps working through haproxy when the node behind
// its connection dies, and 5 voters survive the loss of two.
//
// What counts as an acknowledgement (docs/protocol.md, cluster behaviour):
//   - WebSocket writer: its own push broadcast back to it (writers subscribe
//     to the key with `get` before pushing);
//   - HTTP writer: POST /room/ID/send answered 200 (and not an error body).
// An acknowledged push must be present exactly once afterwards. An error
// answer must say "not applied" (then the push must be absent) or "unknown"
// (outcome unknown: present at most once); a connection that dies makes the
// outcome of its unacknowledged pushes unknown too. Nothing is ever present
// twice, and no seq ever belongs to two different messages.
//
// Conditions are polled (waitFor), never slept for. Writers pace their pushes
// with timers; nothing asserts on timing.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createRoom, httpRequest, httpSend, RawClient, dbConnect, recordDb, waitFor, sleep, safeJson,
} from './lib/harness.mjs';
import {
  useCluster, replay, waitRoomEverywhere, waitSameReplay, assertIncreasingSeqs, summarizeSeqs,
  findHaproxy, haproxyConfig, Haproxy, freePorts,
} from './lib/cluster.mjs';

const SNAPSHOT_THRESHOLD = 64;
const SNAPSHOT_TRAILING = 16;
const SNAP_ARGS = ['--snapshot-threshold', String(SNAPSHOT_THRESHOLD), '--snapshot-trailing', String(SNAPSHOT_TRAILING)];
const T = { timeout: 180000 };

// ---- writers ------------------------------------------------------------------

const ident = (v) => `${v.w}:${v.n}`;

// "not_applied" | "unknown" | "bad" for an error text.
function classify(text) {
  if (/not applied/i.test(text)) return 'not_applied';
  if (/unknown/i.test(text)) return 'unknown';
  return 'bad';
}

// A WebSocket writer on one node: subscribed to the key, pushes {w, n} with
// n = 0, 1, 2, ... every periodMs. Acks are its own broadcasts coming back.
class WsWriter {
  constructor(cluster, nodeId, room, key, name, periodMs = 10) {
    Object.assign(this, { cluster, nodeId, room, key, name, periodMs });
    this.kind = 'ws';
    this.sent = 0;
    this.acked = new Map(); // n -> seq
    this.errors = []; // error texts
    this.seen = []; // every broadcast on the key: {value, seq}
    this.scanned = 0;
    this.timer = null;
  }

  async open(url = this.cluster.socketUrl(this.nodeId, this.room)) {
    this.c = await RawClient.connect(url, { label: this.name });
    const init = await this.c.get(this.key);
    this.initData = init.data;
    this.scanned = this.c.log.length;
    return this;
  }

  get closed() { return !!this.c.closeInfo; }

  pushOne(extra = {}) {
    const n = this.sent++;
    this.c.push(this.key, { w: this.name, n, ...extra });
    return n;
  }

  start() {
    this.timer = setInterval(() => {
      if (this.closed) { this.stop(); return; }
      this.pushOne();
    }, this.periodMs);
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  scan() {
    const log = this.c.log;
    for (; this.scanned < log.length; this.scanned++) {
      const m = log[this.scanned].msg;
      if (m.type === 'push' && m.key === this.key) {
        this.seen.push({ value: m.value, seq: m.seq });
        if (m.value && m.value.w === this.name) this.acked.set(m.value.n, m.seq);
      } else if (m.type === 'error') {
        this.errors.push(String(m.message));
      }
    }
    this.c.queue = []; // everything is in c.log; keep the queue small
    return this;
  }

  ackCount() { return this.scan().acked.size; }
  ackedFrom(n0) { this.scan(); let k = 0; for (const n of this.acked.keys()) if (n >= n0) k++; return k; }
  // Every push sent has its answer: a broadcast back or an error.
  settled() { this.scan(); return this.acked.size + this.errors.length >= this.sent; }
}

// An HTTP writer on one node: POST /room/ID/send, one at a time, a pause of
// periodMs between answers. Stops by itself when its node is killed.
class HttpWriter {
  constructor(cluster, nodeId, room, key, name, periodMs = 10) {
    Object.assign(this, { cluster, nodeId, room, key, name, periodMs });
    this.kind = 'http';
    this.sent = 0;
    this.acked = new Set(); // n
    this.errors = []; // {n, cls, text}
    this.stopped = false;
    this.done = null;
  }

  async pushOne(base = this.cluster.base(this.nodeId)) {
    const n = this.sent++;
    try {
      const r = await httpSend(base, this.room, { type: 'push', key: this.key, value: { w: this.name, n }, action: { type: 'append' } }, { timeoutMs: 20000 });
      let body = null;
      try { body = JSON.parse(r.text); } catch { /* not JSON */ }
      if (r.status === 200 && !(body && body.type === 'error')) {
        this.acked.add(n);
      } else {
        const text = body && typeof body.message === 'string' ? body.message : r.text;
        this.errors.push({ n, cls: classify(text), text: `HTTP ${r.status}: ${text}` });
      }
    } catch (e) {
      // No answer: the outcome is unknown.
      this.errors.push({ n, cls: 'unknown', text: `transport: ${e.message}` });
      return false;
    }
    return true;
  }

  start() {
    this.done = (async () => {
      while (!this.stopped) {
        const answered = await this.pushOne();
        if (!answered && !this.cluster.running(this.nodeId)) break; // its node was killed
        await sleep(this.periodMs); // pacing, not waiting for a condition
      }
    })();
  }

  async stop() {
    this.stopped = true;
    await this.done;
  }

  ackCount() { return this.acked.size; }
  ackedFrom(n0) { let k = 0; for (const n of this.acked) if (n >= n0) k++; return k; }
}

// Checks a final replay against what writers know. Returns a list of
// violations (empty: fine). survivors: writers whose connection never broke
// (every push of theirs was answered).
function streamViolations(data, writers) {
  const v = [];
  const byName = new Map(writers.map((w) => [w.name, w]));
  const count = new Map();
  const seqOf = new Map();
  for (let i = 0; i < data.length; i++) {
    const e = data[i];
    if (i > 0 && !(e.seq > data[i - 1].seq)) v.push(`seq ${e.seq} at position ${i} follows ${data[i - 1].seq}`);
    if (!e.value || typeof e.value.w !== 'string' || typeof e.value.n !== 'number') { v.push(`foreign value ${safeJson(e)}`); continue; }
    const w = byName.get(e.value.w);
    if (!w) { v.push(`value from an unknown writer: ${safeJson(e)}`); continue; }
    if (e.value.n >= w.sent) v.push(`value never sent: ${safeJson(e)}`);
    const id = ident(e.value);
    count.set(id, (count.get(id) ?? 0) + 1);
    seqOf.set(id, e.seq);
  }
  for (const [id, k] of count) if (k > 1) v.push(`${id} is present ${k} times`);
  for (const w of writers) {
    // Acked: present exactly once (and, for WebSocket acks, with the seq it was broadcast with).
    const acked = w.kind === 'ws' ? [...w.acked.keys()] : [...w.acked];
    const missing = acked.filter((n) => !count.has(`${w.name}:${n}`));
    if (missing.length) v.push(`${w.name}: ${missing.length} acknowledged pushes missing (n = ${summarizeSeqs(missing.sort((a, b) => a - b))})`);
    if (w.kind === 'ws') {
      for (const [n, seq] of w.acked) {
        const s = seqOf.get(`${w.name}:${n}`);
        if (s !== undefined && s !== seq) v.push(`${w.name}:${n} was broadcast with seq ${seq} but is retained with seq ${s}`);
      }
    }
    // Error texts.
    const texts = w.kind === 'ws' ? w.errors : w.errors.filter((e) => !e.text.startsWith('transport:')).map((e) => e.text);
    for (const t of texts) if (classify(t) === 'bad') v.push(`${w.name}: an error says neither "not applied" nor "unknown": ${t}`);
    if (w.kind === 'http') {
      for (const e of w.errors) {
        if (e.cls === 'not_applied' && count.has(`${w.name}:${e.n}`)) v.push(`${w.name}:${e.n} was answered "${e.text}" but is present`);
      }
    }
    // A WebSocket writer whose connection stayed up got an answer for each
    // push (checked by the caller: settled()); pushes present without a
    // broadcast back are at most its "unknown" errors.
    if (w.kind === 'ws' && !w.closed) {
      const presentUnacked = [...count.keys()].filter((id) => id.startsWith(`${w.name}:`) && !w.acked.has(Number(id.slice(w.name.length + 1))));
      const unknown = w.errors.filter((t) => classify(t) === 'unknown').length;
      if (presentUnacked.length > unknown) v.push(`${w.name}: ${presentUnacked.length} pushes present without a broadcast back, but only ${unknown} "unknown" errors`);
    }
    // A connection's own pushes are applied in the order it sent them.
    const ns = data.filter((e) => e.value && e.value.w === w.name).map((e) => e.value.n);
    for (let i = 1; i < ns.length; i++) {
      if (ns[i] <= ns[i - 1]) { v.push(`${w.name}: its pushes are retained out of order (${ns[i - 1]} before ${ns[i]})`); break; }
    }
  }
  return v;
}

// Waits until the given nodes replay the same stream with no violations;
// fails with the violations of the last look.
async function waitGoodReplay(cluster, room, key, writers, ids, timeoutMs = 30000) {
  let lastViolations = [];
  let data;
  try {
    data = await waitSameReplay(cluster, room, key, {
      ids, timeoutMs, until: (d) => (lastViolations = streamViolations(d, writers)).length === 0,
    });
  } catch (e) {
    assert.fail(`${e.message}\nviolations of the last common replay:\n  ${lastViolations.slice(0, 30).join('\n  ')}`);
  }
  return data;
}

// n appends on one connection, each acknowledged before the next (so each
// lands in its own log entry), returned as [{value, seq}].
async function pushSequential(c, key, values) {
  const out = [];
  for (const value of values) {
    c.push(key, value);
    const m = await c.next((x) => x.type === 'push' && x.key === key && JSON.stringify(x.value) === JSON.stringify(value), 15000, `the broadcast back of ${safeJson(value)}`);
    out.push({ value: m.value, seq: m.seq });
  }
  return out;
}

// Pipelined appends on one subscribed connection; waits for every broadcast
// back (the acks), returns [{value, seq}] in ack order.
async function pushPipelined(c, key, values, timeoutMs = 20000) {
  for (const v of values) c.push(key, v);
  const want = new Set(values.map((v) => JSON.stringify(v)));
  const out = [];
  while (want.size) {
    const m = await c.next((x) => x.type === 'push' && x.key === key && want.has(JSON.stringify(x.value)), timeoutMs, `${want.size} more broadcasts back on ${key}`);
    want.delete(JSON.stringify(m.value));
    out.push({ value: m.value, seq: m.seq });
  }
  return out;
}

// Last seq of a room whose messages are all appends on the given keys.
async function lastSeq(cluster, id, room, keys) {
  let max = 0;
  for (const k of keys) for (const e of await replay(cluster.socketUrl(id, room), k)) max = Math.max(max, e.seq);
  return max;
}

// ---- 3 voters -------------------------------------------------------------------

describe('cluster of 3 voters', () => {
  const ctx = useCluster({ name: 'c3', size: 3, args: SNAP_ARGS });
  const streams = []; // {room, keys} written by the tests, checked again after the full restart

  test('a room created on one node is visible on the others', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (const creator of c.ids) {
      const info = await createRoom(c.base(creator));
      assert.match(info.socket_url, new RegExp(`^ws://127\\.0\\.0\\.1:${c.httpPorts[creator - 1]}/room/${info.room}/connect$`),
        `socket_url of a room created on node ${creator}`);
      for (const id of c.ids) {
        await waitFor(async () => (await httpRequest(`${c.base(id)}/room/${info.room}`, { timeoutMs: 2000 })).status === 200,
          10000, `room ${info.room} (created on node ${creator}) to be visible on node ${id}`);
        const r = await httpRequest(`${c.base(id)}/room/${info.room}`);
        assert.equal(r.json().room, info.room);
      }
    }
    // An unknown room stays unknown everywhere.
    for (const id of c.ids) {
      assert.equal((await httpRequest(`${c.base(id)}/room/NoSuchRoomAnywhere0123456789ab`)).status, 404);
    }
  });

  test('subscribers on all nodes see identical pushes, seqs and order while 3 writers push to all nodes', T, async () => {
    const c = ctx.cluster;
    const { room } = await createRoom(c.base(1));
    await waitRoomEverywhere(c, room);
    const subs = [];
    for (const id of c.ids) {
      const s = await RawClient.connect(c.socketUrl(id, room), { label: `subscriber on node ${id}` });
      await s.get('k');
      subs.push(s);
    }
    const writers = [];
    for (const id of c.ids) writers.push(await RawClient.connect(c.socketUrl(id, room), { label: `writer on node ${id}` }));
    const N = 100;
    for (let n = 0; n < N; n++) writers.forEach((w, i) => w.push('k', { w: i + 1, n }));
    const got = [];
    for (const s of subs) {
      const list = [];
      for (let i = 0; i < N * writers.length; i++) {
        const m = await s.next((x) => x.type === 'push', 20000, `push ${i + 1}/${N * writers.length}`);
        list.push({ key: m.key, value: m.value, seq: m.seq });
      }
      got.push(list);
    }
    for (let i = 1; i < got.length; i++) {
      assert.deepEqual(got[i], got[0], `node ${i + 1}'s subscriber and node 1's saw different broadcasts`);
    }
    assert.deepEqual(got[0].map((m) => m.seq), Array.from({ length: N * writers.length }, (_, i) => i + 1), 'seqs 1..300 in order');
    for (let w = 1; w <= writers.length; w++) {
      assert.deepEqual(got[0].filter((m) => m.value.w === w).map((m) => m.value.n), Array.from({ length: N }, (_, i) => i),
        `writer ${w}'s pushes, once each, in its order`);
    }
    // And the retained stream is the same on every node.
    const data = await waitSameReplay(c, room, 'k', { ids: c.ids });
    assert.deepEqual(data, got[0].map(({ value, seq }) => ({ value, seq })));
    streams.push({ room, keys: ['k'] });
  });

  test('kill -9 of the leader under load: every acknowledged push is retained once, the same on both survivors', T, async (t) => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room);
    const writers = [];
    for (const id of c.ids) {
      writers.push(await new WsWriter(c, id, room, 'w', `ws${id}`, 8).open());
      writers.push(new HttpWriter(c, id, room, 'w', `http${id}`, 8));
    }
    const diag = () => {
      for (const w of writers) {
        process.stderr.write(`writer ${w.name} (node ${w.nodeId}): sent ${w.sent}, acked ${w.acked.size}, ${w.kind === 'ws' ? `connection ${w.closed ? `closed ${safeJson(w.c.closeInfo)}` : 'open'}, ` : ''}errors ${safeJson(w.errors.slice(0, 10), 2000)}\n`);
      }
    };
    ctx.onFailure.push(diag);
    let newLeader = null;
    try {
      for (const w of writers) w.start();
      await waitFor(() => writers.every((w) => w.ackCount() >= 20), 30000, 'every writer to have 20 acknowledged pushes');

      await c.kill9(leader);
      ctx.killed = leader;
      const survivors = c.ids.filter((id) => id !== leader);
      newLeader = await c.waitLeader({ ids: survivors, exclude: [leader] });
      assert.notEqual(newLeader, leader);

      // Pushes keep succeeding on the survivors.
      const live = writers.filter((w) => w.nodeId !== leader);
      const mark = new Map(live.map((w) => [w, w.sent]));
      await waitFor(() => live.every((w) => w.ackedFrom(mark.get(w)) >= 20), 30000,
        'every surviving writer to have 20 pushes acknowledged after the new leader was known');
    } finally {
      for (const w of writers) await w.stop();
    }
    const survivors = c.ids.filter((id) => id !== leader);
    const killedWs = writers.find((w) => w.kind === 'ws' && w.nodeId === leader);
    await waitFor(() => killedWs.closed, 10000, 'the killed node\'s WebSocket writer to see its connection close');
    // Writers on the survivors whose connection stayed open: every push of
    // theirs gets an answer. (One the server closed is checked like the killed
    // node's: its unacknowledged pushes have an unknown outcome.)
    const liveWs = writers.filter((w) => w.kind === 'ws' && w.nodeId !== leader && !w.closed);
    await waitFor(() => liveWs.every((w) => w.closed || w.settled()), 30000, 'an answer (broadcast back or error) to every push of the surviving WebSocket writers');

    const data = await waitGoodReplay(c, room, 'w', writers, survivors);
    assertIncreasingSeqs(data, 'replay after the failover');
    // What the surviving writers, subscribed all along, were broadcast is the
    // retained stream: same seqs, same values, same order.
    const bySeq = new Map(data.map((e) => [e.seq, JSON.stringify(e.value)]));
    for (const w of liveWs) {
      w.scan();
      assertIncreasingSeqs(w.seen, `broadcasts seen by ${w.name}`);
      for (const e of w.seen) {
        assert.equal(bySeq.get(e.seq), JSON.stringify(e.value), `${w.name} (node ${w.nodeId}) was broadcast seq ${e.seq} = ${safeJson(e.value)}, retained as ${bySeq.get(e.seq) ?? 'nothing'}`);
      }
    }
    // Something was acknowledged on every node, before and after the kill.
    for (const w of writers) assert.ok(w.ackCount() >= 20, `${w.name}: only ${w.ackCount()} acks`);
    t.diagnostic(`killed leader ${leader}, new leader ${newLeader}; ${data.length} retained; ${writers.map((w) => `${w.name} sent ${w.sent} acked ${w.acked.size} errors ${w.errors.length}`).join(', ')}`);
    ctx.onFailure.splice(ctx.onFailure.indexOf(diag), 1);
    ctx.room3 = room;
    streams.push({ room, keys: ['w'] });
  });

  test('the killed node restarts on its data dir and catches up (snapshot install)', T, async (t) => {
    const c = ctx.cluster;
    let down = ctx.killed;
    if (!down || c.running(down)) { // test 3 did not get as far as the kill
      down = await c.waitLeader();
      await c.kill9(down);
    }
    const survivors = c.ids.filter((id) => id !== down);
    const leader = await c.waitLeader({ ids: survivors });
    const room = ctx.room3 ?? (await createRoom(c.base(leader))).room;
    await waitRoomEverywhere(c, room, survivors);
    const before = await c.status(leader);
    // The room was created and reached every survivor: committed, applied
    // here, and within the leader's log.
    assert.ok(Number.isInteger(before.commit_index) && before.commit_index > 0 &&
      before.applied_index <= before.commit_index && before.commit_index <= before.last_index,
      `/cluster/status indexes: ${safeJson(before)}`);

    // Pushes acknowledged one at a time (one log entry each; on the leader,
    // where the ack comes at commit) until the log has grown well past
    // snapshot threshold + trailing: the leader no longer has the entries the
    // stopped node lacks, and must send it a snapshot.
    const seqWriter = await RawClient.connect(c.socketUrl(leader, room), { label: `sequential writer on node ${leader}` });
    await seqWriter.get('d');
    const need = 2 * (SNAPSHOT_THRESHOLD + SNAPSHOT_TRAILING);
    let i = 0;
    for (;;) {
      await pushSequential(seqWriter, 'd', [{ w: 'seq', n: i }]);
      i++;
      if (i % 20 === 0) {
        const st = await c.status(leader);
        if (st.commit_index - before.commit_index >= need) break;
      }
      assert.ok(i < 3000, `the commit index moved by less than ${need} in ${i} sequential pushes`);
    }
    const target = (await c.status(leader)).commit_index;
    t.diagnostic(`node ${down} down: ${i} sequential pushes moved the commit index ${before.commit_index} -> ${target}`);

    await c.restart(down);
    await waitFor(async () => (await c.status(down)).applied_index >= target, 30000,
      `node ${down}'s applied_index to reach ${target}`);
    for (const key of ['w', 'd']) await waitSameReplay(c, room, key, { ids: c.ids, timeoutMs: 30000 });

    // It takes part again: a push through it is acknowledged with the next seq
    // and broadcast everywhere.
    const last = await lastSeq(c, leader, room, ['w', 'd']);
    const watchers = [];
    for (const id of survivors) {
      const s = await RawClient.connect(c.socketUrl(id, room), { label: `watcher on node ${id}` });
      await s.get('d', last); // subscribed once its (empty) init is back
      watchers.push(s);
    }
    const back = await RawClient.connect(c.socketUrl(down, room), { label: `writer on restarted node ${down}` });
    await back.get('d');
    const [ack] = await pushPipelined(back, 'd', [{ w: 'back', n: 0 }]);
    assert.equal(ack.seq, last + 1, 'the push on the restarted node got the next seq');
    for (const s of watchers) {
      const m = await s.next('push', 10000);
      assert.deepEqual({ value: m.value, seq: m.seq }, ack);
    }
    await waitSameReplay(c, room, 'd', { ids: c.ids, until: (d) => d.at(-1)?.seq === ack.seq });
    streams.push({ room, keys: ['d'] });
  });

  test('SIGSTOP of the leader: a new one is elected, the old one steps down after SIGCONT, no seq is used twice', T, async (t) => {
    const c = ctx.cluster;
    if (c.ids.some((id) => !c.running(id))) await c.startAll();
    const old = await c.waitLeader({ ids: c.ids });
    const others = c.ids.filter((id) => id !== old);
    const { room } = await createRoom(c.base(others[0]));
    await waitRoomEverywhere(c, room, c.ids);

    const subs = new Map();
    for (const id of c.ids) {
      const s = await RawClient.connect(c.socketUrl(id, room), { label: `subscriber on node ${id}` });
      await s.get('s');
      subs.set(id, s);
    }
    // A writer on the node that is about to freeze, and one on each other.
    const zombie = await new WsWriter(c, old, room, 's', 'zombie').open();
    const ws = await Promise.all(others.map((id) => new WsWriter(c, id, room, 's', `ws${id}`).open()));
    const http = others.map((id) => new HttpWriter(c, id, room, 's', `http${id}`));
    const zombieHttp = new HttpWriter(c, old, room, 's', 'zombie-http');
    const writers = [zombie, zombieHttp, ...ws, ...http];

    const pre = await pushPipelined(ws[0].c, 's', [{ w: ws[0].name, n: ws[0].sent++ }]);
    assert.equal(pre.length, 1);

    c.sigstop(old);
    let zombieHttpDone;
    try {
      // Pushes to the frozen leader: they sit in its socket buffers.
      for (let k = 0; k < 5; k++) zombie.pushOne();
      zombieHttpDone = zombieHttp.pushOne();
      const fresh = await c.waitLeader({ ids: others, exclude: [old], timeoutMs: 30000 });
      ctx.newLeader = fresh;
      // The majority side keeps accepting pushes.
      for (const w of ws) for (let k = 0; k < 10; k++) w.pushOne();
      for (const h of http) for (let k = 0; k < 5; k++) await h.pushOne();
      await waitFor(() => ws.every((w) => w.settled()), 20000, 'answers to the pushes on the majority side');
      for (const w of ws) assert.equal(w.errors.length, 0, `${w.name}: errors with a live majority and a leader: ${w.errors}`);
      for (const h of http) assert.equal(h.errors.length, 0, `${h.name}: errors with a live majority and a leader: ${safeJson(h.errors)}`);
    } finally {
      c.sigcont(old);
    }
    // The old leader steps down and follows the new one.
    const fresh = ctx.newLeader;
    let lastSt = null;
    await waitFor(async () => {
      lastSt = await c.status(old);
      return lastSt.role !== 'leader' && lastSt.leader && lastSt.leader.id === fresh;
    }, 20000, `node ${old} (the old leader) to step down and follow node ${fresh}`).catch((e) => {
      assert.fail(`${e.message}; its last status: ${safeJson(lastSt)}`);
    });
    assert.equal(await c.waitLeader({ ids: c.ids }), fresh, 'all three agree on the new leader');

    // The pushes sent to the frozen node got answers, and it accepts pushes again.
    await zombieHttpDone;
    await waitFor(() => zombie.settled(), 30000, 'an answer to every push sent to the frozen node');
    for (let k = 0; k < 5; k++) zombie.pushOne();
    await waitFor(() => zombie.settled(), 20000, 'answers to pushes on the old leader, now a follower');
    assert.ok(zombie.acked.size >= 5, `pushes on the old leader after it stepped down were not applied: ${safeJson(zombie.errors)}`);

    const data = await waitGoodReplay(c, room, 's', writers, c.ids);
    t.diagnostic(`froze leader ${old}, new leader ${fresh}; ${data.length} retained; pushes to the frozen node: ${zombie.acked.size} acked, errors ${safeJson([...zombie.errors, ...zombieHttp.errors.map((e) => e.text)])}`);
    // Every broadcast any node ever sent has the seq the message is retained with.
    const bySeq = new Map(data.map((e) => [e.seq, JSON.stringify(e.value)]));
    const observers = [...[...subs].map(([id, s]) => [`subscriber on node ${id}`, s]), ...writers.filter((w) => w.kind === 'ws').map((w) => [w.name, w.c])];
    for (const [label, s] of observers) {
      const seen = s.log.map((e) => e.msg).filter((m) => m.type === 'push' && m.key === 's');
      assertIncreasingSeqs(seen, label);
      for (const m of seen) {
        assert.equal(bySeq.get(m.seq), JSON.stringify(m.value),
          `${label} saw seq ${m.seq} = ${safeJson(m.value)}, but seq ${m.seq} is retained as ${bySeq.get(m.seq) ?? 'nothing'}`);
      }
    }
    streams.push({ room, keys: ['s'] });
  });

  test('a follower frozen past the snapshot window: after the snapshot install its subscriber gets every push it missed, once, in order', T, async (t) => {
    const c = ctx.cluster;
    if (c.ids.some((id) => !c.isLive(id))) await c.startAll();
    const leader = await c.waitLeader({ ids: c.ids });
    const f = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room, c.ids);
    const sub = await RawClient.connect(c.socketUrl(f, room), { label: `subscriber on node ${f}` });
    await sub.get('f', 0);
    const w = await RawClient.connect(c.socketUrl(leader, room), { label: `writer on leader ${leader}` });
    await w.get('f');
    const acked = await pushSequential(w, 'f', [{ w: 'f', n: 0 }]);
    const seen = await sub.next('push', 10000);
    assert.deepEqual({ value: seen.value, seq: seen.seq }, acked[0], 'the subscriber follows before the freeze');
    const restoresBefore = (c.node(f).output().match(/event=restore /g) ?? []).length;

    // Frozen while the log moves well past snapshot threshold + trailing, one
    // entry per push: the leader no longer has what node f lacks.
    const before = await c.status(leader);
    c.sigstop(f);
    const need = 2 * (SNAPSHOT_THRESHOLD + SNAPSHOT_TRAILING);
    for (let n = 1; ; n++) {
      acked.push(...await pushSequential(w, 'f', [{ w: 'f', n }]));
      if (n % 20 === 0 && (await c.status(leader)).commit_index - before.commit_index >= need) break;
      assert.ok(n < 3000, 'the commit index did not move');
    }
    c.sigcont(f);
    const target = (await c.status(leader)).commit_index;
    await waitFor(async () => (await c.status(f)).applied_index >= target, 30000, `node ${f} to apply up to ${target}`);
    const restores = (c.node(f).output().match(/event=restore /g) ?? []).length;
    assert.ok(restores > restoresBefore, `node ${f} caught up without a snapshot install: the test proves nothing`);

    // Everything after the first push reaches the subscriber, from the
    // catch-up init and from broadcasts after it, each exactly once.
    const got = [];
    while (got.length < acked.length - 1) {
      const m = await sub.next((x) => x.key === 'f' && (x.type === 'push' || x.type === 'init'), 15000,
        `the missed pushes on node ${f} (${got.length} of ${acked.length - 1} so far)`);
      if (m.type === 'init') got.push(...m.data.map((e) => ({ value: e.value, seq: e.seq })));
      else got.push({ value: m.value, seq: m.seq });
    }
    assert.deepEqual(got, acked.slice(1), 'what the subscriber on the frozen node received after the install');
    const extra = await sub.roundTrip();
    assert.deepEqual(extra.filter((m) => m.key === 'f'), [], 'nothing repeated after the catch-up');
    t.diagnostic(`node ${f}: ${acked.length - 1} pushes while frozen, delivered after the snapshot install`);
  });

  test('SIGTERM of all nodes (exit 0) and a restart of all: every retained message is there, seqs continue', T, async () => {
    const c = ctx.cluster;
    if (c.ids.some((id) => !c.running(id))) await c.startAll();
    await c.waitLeader({ ids: c.ids });
    const { room } = await createRoom(c.base(2));
    await waitRoomEverywhere(c, room, c.ids);
    const w = await RawClient.connect(c.socketUrl(3, room), { label: 'writer' });
    await w.get('t');
    const acked = await pushPipelined(w, 't', Array.from({ length: 30 }, (_, n) => ({ w: 'term', n })));
    assert.deepEqual(acked.map((e) => e.seq).sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => i + 1));
    await w.close();
    streams.push({ room, keys: ['t'] });

    const expected = [];
    for (const s of streams) {
      for (const key of s.keys) expected.push({ room: s.room, key, data: await waitSameReplay(c, s.room, key, { ids: c.ids }) });
    }
    const lastSeqs = new Map();
    for (const s of streams) lastSeqs.set(s.room, Math.max(0, ...expected.filter((e) => e.room === s.room).flatMap((e) => e.data.map((x) => x.seq))));

    await c.stopAll(); // asserts exit code 0 for each
    await c.startAll();
    await c.waitLeader({ ids: c.ids });
    for (const e of expected) {
      for (const id of c.ids) {
        await waitFor(async () => JSON.stringify(await replay(c.socketUrl(id, e.room), e.key)) === JSON.stringify(e.data), 20000,
          `node ${id} to replay ${e.room}/${e.key} as before the restart (${e.data.length} entries)`).catch(async (err) => {
          assert.deepEqual(await replay(c.socketUrl(id, e.room), e.key), e.data, err.message);
        });
      }
    }
    // Seqs continue in every room: the next push gets last seq + 1.
    let node = 1;
    for (const [r, last] of lastSeqs) {
      const id = (node++ % c.size) + 1;
      const p = await RawClient.connect(c.socketUrl(id, r), { label: `post-restart writer on node ${id}` });
      await p.get('after-restart');
      const [ack] = await pushPipelined(p, 'after-restart', [{ w: 'after-restart', n: 0 }]);
      assert.equal(ack.seq, last + 1, `room ${r}: the first push after the restart`);
      await p.close();
    }
  });

  test('a follower restarted on a new HTTP port: the node directory follows, and writes through it reach the leader', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader({ ids: c.ids });
    const leader = (await c.status(1)).leader.id;
    const f = c.ids.find((id) => id !== leader);
    const d = c.node(f);
    await c.stop(f);
    const [port] = await freePorts(1);
    d.httpPort = port;
    c.httpPorts[f - 1] = port;
    await c.restart(f);
    // Every node's directory (hence /cluster/status) shows the new address.
    for (const id of c.ids) {
      await waitFor(async () => {
        const st = await c.status(id);
        return st.nodes.find((n) => n.id === f)?.http === `127.0.0.1:${port}`;
      }, 10000, `node ${id} to list node ${f} at its new HTTP port ${port}`);
    }
    // The restarted follower forwards to the leader as before.
    const { room } = await createRoom(c.base(f));
    const w = await RawClient.connect(c.socketUrl(f, room), { label: 'writer on the moved node' });
    await w.get('moved');
    const acked = await pushPipelined(w, 'moved', Array.from({ length: 10 }, (_, n) => ({ w: 'moved', n })));
    assert.equal(acked.length, 10);
    await w.close();
    await waitSameReplay(c, room, 'moved', { ids: c.ids });
  });
});

// ---- behind a load balancer ---------------------------------------------------------

const HAPROXY = findHaproxy();

describe('a follower\'s link to the leader', () => {
  // A short request deadline: the sweep (every second) cuts within ~1.3 s
  // any connection of a client that has not sent a request.
  const ctx = useCluster({ name: 'fwdlink', args: ['--header-timeout', '300'] });

  test('stays up under writes: the follower does not take its own link for a client (request deadline, per-address count)', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const f = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(f));
    // Writes through the follower for ~3 s, ten times the deadline: the
    // window in which a link taken for a client was cut (not a wait for a
    // condition; the link has to stay up all along).
    for (let i = 0; i < 30; i++) {
      const r = await httpSend(c.base(f), room, { type: 'push', key: 'k', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200, `push ${i} through follower ${f}: ${r.text}`);
      await sleep(100);
    }
    const m = (await httpRequest(`${c.base(f)}/metrics`)).text;
    assert.match(m, /^driftd_forward_link_up 1$/m, 'the link is up');
    assert.match(m, /^driftd_forward_resets_total 0$/m, `follower ${f}'s link to the leader was dropped:\n${c.node(f).tail(3000)}`);
    assert.doesNotMatch(c.node(f).output(), /event=request_timeout/, 'a request deadline fired on the follower');
  });
});

describe('cluster behind haproxy, real driftdb client', () => {
  if (!HAPROXY) {
    test('driftdb client through haproxy survives kill -9 of the node behind its connection', {
      skip: 'haproxy binary not found (apt-get install haproxy, or set HAPROXY_BIN)',
    }, () => {});
    return;
  }
  const ctx = useCluster({ name: 'lb', size: 3 });
  let hap = null;
  ctx.onFailure.push((t) => hap?.dump(t.fullName ?? t.name));

  // `balance first`: haproxy sends every new connection to the first server in
  // declaration order that passes its health check. The servers are declared
  // leader first, so the client's connection lands on the leader (checked
  // through the balancer with GET /cluster/status, which answers the id of
  // the node that served it); killing that node kills the node behind the
  // connection, and the reconnection lands on the next healthy node.
  test('driftdb client through haproxy survives kill -9 of the node behind its connection', T, async (t) => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const order = [leader, ...c.ids.filter((id) => id !== leader)];
    const [front] = await freePorts(1);
    const cfg = haproxyConfig(front, order.map((id) => ({ name: `node${id}`, addr: c.httpAddr(id) })), { balance: 'first' });
    hap = await Haproxy.start(HAPROXY, cfg, front);
    t.after(() => hap.stop());

    const served = () => httpRequest(`${hap.base}/cluster/status`, { timeoutMs: 2000 }).then((r) => (r.status === 200 ? r.json().id : null));
    await waitFor(async () => (await served()) === leader, 15000, `haproxy to route to node ${leader} (first server)`);

    const { room, socket_url: url } = await createRoom(hap.base);
    assert.ok(url.startsWith(`ws://127.0.0.1:${front}/`), `socket_url ${url} does not go through the balancer`);
    await waitRoomEverywhere(c, room, c.ids);

    const db = await dbConnect(url);
    // DbConnection reconnects on its own (1 s after a close) but drops the
    // promise of that connect(): keep its rejection from being unhandled.
    const origConnect = db.connect.bind(db);
    db.connect = (u, cbor) => { const p = origConnect(u, cbor); p.catch(() => {}); return p; };
    const msgs = recordDb(db);
    const view = []; // {seq, value} as the client's subscription delivers them
    db.subscribe('k', (e) => view.push({ value: e.value, seq: e.seq }));
    const lastSeen = () => (view.length ? view.at(-1).seq : 0);
    // driftdb does not re-subscribe after a reconnect: the application does,
    // replaying from the last seq it has.
    let reconnects = 0;
    let downs = 0;
    const replays = []; // {from, at}: the seq each re-subscription replayed from, and view.length then
    db.statusListener.addListener((s) => {
      if (!s.connected) { downs++; return; }
      reconnects++;
      replays.push({ from: lastSeen(), at: view.length });
      db.send({ type: 'get', key: 'k', seq: lastSeen() });
    });
    await waitFor(() => msgs.some((m) => m.type === 'init' && m.key === 'k'), 10000, 'init through haproxy');

    const sent = []; // {n, conn}: conn is the socket it went out on, or 'queued'
    const push = (n) => {
      const open = db.status.connected && db.connection && db.connection.readyState === 1;
      sent.push({ n, conn: open ? db.connection : 'queued' });
      db.send({ type: 'push', key: 'k', value: { n }, action: { type: 'append' } });
    };
    const inView = (n) => view.some((e) => e.value && e.value.n === n);

    // Phase 1: acknowledged pushes through the balancer.
    for (let n = 0; n < 30; n++) push(n);
    await waitFor(() => inView(29), 15000, 'the first 30 pushes back through haproxy');
    assert.deepEqual(view.map((e) => e.value.n), Array.from({ length: 30 }, (_, i) => i));

    // Phase 2: steady pushes; kill -9 the node behind the connection mid-way.
    const firstConn = db.connection;
    const TOTAL = 200;
    let n = 30;
    const pacer = setInterval(() => { if (n < TOTAL) push(n++); }, 10);
    try {
      await waitFor(() => n >= 60 && inView(50), 15000, 'pushes acknowledged before the kill');
      await c.kill9(order[0]);
      await waitFor(() => downs > 0, 10000, 'the client to see its connection close');
      await waitFor(() => reconnects > 0 && db.status.connected, 30000, 'the driftdb client to reconnect through haproxy');
      assert.notEqual(db.connection, firstConn);
      await waitFor(async () => { const id = await served(); return id !== null && id !== order[0]; }, 15000,
        'haproxy to route to a surviving node');
      await waitFor(() => n >= TOTAL, 30000, 'all pushes to be sent');
    } finally {
      clearInterval(pacer);
    }
    push('end');
    await waitFor(() => inView('end'), 30000, 'the last push to come back after the reconnection');

    const errors = msgs.filter((m) => m.type === 'error').map((m) => String(m.message));
    t.diagnostic(`killed node ${order[0]}; ${view.length} messages in the client's view; ${sent.filter((s) => s.conn === 'queued').length} pushes queued while disconnected; errors ${safeJson(errors)}`);
    for (const e of errors) assert.notEqual(classify(e), 'bad', `error neither "not applied" nor "unknown": ${e}`);
    const notApplied = errors.filter((e) => classify(e) === 'not_applied').length;

    // The client's reconstructed stream: strictly increasing seqs, no message twice.
    const twice = view.filter((e, i) => view.findIndex((x) => x.seq === e.seq) !== i);
    if (twice.length) {
      const inits = msgs.filter((m) => m.type === 'init').map((m) => ({ key: m.key, seqs: summarizeSeqs(m.data.map((x) => x.seq)) }));
      assert.fail(`the client received seq(s) ${twice.map((e) => e.seq).join(', ')} twice (${safeJson(twice)}). `
        + `It re-subscribed with get from seq ${safeJson(replays)}; its inits: ${safeJson(inits)}. `
        + 'A node that answers `get` from a seq it has not applied yet must not later broadcast seqs up to it to that subscriber.');
    }
    assertIncreasingSeqs(view, 'the client\'s view');
    const ns = view.map((e) => e.value.n);
    assert.equal(new Set(ns).size, ns.length, `a message is in the client's view twice: ${safeJson(ns, 3000)}`);
    // It is exactly what the surviving nodes retain.
    const survivors = c.ids.filter((id) => id !== order[0]);
    const data = await waitSameReplay(c, room, 'k', { ids: survivors });
    assert.deepEqual(view, data, 'the client\'s view (pushes + replay from its last seq) differs from the retained stream');
    // Everything acknowledged before the kill, and everything sent after the
    // client noticed it, is there (unless refused with "not applied").
    const mustHave = sent.filter((s) => s.conn === 'queued' || s.conn !== firstConn).map((s) => s.n);
    const missing = mustHave.filter((x) => !inView(x));
    assert.ok(missing.length <= notApplied, `pushes sent after the reconnection are missing: ${safeJson(missing)} (errors: ${safeJson(errors)})`);
    for (let x = 0; x <= 50; x++) assert.ok(inView(x), `push ${x}, acknowledged before the kill, is missing`);
  });
});

// ---- 5 voters -----------------------------------------------------------------------

describe('cluster of 5 voters', () => {
  const ctx = useCluster({ name: 'c5', size: 5 });

  test('survives kill -9 of two nodes, the leader among them: pushes still succeed, the three survivors agree', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader({ ids: c.ids });
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room, c.ids);
    const ws = new Map();
    for (const id of c.ids) {
      const s = await RawClient.connect(c.socketUrl(id, room), { label: `writer on node ${id}` });
      await s.get('f');
      ws.set(id, s);
    }
    const acked = [];
    for (const id of c.ids) acked.push(...await pushPipelined(ws.get(id), 'f', Array.from({ length: 10 }, (_, n) => ({ w: id, n, phase: 1 }))));

    const victim = c.ids.find((id) => id !== leader);
    await Promise.all([c.kill9(leader), c.kill9(victim)]);
    const survivors = c.ids.filter((id) => id !== leader && id !== victim);
    const fresh = await c.waitLeader({ ids: survivors, exclude: [leader, victim], timeoutMs: 30000 });
    assert.ok(survivors.includes(fresh));

    const phase2 = await Promise.all(survivors.map((id) => pushPipelined(ws.get(id), 'f', Array.from({ length: 20 }, (_, n) => ({ w: id, n, phase: 2 })), 30000)));
    for (const a of phase2) acked.push(...a);

    const data = await waitSameReplay(c, room, 'f', { ids: survivors, until: (d) => d.length >= acked.length });
    assertIncreasingSeqs(data, 'replay on the survivors');
    const retained = new Map(data.map((e) => [JSON.stringify(e.value), e.seq]));
    assert.equal(retained.size, data.length, 'a message is retained twice');
    for (const a of acked) {
      assert.equal(retained.get(JSON.stringify(a.value)), a.seq, `acknowledged ${safeJson(a.value)} (seq ${a.seq}) is not retained with its seq`);
    }
    assert.equal(data.length, acked.length, 'retained messages that were never acknowledged (every push here was)');
    // And every survivor's status names the same leader.
    for (const id of survivors) assert.equal((await c.status(id)).leader.id, fresh);
  });
});
