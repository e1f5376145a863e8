// Cluster harness: N real driftd processes (3 or 5 voters) on 127.0.0.1, free
// ports, one temporary data dir per node, built on lib/harness.mjs's Driftd.
//
// Nodes are addressed by their raft id, 1..N (the --id they run with), never by
// a 0-based index: cluster.kill9(2) kills the process started with --id 2.
//
//   const c = await Cluster.start({ size: 3, args: ['--snapshot-threshold', '64'] });
//   const leader = await c.waitLeader();        // all live nodes agree on it
//   await c.kill9(leader);                      // SIGKILL, exit awaited
//   await c.waitLeader();                       // the survivors elect another
//   await c.restart(leader);                    // same ports and data dir
//   c.sigstop(2); ... c.sigcont(2);             // freeze / thaw a process
//   await c.stop(3);                            // SIGTERM, exit code 0 asserted
//   await c.stopAll();                          // SIGTERM all live, exit 0 each
//   await c.startAll();                         // relaunch all stopped, together
//   await c.status(1);                          // GET /cluster/status JSON
//   c.dump('why');                              // every node's captured output
//   await c.dispose();                          // stop (clean), remove data dirs
//
// useCluster(opts) wires one into the enclosing describe(): started in
// before(), each node's output printed after a failed test (with the live
// nodes' /cluster/status), clients closed after each test, stopped cleanly
// (exit code 0 asserted) and removed in after().
//
// Contract assumed of driftd (see the cluster command line in the docs):
//   driftd --id N --http H:P --raft H:P --data DIR --bootstrap 1=H:P,2=H:P,...
//          --election-timeout MS --heartbeat MS [other flags]
// with the same --bootstrap list on every node (it only acts on an empty data
// dir, so it is passed again on restarts); GET /healthz answers 200 once the
// node knows a leader and has caught up with it (launch() waits for it, so
// nodes of a fresh cluster are launched together: none is healthy before a
// majority runs); GET /cluster/status answers {"id","role","leader":{"id",
// "http"}|null,"term","commit_index","applied_index","ready","nodes":[...]}.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { before, after, afterEach } from 'node:test';

import {
  adminTokens, Driftd, freePort, httpRequest, waitFor, withTimeout, closeAllClients, RawClient,
} from './harness.mjs';

export const ELECTION_TIMEOUT_MS = 500;
export const HEARTBEAT_MS = 50;

// Distinct free loopback ports (freePort() closes its probe socket, so two
// calls may return the same number: ask again until n are distinct).
export async function freePorts(n) {
  const ports = new Set();
  for (let tries = 0; ports.size < n; tries++) {
    if (tries > n * 20) throw new Error(`could not find ${n} distinct free ports`);
    ports.add(await freePort());
  }
  return [...ports];
}

export class Cluster {
  // size: number of voters (all bootstrapped). args: extra driftd flags for
  // every node. electionTimeoutMs / heartbeatMs: raft timing flags (null:
  // not passed). startTimeoutMs: per node, until /healthz answers 200.
  // key: give every node a fresh cluster key (--cluster-key-file), as a
  // closed cluster runs; false: no key (the loopback-only open mode).
  // token: with a key, also a generated admin token (--admin-token-file),
  // which driftctl runs of the tests pick up (lib/admin.mjs).
  // prepare(cluster): runs once the data dirs exist, before any node starts
  // (e.g. to mount a small tmpfs on one of them).
  static async start({
    size = 3, args = [], name = 'cluster', electionTimeoutMs = ELECTION_TIMEOUT_MS,
    heartbeatMs = HEARTBEAT_MS, startTimeoutMs = 30000, key = true, token = true, prepare = null,
    nodeArgs = null,
  } = {}) {
    const c = new Cluster(name, size);
    await c._init({ args, electionTimeoutMs, heartbeatMs, startTimeoutMs, key, token, prepare, nodeArgs });
    return c;
  }

  constructor(name, size) {
    this.name = name;
    this.size = size;
    this.ids = Array.from({ length: size }, (_, i) => i + 1);
    this.nodes = new Map(); // id -> Driftd
    this.frozen = new Set(); // ids currently SIGSTOPped
    this.root = null;
  }

