// The chaos suite's network and processes: one network namespace per driftd
// node, veth pairs into a bridge that lives in the runner's own (unshared)
// network namespace, nftables rules inside each node's namespace for
// partitions and loss, tc tbf for a slow link.
//
//   runner netns (unshare --net)      node netns drc-TAG-1 ... drc-TAG-K
//   chbr 10.77.0.1/24  <-- veth -->   veth0 10.77.0.11, 10.77.0.12, ...
//
// Clients (the workload) run in the runner's namespace and reach every node
// at 10.77.0.1X:8080 from 10.77.0.1. The nftables rules only ever name peer
// node addresses, so "isolate the leader" cuts raft and forward links while
// clients still reach it. Nothing here routes anywhere but the bridge: the
// runner's namespace has no other interface than lo and the bridge.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export const SUBNET = '10.77.0';
export const HUB_ADDR = `${SUBNET}.1`;
export const HTTP_PORT = 8080;
export const RAFT_PORT = 9080;
const NS_PREFIX = 'drc-';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs argv; resolves {code, stdout, stderr}; rejects when check and code != 0.
export function run(argv, { input, check = true, timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = { code, signal, stdout: out, stderr: err };
      if (check && code !== 0) reject(new Error(`${argv.join(' ')}: exit ${code ?? signal}: ${err.trim()}`));
      else resolve(r);
    });
    if (input !== undefined) p.stdin.end(input); else p.stdin.end();
  });
}

function runSync(argv) {
  return spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 10000 });
}

// Why this machine cannot run the suite, or null when it can.
export function unsupportedReason() {
  if (process.platform !== 'linux') return 'not Linux';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not root (ip netns needs root; CI runs as root)';
  for (const [bin, args] of [['ip', ['netns', 'list']], ['nft', ['--version']], ['tc', ['-V']], ['unshare', ['--version']]]) {
    const r = runSync([bin, ...args]);
    if (r.error || r.status !== 0) return `${bin} unavailable (${r.error?.message ?? r.stderr?.trim()}); scripts/deps.sh installs iproute2, nftables, util-linux`;
  }
  return null;
}

// Deletes namespaces left by runs whose process is gone (a runner killed
// with SIGKILL cannot clean up after itself).
export function reapStale() {
  const r = runSync(['ip', 'netns', 'list']);
  for (const line of (r.stdout ?? '').split('\n')) {
    const name = line.split(' ')[0];
    const m = /^drc-(\d+)-\d+$/.exec(name);
    if (!m) continue;
    let alive = true;
    try { process.kill(Number(m[1]), 0); } catch { alive = false; }
    if (!alive) runSync(['ip', 'netns', 'del', name]);
  }
}

export class ChaosNet {
  // slots: how many node namespaces (1..slots).
  constructor(slots) {
    this.slots = slots;
    this.tag = String(process.pid);
    this.made = [];
    this.bridge = false;
  }

  ns(slot) { return `${NS_PREFIX}${this.tag}-${slot}`; }
  addr(slot) { return `${SUBNET}.${10 + slot}`; }

