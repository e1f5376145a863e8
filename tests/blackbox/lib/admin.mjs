// Membership harness: driftctl as a child process, nodes started with --join
// and added to a lib/cluster.mjs Cluster, steady writers with acknowledgement
// bookkeeping, and the check that no acknowledged push was lost or doubled.
//
//   const r = await driftctl(['add', '4', c.raftAddr(4)], { server: c.base(1) });
//   r.code, r.stdout, r.stderr, r.json()
//   await ctlOk([...], opts);                       // asserts exit 0
//   await ctlFails([...], opts, { code: 1, match: /quorum/ });
//   const d = await startJoiner(c, 4);              // --join, HTTP up, not healthy yet
//   await ctlOk(['add', '4', c.raftAddr(4)], { server: c.base(1) });
//   await d.waitJoined();                           // /healthz 200
//   await joinNode(c, 5, { server: c.base(1) });    // all of the above
//   await runCluster(t, { size: 3 }, async (c) => { ... });   // dumps on failure
//
// Joiners become ordinary members of the Cluster object (c.node(4),
// c.kill9(4), c.stop(4), c.dispose() all work): startJoiner registers them in
// its ids / nodes / ports.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';

import {
  adminTokens, Driftd, httpRequest, httpSend, waitFor, RawClient, closeAllClients, safeJson, sleep,
} from './harness.mjs';
import {
  Cluster, freePorts, waitSameReplay, summarizeSeqs, ELECTION_TIMEOUT_MS, HEARTBEAT_MS,
} from './cluster.mjs';

export const DRIFTCTL_BIN = process.env.DRIFTCTL_BIN;

export function requireCtl() {
  if (!DRIFTCTL_BIN) throw new Error('DRIFTCTL_BIN is not set: DRIFTCTL_BIN=build/driftctl DRIFTD_BIN=build/driftd node --test FILE');
  if (!fs.existsSync(DRIFTCTL_BIN)) throw new Error(`DRIFTCTL_BIN=${DRIFTCTL_BIN} does not exist`);
  return DRIFTCTL_BIN;
}

// ---- driftctl -------------------------------------------------------------------

const ctlLog = []; // every run of the current test, for the failure dump

function describeRun(r) {
  return `driftctl ${r.argv.join(' ')} -> exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''} after ${r.ms} ms\n` +
    `  stdout: ${JSON.stringify(r.stdout.slice(0, 2000))}\n  stderr: ${JSON.stringify(r.stderr.slice(0, 2000))}`;
}

// Runs driftctl; resolves {code, signal, stdout, stderr, argv, ms, json()}.
// server / token become --server / --token; the caller's DRIFTCTL_SERVER and
// DRIFTCTL_TOKEN are cleared unless env sets them. Killed after timeoutMs.
export function driftctl(args, { server, token, env = {}, timeoutMs = 90000 } = {}) {
  const argv = [];
  if (server) argv.push('--server', server);
  // The cluster's generated token unless the test decides (token or env).
  if (token === undefined && env.DRIFTCTL_TOKEN === undefined) token = adminTokens.get(server);
  if (token) argv.push('--token', token);
  argv.push(...args.map(String));
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(requireCtl(), argv, {
      env: { ...process.env, DRIFTCTL_SERVER: '', DRIFTCTL_TOKEN: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = {
        code, signal, stdout, stderr, argv, ms: Date.now() - t0,
        json() {
          try { return JSON.parse(stdout); } catch (e) {
            throw new Error(`driftctl ${argv.join(' ')}: stdout is not JSON (${e.message}): ${JSON.stringify(stdout.slice(0, 500))}`);
          }
        },
      };
      ctlLog.push(r);
      if (ctlLog.length > 200) ctlLog.shift();
      resolve(r);
    });
  });
}

export function dumpCtlLog(label) {
  process.stderr.write(`\n----- driftctl runs (test failed: ${label}) -----\n${ctlLog.map(describeRun).join('\n')}\n----- end of driftctl runs -----\n`);
}

// Exit 0, nothing on stderr; returns the run.
export async function ctlOk(args, opts = {}) {
  const r = await driftctl(args, opts);
  assert.equal(r.code, 0, `expected exit 0:\n${describeRun(r)}`);
  return r;
}