  async _init({ args, electionTimeoutMs, heartbeatMs, startTimeoutMs, key, token, prepare, nodeArgs }) {
    this.root = await fsp.mkdtemp(path.join(os.tmpdir(), `driftd-${this.name}-`));
    this.keyFile = null;
    this.adminToken = null;
    this.tokenFile = null;
    if (key) {
      this.keyHex = crypto.randomBytes(32).toString('hex');
      this.keyFile = path.join(this.root, 'cluster.key');
      await fsp.writeFile(this.keyFile, `${this.keyHex}\n`, { mode: 0o600 });
      // A keyed cluster's admin API needs a token; tests that bring their
      // own (--admin-token in args) keep theirs.
      if (token && !args.includes('--admin-token')) {
        this.adminToken = crypto.randomBytes(16).toString('hex');
        this.tokenFile = path.join(this.root, 'admin.token');
        await fsp.writeFile(this.tokenFile, `${this.adminToken}\n`, { mode: 0o600 });
      }
    }
    const ports = await freePorts(this.size * 2);
    this.httpPorts = ports.slice(0, this.size);
    this.raftPorts = ports.slice(this.size);
    this.bootstrap = this.ids.map((id) => `${id}=127.0.0.1:${this.raftPorts[id - 1]}`).join(',');
    const common = ['--bootstrap', this.bootstrap];
    if (this.keyFile) common.push('--cluster-key-file', this.keyFile);
    if (this.tokenFile) common.push('--admin-token-file', this.tokenFile);
    if (this.adminToken) {
      for (const p of this.httpPorts) adminTokens.set(`http://127.0.0.1:${p}`, this.adminToken);
    }
    if (electionTimeoutMs != null) common.push('--election-timeout', String(electionTimeoutMs));
    if (heartbeatMs != null) common.push('--heartbeat', String(heartbeatMs));
    common.push(...args);
    this.args = common;
    for (const id of this.ids) await fsp.mkdir(this.dataDir(id));
    if (prepare) await prepare(this);
    // Launched together: a node is healthy only once a majority runs.
    const results = await Promise.allSettled(this.ids.map(async (id) => {
      const d = await Driftd.start({
        id,
        name: `${this.name}-node${id}`,
        httpPort: this.httpPorts[id - 1],
        raftPort: this.raftPorts[id - 1],
        dataDir: this.dataDir(id),
        args: nodeArgs ? [...common, ...nodeArgs(id)] : common,
        startTimeoutMs,
      });
      this.nodes.set(id, d);
    }));
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) {
      const msg = failed.map((r) => r.reason?.message ?? String(r.reason)).join('\n');
      await this.dispose({ clean: false }).catch(() => {});
      throw new Error(`${this.name}: ${failed.length} of ${this.size} nodes did not start:\n${msg}`);
    }
  }

  dataDir(id) { return path.join(this.root, `node${id}`); }

  node(id) {
    const d = this.nodes.get(id);
    if (!d) throw new Error(`${this.name}: no node ${id} (ids are 1..${this.size})`);
    return d;
  }

  base(id) { return this.node(id).base; }
  wsBase(id) { return this.node(id).wsBase; }
  httpAddr(id) { return `127.0.0.1:${this.httpPorts[id - 1]}`; }
  raftAddr(id) { return `127.0.0.1:${this.raftPorts[id - 1]}`; }
  socketUrl(id, room) { return `${this.wsBase(id)}/room/${room}/connect`; }

  running(id) { return this.node(id).running; }
  isFrozen(id) { return this.frozen.has(id); }
  // Running and not SIGSTOPped: expected to answer requests.
  isLive(id) { return this.running(id) && !this.frozen.has(id); }
  liveIds() { return this.ids.filter((id) => this.isLive(id)); }

  async kill9(id) {
    const d = this.node(id);
    this.frozen.delete(id); // SIGKILL ends a stopped process too
    return d.kill9();
  }

  sigstop(id) {
    const d = this.node(id);
    assert.ok(d.running, `${d.name} is not running`);
    process.kill(d.pid, 'SIGSTOP');
    this.frozen.add(id);
  }

  sigcont(id) {
    const d = this.node(id);
    if (d.running) process.kill(d.pid, 'SIGCONT');
    this.frozen.delete(id);
  }

  // SIGTERM, waits for the exit, asserts exit code 0.
  async stop(id, timeoutMs = 20000) {
    if (this.frozen.has(id)) this.sigcont(id);
    return this.node(id).stopClean(timeoutMs);
  }

  // Starts a stopped / killed node again on its ports and data dir (stops it
  // cleanly first if it runs). Waits for /healthz 200.
  async restart(id) {
    if (this.frozen.has(id)) this.sigcont(id);
    const d = this.node(id);
    if (d.running) await d.stopClean();
    await d.launch();
  }

  // SIGTERM to every running node at once; asserts each exits with code 0.
  async stopAll(timeoutMs = 20000) {
    const ids = this.ids.filter((id) => this.running(id));
    const results = await Promise.allSettled(ids.map((id) => this.stop(id, timeoutMs)));
    const failed = results.map((r, i) => [ids[i], r]).filter(([, r]) => r.status === 'rejected');
    if (failed.length) {
      throw new Error(failed.map(([id, r]) => `node ${id}: ${r.reason?.message ?? r.reason}`).join('\n'));
    }
  }

  // Launches every node that is not running, all at once (a majority must
  // run before any is healthy), and waits for each /healthz 200.
  async startAll() {
    const ids = this.ids.filter((id) => !this.running(id));
    const results = await Promise.allSettled(ids.map((id) => this.node(id).launch()));
    const failed = results.map((r, i) => [ids[i], r]).filter(([, r]) => r.status === 'rejected');
    if (failed.length) {
      throw new Error(failed.map(([id, r]) => `node ${id}: ${r.reason?.message ?? r.reason}`).join('\n'));
    }
  }

  // GET /cluster/status of a node, parsed. Throws on a non-200 answer.
  async status(id, timeoutMs = 2000) {
    const r = await httpRequest(`${this.base(id)}/cluster/status`, { timeoutMs });
    if (r.status !== 200) throw new Error(`node ${id}: GET /cluster/status answered ${r.status}: ${r.text.slice(0, 300)}`);
    return r.json();
  }

  // {id: status | Error} for the given nodes (default: the live ones).
  async statuses(ids = this.liveIds(), timeoutMs = 2000) {
    const out = {};
    await Promise.all(ids.map(async (id) => {
      try { out[id] = await this.status(id, timeoutMs); } catch (e) { out[id] = e; }
    }));
    return out;
  }

  // One look: the leader id every given node (default: live ones) reports,
  // provided they all report the same one, it is one of them, and it says it
  // is the leader. Else null.
  async leaderIndex(ids = this.liveIds()) {
    const st = await this.statuses(ids);
    let leader = null;
    for (const id of ids) {
      const s = st[id];
      if (s instanceof Error || !s || !s.leader || typeof s.leader.id !== 'number') return null;
      if (leader === null) leader = s.leader.id;
      else if (s.leader.id !== leader) return null;
    }
    if (leader === null || !ids.includes(leader)) return null;
    if (st[leader].role !== 'leader') return null;
    return leader;
  }

  // Polls until the given nodes (default: every live node) agree on one
  // leader among them; returns its id. exclude: ids that must not be it
  // (e.g. a node that was just killed or frozen).
  async waitLeader({ ids, exclude = [], timeoutMs = 20000 } = {}) {
    let last = null;
    try {
      return await waitFor(async () => {
        const set = ids ?? this.liveIds();
        const l = await this.leaderIndex(set);
        if (l === null) {
          last = await this.statuses(set, 1000).catch(() => null);
          return null;
        }
        return exclude.includes(l) ? null : l;
      }, timeoutMs, `${this.name}: nodes ${JSON.stringify(ids ?? this.liveIds())} to agree on a leader${exclude.length ? ` other than ${exclude}` : ''}`, 50);
    } catch (e) {
      e.message += `\nlast statuses: ${describeStatuses(last)}`;
      throw e;
    }
  }

  // Prints every node's captured output (and, if given, statuses).
  dump(label, statuses = null) {
    for (const id of this.ids) {
      const d = this.nodes.get(id);
      if (!d) continue;
      const state = this.frozen.has(id) ? 'SIGSTOPped' : d.running ? 'running' : `exited ${JSON.stringify(d.exitInfo)}`;
      process.stderr.write(`\n----- ${d.name} (${state}) output (test failed: ${label}) -----\n${d.tail(60000)}\n----- end of ${d.name} output -----\n`);
    }
    if (statuses) process.stderr.write(`\n----- ${this.name} /cluster/status of live nodes: ${describeStatuses(statuses)}\n`);
  }

  async dispose({ clean = true } = {}) {
    const errors = [];
    for (const id of [...this.frozen]) this.sigcont(id);
    await Promise.all([...this.nodes.values()].map(async (d) => {
      try { await d.dispose({ clean }); } catch (e) { errors.push(`${d.name}: ${e.message}`); }
    }));
    if (this.root) await fsp.rm(this.root, { recursive: true, force: true });
    if (errors.length) throw new Error(errors.join('\n'));
  }
}