  async setup() {
    reapStale();
    await run(['ip', 'link', 'set', 'lo', 'up']);
    await run(['ip', 'link', 'add', 'chbr', 'type', 'bridge']);
    this.bridge = true;
    await run(['ip', 'addr', 'add', `${HUB_ADDR}/24`, 'dev', 'chbr']);
    await run(['ip', 'link', 'set', 'chbr', 'up']);
    for (let s = 1; s <= this.slots; s++) {
      const ns = this.ns(s);
      await run(['ip', 'netns', 'add', ns]);
      this.made.push(ns);
      await run(['ip', 'link', 'add', `vh${s}`, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', ns]);
      await run(['ip', 'link', 'set', `vh${s}`, 'master', 'chbr', 'up']);
      await run(['ip', '-n', ns, 'addr', 'add', `${this.addr(s)}/24`, 'dev', 'veth0']);
      await run(['ip', '-n', ns, 'link', 'set', 'veth0', 'up']);
      await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await run(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], {
        input: 'table inet chaos {\n'
          + '  chain input { type filter hook input priority 0; policy accept; }\n'
          + '  chain output { type filter hook output priority 0; policy accept; }\n'
          + '}\n',
      });
    }
  }

  // Replaces slot's rules. input / output: nft rule bodies, e.g.
  // 'ip saddr 10.77.0.12 drop'.
  async setRules(slot, { input = [], output = [] } = {}) {
    const lines = ['flush chain inet chaos input', 'flush chain inet chaos output'];
    for (const r of input) lines.push(`add rule inet chaos input ${r}`);
    for (const r of output) lines.push(`add rule inet chaos output ${r}`);
    await run(['ip', 'netns', 'exec', this.ns(slot), 'nft', '-f', '-'], { input: `${lines.join('\n')}\n` });
  }

  // The current rules of a slot, as nft lists them (for the records).
  async listRules(slot) {
    const r = await run(['ip', 'netns', 'exec', this.ns(slot), 'nft', 'list', 'table', 'inet', 'chaos'], { check: false });
    return r.stdout;
  }

  // A slow link: tbf on both ends of slot's veth (node egress and bridge
  // egress towards the node). on=false removes it.
  async setSlow(slot, on, { rate = '256kbit', burst = '8kb', latency = '300ms' } = {}) {
    if (on) {
      await run(['ip', 'netns', 'exec', this.ns(slot), 'tc', 'qdisc', 'replace', 'dev', 'veth0', 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency]);
      await run(['tc', 'qdisc', 'replace', 'dev', `vh${slot}`, 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency]);
    } else {
      await run(['ip', 'netns', 'exec', this.ns(slot), 'tc', 'qdisc', 'del', 'dev', 'veth0', 'root'], { check: false });
      await run(['tc', 'qdisc', 'del', 'dev', `vh${slot}`, 'root'], { check: false });
    }
  }

  async healAll() {
    for (let s = 1; s <= this.slots; s++) {
      await this.setRules(s);
      await this.setSlow(s, false);
    }
  }

  // Synchronous: also usable from an exit handler.
  teardownSync() {
    for (const ns of this.made) runSync(['ip', 'netns', 'del', ns]);
    this.made = [];
    if (this.bridge) runSync(['ip', 'link', 'del', 'chbr']);
    this.bridge = false;
  }
}

// ---- driftd processes inside the namespaces ------------------------------------

const liveProcs = new Set();
// Exits nobody asked for (a crash, an assertion, a sanitizer report):
// [{id, code, signal, at, log}].
export const unexpectedExits = [];
export function killAllSync() {
  for (const p of liveProcs) {
    try { process.kill(p.pid, 'SIGCONT'); } catch { /* gone */ }
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

export function httpGet(url, { method = 'GET', body, timeoutMs = 3000 } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const headers = payload === undefined ? {} : { 'Content-Type': 'application/json' };
    const req = http.request(url, { method, agent: false, headers }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export class ChaosNode {
  // slot: namespace slot; id: raft id; common: flags for every node.
  constructor({ net, slot, id, bin, root, common, join = false }) {
    this.net = net;
    this.slot = slot;
    this.id = id;
    this.bin = bin;
    this.dataDir = path.join(root, `node${id}`);
    this.logFile = path.join(root, `node${id}.log`);
    this.common = common;
    this.join = join;
    this.proc = null;
    this.exit = null;
    this.frozen = false;
    this.starts = 0;
    fs.mkdirSync(this.dataDir, { recursive: true });
  }

  get addr() { return this.net.addr(this.slot); }
  get base() { return `http://${this.addr}:${HTTP_PORT}`; }
  get wsBase() { return `ws://${this.addr}:${HTTP_PORT}`; }
  get raftAddr() { return `${this.addr}:${RAFT_PORT}`; }
  get running() { return this.proc !== null && this.exit === null; }
  get live() { return this.running && !this.frozen; }

  launch() {
    if (this.running) throw new Error(`node ${this.id} already running`);
    this.starts += 1;
    const argv = ['netns', 'exec', this.net.ns(this.slot), this.bin,
      '--id', String(this.id), '--http', `${this.addr}:${HTTP_PORT}`,
      '--raft', this.raftAddr, '--data', this.dataDir, ...(this.join ? ['--join'] : []), ...this.common];
    const fd = fs.openSync(this.logFile, 'a');
    fs.writeSync(fd, `\n===== ${new Date().toISOString()} node ${this.id} start #${this.starts}: ip ${argv.join(' ')}\n`);
    // ip netns exec execs driftd in place: the child's pid is driftd's.
    const p = spawn('ip', argv, { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.proc = p;
    this.exit = null;
    this.frozen = false;
    this.expectExit = false;
    liveProcs.add(p);
    this.exited = new Promise((resolve) => p.on('exit', (code, signal) => {
      liveProcs.delete(p);
      this.exit = { code, signal };
      if (!this.expectExit) unexpectedExits.push({ id: this.id, code, signal, at: Date.now(), log: this.logFile });
      fs.appendFileSync(this.logFile, `\n===== ${new Date().toISOString()} node ${this.id} exited code=${code} signal=${signal}\n`);
      resolve(this.exit);
    }));
  }

  async waitHealthy(timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.exit) throw new Error(`node ${this.id} exited (${JSON.stringify(this.exit)}) before /healthz answered 200; see ${this.logFile}`);
      try {
        const r = await httpGet(`${this.base}/healthz`, { timeoutMs: 1000 });
        if (r.status === 200) return;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error(`node ${this.id}: /healthz not 200 within ${timeoutMs} ms; see ${this.logFile}`);
      await sleep(100);
    }
  }

  async kill9() {
    if (!this.running) return;
    this.expectExit = true;
    this.proc.kill('SIGKILL');
    this.frozen = false;
    await this.exited;
  }

  sigstop() { if (this.running) { this.proc.kill('SIGSTOP'); this.frozen = true; } }
  sigcont() { if (this.running) this.proc.kill('SIGCONT'); this.frozen = false; }

  async stop(timeoutMs = 20000) {
    if (!this.running) return this.exit;
    this.sigcont();
    this.expectExit = true;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => { if (this.running) this.proc.kill('SIGKILL'); }, timeoutMs);
    const e = await this.exited;
    clearTimeout(t);
    return e;
  }

  async status(timeoutMs = 1500) {
    const r = await httpGet(`${this.base}/cluster/status`, { timeoutMs });
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    return JSON.parse(r.text);
  }
}