// Exit `code` (1 unless given) and one line "driftctl: ..." on stderr
// matching `match` (for exit 2 a usage hint may follow). Returns the run.
export async function ctlFails(args, opts = {}, { code = 1, match } = {}) {
  const r = await driftctl(args, opts);
  assert.equal(r.code, code, `expected exit ${code}:\n${describeRun(r)}`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 1 && lines[0].startsWith('driftctl: '), `stderr must start with "driftctl: ":\n${describeRun(r)}`);
  if (code === 1) assert.equal(lines.length, 1, `a failure is one line on stderr:\n${describeRun(r)}`);
  if (match) assert.match(lines[0], match, describeRun(r));
  return r;
}

// `driftctl --json status` through a node, parsed.
export async function ctlStatus(server, opts = {}) {
  const r = await ctlOk(['--json', 'status'], { server, ...opts });
  return r.json();
}

export function rolesOf(st) {
  const out = {};
  for (const n of st.nodes ?? []) out[n.id] = n.role;
  return out;
}

export function idsWithRole(st, role) {
  return (st.nodes ?? []).filter((n) => n.role === role).map((n) => n.id).sort((a, b) => a - b);
}

// Polls (through `server`, with driftctl) until the voters are exactly
// `voters`, the standbys exactly `standbys` (when given) and a leader is
// known. Returns the last status.
export async function waitMembers(server, { voters, standbys, timeoutMs = 20000, token } = {}) {
  let last = null;
  const want = [...voters].sort((a, b) => a - b);
  try {
    return await waitFor(async () => {
      const r = await driftctl(['--json', 'status'], { server, token });
      if (r.code !== 0) return null;
      last = r.json();
      if (JSON.stringify(idsWithRole(last, 'voter')) !== JSON.stringify(want)) return null;
      if (standbys && JSON.stringify(idsWithRole(last, 'standby')) !== JSON.stringify([...standbys].sort((a, b) => a - b))) return null;
      return last.leader && typeof last.leader.id === 'number' ? last : null;
    }, timeoutMs, `voters ${JSON.stringify(want)}${standbys ? ` and standbys ${JSON.stringify(standbys)}` : ''} with a leader, as ${server} reports`, 100);
  } catch (e) {
    e.message += `\nlast status: ${safeJson(last, 3000)}`;
    throw e;
  }
}

// ---- nodes started with --join --------------------------------------------------