export function describeStatuses(st) {
  if (!st) return 'none';
  return Object.entries(st).map(([id, s]) => `\n  node ${id}: ${s instanceof Error ? `error: ${s.message}` : JSON.stringify(s)}`).join('');
}

// Wires a Cluster into the enclosing describe(). ctx.cluster is the Cluster.
// ctx.onFailure: optional extra dumps (functions) for a failed test.
export function useCluster(opts = {}) {
  const ctx = { cluster: null, onFailure: [] };
  before(async () => {
    ctx.cluster = await Cluster.start(opts);
  });
  afterEach(async (t) => {
    // BB_DUMP=always: print the nodes' output after passing tests too.
    if ((!t.passed || process.env.BB_DUMP === 'always') && ctx.cluster) {
      const st = await ctx.cluster.statuses(ctx.cluster.liveIds(), 1000).catch(() => null);
      ctx.cluster.dump(t.fullName ?? t.name, st);
      for (const f of ctx.onFailure) { try { f(t); } catch { /* diagnostics only */ } }
    }
    await closeAllClients();
  });
  after(async () => {
    await closeAllClients();
    if (ctx.cluster) await ctx.cluster.dispose();
  });
  return ctx;
}

// ---- helpers for cluster tests ------------------------------------------------

// The retained stream of a key as a fresh `get` (seq 0) on the given socket URL
// replays it: [{value, seq}].
export async function replay(socketUrl, key, timeoutMs = 10000) {
  const c = await RawClient.connect(socketUrl, { label: `reader of ${key}` });
  try {
    const init = await c.get(key, 0, timeoutMs);
    return init.data;
  } finally {
    await c.close();
  }
}

// Polls until GET /room/ID answers 200 on every given node.
export async function waitRoomEverywhere(cluster, room, ids = cluster.liveIds(), timeoutMs = 10000) {
  for (const id of ids) {
    await waitFor(async () => (await httpRequest(`${cluster.base(id)}/room/${room}`, { timeoutMs: 2000 })).status === 200,
      timeoutMs, `room ${room} to be visible on node ${id}`);
  }
}

// Polls until every given node's replay of key is identical (and, when
// `until` is given, until(data) holds); returns the common data.
export async function waitSameReplay(cluster, room, key, { ids = cluster.liveIds(), until, timeoutMs = 20000 } = {}) {
  let last = null;
  try {
    return await waitFor(async () => {
      const all = await Promise.all(ids.map((id) => replay(cluster.socketUrl(id, room), key, 5000)));
      last = all;
      const first = JSON.stringify(all[0]);
      if (!all.every((d) => JSON.stringify(d) === first)) return null;
      if (until && !until(all[0])) return null;
      return all[0];
    }, timeoutMs, `nodes ${JSON.stringify(ids)} to replay the same ${key}${until ? ' (and the expected content)' : ''}`, 100);
  } catch (e) {
    if (last) {
      e.message += '\n' + last.map((d, i) => `node ${ids[i]}: ${d.length} entries, seqs ${summarizeSeqs(d.map((x) => x.seq))}`).join('\n');
    }
    throw e;
  }
}

export function summarizeSeqs(seqs) {
  if (seqs.length === 0) return '[]';
  const runs = [];
  let start = seqs[0];
  let prev = seqs[0];
  for (const s of seqs.slice(1)) {
    if (s === prev + 1) { prev = s; continue; }
    runs.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = s;
    prev = s;
  }
  runs.push(start === prev ? `${start}` : `${start}-${prev}`);
  const out = runs.join(',');
  return out.length > 400 ? `${out.slice(0, 400)}...` : out;
}

// Asserts seqs are unique and strictly increasing in order.
export function assertIncreasingSeqs(data, what) {
  for (let i = 1; i < data.length; i++) {
    assert.ok(data[i].seq > data[i - 1].seq,
      `${what}: seq ${data[i].seq} at position ${i} follows ${data[i - 1].seq} (seqs ${summarizeSeqs(data.map((x) => x.seq))})`);
  }
}


// ---- haproxy in front of a cluster ---------------------------------------------