const joiners = new Set();
process.on('exit', () => {
  for (const d of joiners) {
    if (d.proc && d.proc.exitCode === null && d.proc.signalCode === null) {
      try { process.kill(d.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
});

// A Driftd whose first launch only waits for its HTTP listener: /healthz
// answers 503 until the node is added to a cluster that has a leader.
export class JoinDriftd extends Driftd {
  async waitHealthy(timeoutMs = 20000) {
    if (this.joined) return super.waitHealthy(timeoutMs);
    await waitFor(async () => {
      if (this.exitInfo) throw new Error(`${this.name} exited (code=${this.exitInfo.code} signal=${this.exitInfo.signal})\n${this.tail()}`);
      const r = await httpRequest(`${this.base}/healthz`, { timeoutMs: 1000 });
      return r.status === 503 || r.status === 200;
    }, timeoutMs, `${this.name} (--join) to answer /healthz`, 50);
    return undefined;
  }

  // After `driftctl add`: waits for /healthz 200.
  async waitJoined(timeoutMs = 30000) {
    this.joined = true;
    await super.waitHealthy(timeoutMs);
  }
}

// Starts node `id` with --join (same raft timing as the cluster) on fresh
// ports and a data dir under the cluster's root, and registers it in the
// cluster. Returns the JoinDriftd (running, not yet a member).
export async function startJoiner(cluster, id, {
  args = [], electionTimeoutMs = ELECTION_TIMEOUT_MS, heartbeatMs = HEARTBEAT_MS, startTimeoutMs = 20000,
} = {}) {
  assert.ok(!cluster.nodes.has(id), `${cluster.name} already has a node ${id}`);
  const inUse = new Set([...(cluster.httpPorts ?? []), ...(cluster.raftPorts ?? [])]);
  let ports;
  do { ports = await freePorts(2); } while (ports.some((p) => inUse.has(p)));
  const [httpPort, raftPort] = ports;
  const dataDir = cluster.dataDir(id);
  await fsp.mkdir(dataDir, { recursive: true });
  const common = ['--join'];
  if (cluster.keyFile) common.push('--cluster-key-file', cluster.keyFile);
  if (cluster.tokenFile) common.push('--admin-token-file', cluster.tokenFile);
  if (electionTimeoutMs != null) common.push('--election-timeout', String(electionTimeoutMs));
  if (heartbeatMs != null) common.push('--heartbeat', String(heartbeatMs));
  const d = new JoinDriftd({ id, name: `${cluster.name}-node${id}`, args: [...common, ...args], startTimeoutMs });
  d.httpPort = httpPort;
  d.raftPort = raftPort;
  d.dataDir = dataDir;
  d.ownDataDir = false;
  cluster.nodes.set(id, d);
  if (!cluster.ids.includes(id)) cluster.ids.push(id);
  cluster.httpPorts[id - 1] = httpPort;
  if (cluster.adminToken) adminTokens.set(`http://127.0.0.1:${httpPort}`, cluster.adminToken);
  cluster.raftPorts[id - 1] = raftPort;
  joiners.add(d);
  await d.launch();
  return d;
}

// Starts node id with --join, adds it with driftctl through `server`
// (voter unless standby), waits until it is healthy. Returns the run.
export async function joinNode(cluster, id, { server, standby = false, token, args } = {}) {
  const d = await startJoiner(cluster, id, { args });
  const r = await ctlOk(['add', id, cluster.raftAddr(id), ...(standby ? ['--standby'] : [])], { server, token });
  await d.waitJoined();
  // Its address in the directory, as its own view and the leader's show.
  await waitFor(async () => {
    const st = await cluster.status(id);
    const me = st.nodes.find((n) => n.id === id);
    if (!me || typeof me.http !== 'string' || !st.leader || typeof st.leader.id !== 'number') return false;
    const ls = await cluster.status(st.leader.id);
    return ls.nodes.some((n) => n.id === id && typeof n.http === 'string');
  }, 20000, `node ${id} to publish its HTTP address`, 50);
  return r;
}

// Polls until every node of ids (default: the live ones) agrees on a leader
// and lists an HTTP address for every member: the node directory is
// complete (nodes publish their address once they know a leader).
export async function waitDirectory(cluster, ids = cluster.liveIds(), timeoutMs = 20000) {
  await cluster.waitLeader({ ids, timeoutMs });
  let last = null;
  await waitFor(async () => {
    last = await cluster.statuses(ids);
    return ids.every((id) => {
      const s = last[id];
      return !(s instanceof Error) && s.leader && s.leader.http && s.nodes.every((n) => typeof n.http === 'string');
    });
  }, timeoutMs, `nodes ${JSON.stringify(ids)} to list every member's HTTP address`, 50)
    .catch((e) => { e.message += `\nlast statuses: ${safeJson(last, 4000)}`; throw e; });
}

// Starts a Cluster, waits for its leader and complete node directory, runs
// fn(cluster), and on failure prints every node's
// output, the live nodes' status and the test's driftctl runs. Always
// closes clients and disposes of the cluster (clean SIGTERM, exit 0).
export async function runCluster(t, opts, fn) {
  ctlLog.length = 0;
  const c = await Cluster.start({ name: 'members', ...opts });
  let failure = null;
  try {
    await waitDirectory(c);
    await fn(c);
  } catch (e) {
    failure = e;
    const st = await c.statuses(c.liveIds(), 1000).catch(() => null);
    c.dump(t.name, st);
    dumpCtlLog(t.name);
  }
  await closeAllClients();
  if (failure) {
    await c.dispose({ clean: false }).catch(() => {});
    throw failure;
  }
  try {
    await c.dispose();
  } catch (e) {
    c.dump(`${t.name} (shutdown)`);
    throw e;
  }
}

// ---- writers --------------------------------------------------------------------

// "not_applied" | "unknown" | "bad" for an error text (docs/protocol.md,
// cluster behaviour).
export function classify(text) {
  if (/not applied/i.test(text)) return 'not_applied';
  if (/unknown/i.test(text)) return 'unknown';
  return 'bad';
}

// POST /room/ID/send, one push at a time, periodMs between answers. Records
// the time of every acknowledgement (200, not an error body).
export class HttpWriter {
  constructor(cluster, nodeId, room, key, name, periodMs = 15) {
    Object.assign(this, { cluster, nodeId, room, key, name, periodMs });
    this.kind = 'http';
    this.sent = 0;
    this.acked = new Set();
    this.ackTimes = []; // Date.now() of each acknowledgement, in order
    this.errors = []; // {n, cls, text}
    this.stopped = false;
    this.done = null;
  }

  async pushOne() {
    const n = this.sent++;
    try {
      const r = await httpSend(this.cluster.base(this.nodeId), this.room,
        { type: 'push', key: this.key, value: { w: this.name, n }, action: { type: 'append' } }, { timeoutMs: 20000 });
      let body = null;
      try { body = JSON.parse(r.text); } catch { /* not JSON */ }
      if (r.status === 200 && !(body && body.type === 'error')) {
        this.acked.add(n);
        this.ackTimes.push(Date.now());
      } else {
        const text = body && typeof body.message === 'string' ? body.message : r.text;
        this.errors.push({ n, cls: classify(text), text: `HTTP ${r.status}: ${text}` });
      }
    } catch (e) {
      this.errors.push({ n, cls: 'unknown', text: `transport: ${e.message}` });
    }
  }

  start() {
    this.done = (async () => {
      while (!this.stopped) {
        await this.pushOne();
        if (!this.cluster.running(this.nodeId)) break;
        await sleep(this.periodMs); // pacing, not waiting for a condition
      }
    })();
    return this;
  }

  async stop() {
    this.stopped = true;
    await this.done;
  }

  ackCount() { return this.acked.size; }
  ackedFrom(n0) { let k = 0; for (const n of this.acked) if (n >= n0) k++; return k; }
  settled() { return true; }
  describe() { return `${this.name} (http, node ${this.nodeId}): sent ${this.sent}, acked ${this.acked.size}, errors ${safeJson(this.errors.slice(0, 8), 1500)}`; }
}

// A WebSocket writer: subscribed to the key (get first), pushes every
// periodMs; an ack is its own push broadcast back.
export class WsWriter {
  constructor(cluster, nodeId, room, key, name, periodMs = 15) {
    Object.assign(this, { cluster, nodeId, room, key, name, periodMs });
    this.kind = 'ws';
    this.sent = 0;
    this.acked = new Map(); // n -> seq
    this.errors = [];
    this.scanned = 0;
    this.timer = null;
  }

  async open() {
    this.c = await RawClient.connect(this.cluster.socketUrl(this.nodeId, this.room), { label: this.name });
    await this.c.get(this.key);
    this.scanned = this.c.log.length;
    return this;
  }

  get closed() { return !!this.c.closeInfo; }

  start() {
    this.timer = setInterval(() => {
      if (this.closed) { this.stop(); return; }
      const n = this.sent++;
      this.c.push(this.key, { w: this.name, n });
    }, this.periodMs);
    return this;
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
        if (m.value && m.value.w === this.name) this.acked.set(m.value.n, m.seq);
      } else if (m.type === 'init' && m.key === this.key && Array.isArray(m.data)) {
        // After a snapshot install on this node, the pushes folded into the
        // snapshot reach subscribers as an init with the entries after the
        // last seq they had (net__ws_on_restored), as the driftdb client
        // takes them: own pushes among them are answered there.
        for (const e of m.data) {
          if (e.value && e.value.w === this.name) this.acked.set(e.value.n, e.seq);
        }
      } else if (m.type === 'error') {
        this.errors.push(String(m.message));
      }
    }
    this.c.queue = []; // everything is in c.log
    return this;
  }

  ackCount() { return this.scan().acked.size; }
  ackedFrom(n0) { this.scan(); let k = 0; for (const n of this.acked.keys()) if (n >= n0) k++; return k; }
  // Every push has its answer: a broadcast back or an error.
  settled() { this.scan(); return this.closed || this.acked.size + this.errors.length >= this.sent; }
  describe() { this.scan(); return `${this.name} (ws, node ${this.nodeId}): sent ${this.sent}, acked ${this.acked.size}, closed ${safeJson(this.c.closeInfo)}, errors ${safeJson(this.errors.slice(0, 8), 1500)}`; }
}

// Violations of "every acknowledged push is retained exactly once, nothing
// twice, nothing invented, each writer's pushes in its order, a push
// answered 'not applied' absent" in a replay [{value, seq}].
export function streamViolations(data, writers) {
  const v = [];
  const byName = new Map(writers.map((w) => [w.name, w]));
  const count = new Map();
  const seqOf = new Map();
  for (let i = 0; i < data.length; i++) {
    const e = data[i];
    if (i > 0 && !(e.seq > data[i - 1].seq)) v.push(`seq ${e.seq} at position ${i} follows ${data[i - 1].seq}`);
    const w = e.value && byName.get(e.value.w);
    if (!w || typeof e.value.n !== 'number') { v.push(`foreign value ${safeJson(e)}`); continue; }
    if (e.value.n >= w.sent) v.push(`value never sent: ${safeJson(e)}`);
    const id = `${e.value.w}:${e.value.n}`;
    count.set(id, (count.get(id) ?? 0) + 1);
    seqOf.set(id, e.seq);
  }
  for (const [id, k] of count) if (k > 1) v.push(`${id} is present ${k} times`);
  for (const w of writers) {
    const acked = w.kind === 'ws' ? [...w.scan().acked.keys()] : [...w.acked];
    const missing = acked.filter((n) => !count.has(`${w.name}:${n}`)).sort((a, b) => a - b);
    if (missing.length) v.push(`${w.name}: ${missing.length} acknowledged pushes missing (n = ${summarizeSeqs(missing)})`);
    if (w.kind === 'ws') {
      for (const [n, seq] of w.acked) {
        const s = seqOf.get(`${w.name}:${n}`);
        if (s !== undefined && s !== seq) v.push(`${w.name}:${n} was broadcast with seq ${seq} but is retained with seq ${s}`);
      }
      for (const t of w.errors) if (classify(t) === 'bad') v.push(`${w.name}: an error says neither "not applied" nor "unknown": ${t}`);
    } else {
      for (const e of w.errors) {
        if (e.cls === 'not_applied' && count.has(`${w.name}:${e.n}`)) v.push(`${w.name}:${e.n} was answered "${e.text}" but is present`);
        if (e.cls === 'bad' && !e.text.startsWith('transport:')) v.push(`${w.name}: an error says neither "not applied" nor "unknown": ${e.text}`);
      }
    }
    const ns = data.filter((e) => e.value && e.value.w === w.name).map((e) => e.value.n);
    for (let i = 1; i < ns.length; i++) {
      if (ns[i] <= ns[i - 1]) { v.push(`${w.name}: its pushes are retained out of order (${ns[i - 1]} before ${ns[i]})`); break; }
    }
  }
  return v;
}

// Waits until nodes `ids` replay the same stream of room/key with no
// violations; returns it.
export async function waitGoodReplay(cluster, room, key, writers, ids, timeoutMs = 30000) {
  let last = [];
  try {
    return await waitSameReplay(cluster, room, key, {
      ids, timeoutMs, until: (d) => (last = streamViolations(d, writers)).length === 0,
    });
  } catch (e) {
    assert.fail(`${e.message}\nviolations of the last common replay:\n  ${last.slice(0, 30).join('\n  ')}\nwriters:\n  ${writers.map((w) => w.describe()).join('\n  ')}`);
  }
  return null;
}

// Stops writers (WebSocket ones: waits until each push is answered).
export async function stopWriters(writers, timeoutMs = 30000) {
  for (const w of writers) await w.stop();
  const ws = writers.filter((w) => w.kind === 'ws');
  await waitFor(() => ws.every((w) => w.settled()), timeoutMs,
    `an answer to every push of ${ws.map((w) => w.name).join(', ')}`);
}

// Polls until every writer has `n` more acknowledgements than at the call.
export async function waitProgress(writers, n = 10, timeoutMs = 30000, what = '') {
  const mark = new Map(writers.map((w) => [w, w.sent]));
  await waitFor(() => writers.every((w) => w.ackedFrom(mark.get(w)) >= n), timeoutMs,
    `${n} new acknowledged pushes from each of ${writers.map((w) => w.name).join(', ')}${what ? ` (${what})` : ''}`, 50)
    .catch((e) => { e.message += `\n  ${writers.map((w) => w.describe()).join('\n  ')}`; throw e; });
}

// The longest time between consecutive acknowledgements of an HTTP writer
// inside [from, to] (the first ack after `from` counts from `from`).
export function longestGap(times, from, to) {
  let prev = from;
  let max = 0;
  for (const t of times) {
    if (t < from) continue;
    if (t > to) { max = Math.max(max, t - prev); prev = t; break; }
    max = Math.max(max, t - prev);
    prev = t;
  }
  if (prev < to) max = Math.max(max, to - prev);
  return max;
}