// The haproxy binary: $HAPROXY_BIN, else `haproxy` on PATH or in /usr/sbin,
// /usr/local/sbin, /sbin (not on a non-root PATH). null when there is none.
export function findHaproxy() {
  const candidates = process.env.HAPROXY_BIN ? [process.env.HAPROXY_BIN] : [];
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']) {
    if (dir) candidates.push(path.join(dir, 'haproxy'));
  }
  for (const c of candidates) {
    const r = spawnSync(c, ['-v'], { encoding: 'utf8', timeout: 5000 });
    if (r.status === 0 && /HA-?Proxy/i.test(`${r.stdout}${r.stderr}`)) return c;
  }
  return null;
}

// A haproxy configuration: one HTTP frontend on 127.0.0.1:frontPort, one
// backend over servers [{name, addr: 'HOST:PORT'}] in that order.
// balance: 'first' sends every new connection to the first server (in
// declaration order) that is up, which makes "the node behind a client's
// connection" deterministic; 'roundrobin' / 'leastconn' for a real spread.
// Health checks: GET /healthz every 200 ms, 2 failures mark a server down,
// 2 successes bring it back. WebSocket: `timeout tunnel` covers an upgraded
// connection, so idle sockets are not cut after `timeout client/server`.
export function haproxyConfig(frontPort, servers, { balance = 'roundrobin' } = {}) {
  return [
    'global',
    '    maxconn 4096',
    '',
    'defaults',
    '    mode http',
    '    option redispatch 1',
    '    retries 3',
    '    timeout connect 1s',
    '    timeout client 30s',
    '    timeout server 30s',
    '    timeout http-request 10s',
    '    timeout tunnel 1h',
    '',
    'frontend driftd_in',
    `    bind 127.0.0.1:${frontPort}`,
    '    default_backend driftd_nodes',
    '',
    'backend driftd_nodes',
    `    balance ${balance}`,
    '    option httpchk GET /healthz',
    '    http-check expect status 200',
    '    default-server inter 200ms fall 2 rise 2',
    ...servers.map((s) => `    server ${s.name} ${s.addr} check`),
    '',
  ].join('\n');
}

const haproxies = new Set();
process.on('exit', () => {
  for (const h of haproxies) {
    if (h.proc && h.proc.exitCode === null && h.proc.signalCode === null) {
      try { process.kill(h.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
});

// haproxy -f CFG -db as a child process, output captured.
export class Haproxy {
  static async start(bin, config, frontPort) {
    const h = new Haproxy(bin, frontPort);
    h.dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-haproxy-'));
    h.cfgPath = path.join(h.dir, 'haproxy.cfg');
    await fsp.writeFile(h.cfgPath, config);
    const check = spawnSync(bin, ['-c', '-f', h.cfgPath], { encoding: 'utf8', timeout: 10000 });
    if (check.status !== 0) {
      throw new Error(`haproxy -c rejects the config (exit ${check.status}):\n${check.stdout}${check.stderr}\n${config}`);
    }
    h.output = `===== ${bin} -f ${h.cfgPath} -db\n${config}\n`;
    h.proc = spawn(bin, ['-f', h.cfgPath, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxies.add(h);
    h.proc.stdout.on('data', (d) => { h.output += d.toString(); });
    h.proc.stderr.on('data', (d) => { h.output += d.toString(); });
    h.exited = new Promise((resolve) => h.proc.on('exit', (code, signal) => {
      h.exitInfo = { code, signal };
      h.output += `\n===== haproxy exited: code=${code} signal=${signal}\n`;
      resolve(h.exitInfo);
    }));
    await waitFor(async () => {
      if (h.exitInfo) throw new Error(`haproxy exited: ${h.output}`);
      const r = await httpRequest(`${h.base}/healthz`, { timeoutMs: 1000 });
      return r.status === 200;
    }, 15000, `haproxy on ${frontPort} to pass /healthz through`);
    return h;
  }

  constructor(bin, frontPort) {
    this.bin = bin;
    this.port = frontPort;
    this.exitInfo = null;
  }

  get base() { return `http://127.0.0.1:${this.port}`; }

  dump(label) {
    const s = this.output.length > 30000 ? `...${this.output.slice(-30000)}` : this.output;
    process.stderr.write(`\n----- haproxy output (test failed: ${label}) -----\n${s}\n----- end of haproxy output -----\n`);
  }

  async stop() {
    try {
      if (this.proc && !this.exitInfo) {
        this.proc.kill('SIGTERM');
        await withTimeout(this.exited, 10000, 'haproxy to exit').catch(async () => {
          this.proc.kill('SIGKILL');
          await this.exited;
        });
      }
    } finally {
      haproxies.delete(this);
      if (this.dir) await fsp.rm(this.dir, { recursive: true, force: true });
    }
  }
}
