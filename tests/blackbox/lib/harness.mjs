// Black-box harness: real driftd processes on 127.0.0.1, real sockets.
//
// - Driftd: start / stop (SIGTERM, exit code checked) / kill9 / restart on the
//   same data dir and ports, output captured and printed when a test fails.
// - useDriftd(): the usual describe() wiring (before: start; afterEach: dump
//   the server output if the test failed and close the test's clients;
//   after: clean stop, exit code 0 asserted, data dir removed).
// - RawClient: a `ws` socket with a decoded message queue and deadlines.
// - httpRequest / createRoom / waitFor / dbConnect helpers.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { before, after, afterEach, test } from 'node:test';
import { createRequire } from 'node:module';
import PlainWebSocket from 'ws';

import * as msgpack from './msgpack.mjs';
import * as cbor from './cbor.mjs';

const require = createRequire(import.meta.url);
const driftdb = require('driftdb');
export const { DbConnection, StateListener, Reducer, HttpConnection } = driftdb;

// TLS tests trust their own CA: every https request and WebSocket of the
// harness (and of the driftdb client, through the global) then uses it.
let trustedCA = null;
export function trustCA(pem) { trustedCA = pem; }
class WebSocket extends PlainWebSocket {
  constructor(url, protocols, options) {
    if (protocols && typeof protocols === 'object' && !Array.isArray(protocols)) {
      options = protocols;
      protocols = undefined;
    }
    super(url, protocols, trustedCA ? { ca: trustedCA, ...(options ?? {}) } : options);
  }
}

// The driftdb client expects browser globals.
globalThis.WebSocket ??= WebSocket;
globalThis.window ??= globalThis;

export { WebSocket, msgpack, cbor };

export const DRIFTD_BIN = process.env.DRIFTD_BIN;

export function requireBin() {
  if (!DRIFTD_BIN) throw new Error('DRIFTD_BIN is not set: DRIFTD_BIN=build/driftd node --test FILE');
  if (!fs.existsSync(DRIFTD_BIN)) throw new Error(`DRIFTD_BIN=${DRIFTD_BIN} does not exist`);
  return DRIFTD_BIN;
}

let helpCache = null;
// The text of `driftd --help` (stdout + stderr), '' if it cannot run.
export function driftdHelp() {
  if (helpCache === null) {
    try {
      const r = spawnSync(requireBin(), ['--help'], { encoding: 'utf8', timeout: 10000 });
      helpCache = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    } catch {
      helpCache = '';
    }
  }
  return helpCache;
}
export function hasFlag(flag) {
  return new RegExp(`(^|[^-\\w])${flag.replace(/[-]/g, '\\-')}(?![-\\w])`).test(driftdHelp());
}

// Admin tokens of the nodes started with a generated one (lib/cluster.mjs),
// by base URL: driftctl runs and admin calls of the tests pick them up.
export const adminTokens = new Map();
export function adminHeaders(base) {
  const t = adminTokens.get(base);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll fn() until it returns a truthy value; return it. Throws after timeoutMs.
export async function waitFor(fn, timeoutMs = 5000, what = 'condition', intervalMs = 20) {
  const deadline = Date.now() + timeoutMs;
  let lastErr = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      lastErr = null;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

// Resolve p, or reject with a clear message after timeoutMs.
export function withTimeout(p, timeoutMs, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---- driftd processes -------------------------------------------------------

const live = new Set(); // Driftd instances whose output matters
const MAX_OUTPUT = 4 * 1024 * 1024;

process.on('exit', () => {
  for (const d of live) {
    if (d.proc && d.proc.exitCode === null && d.proc.signalCode === null) {
      try { process.kill(d.proc.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
});

export class Driftd {
  constructor(opts = {}) {
    this.opts = opts;
    this.id = opts.id ?? 1;
    this.args = opts.args ?? [];
    this.name = opts.name ?? `driftd-${this.id}`;
    this.proc = null;
    this.chunks = [];
    this.outLen = 0;
    this.starts = 0;
    this.exitInfo = null;
    this.exited = null;
  }

  static async start(opts = {}) {
    const d = new Driftd(opts);
    d.httpPort = opts.httpPort ?? (await freePort());
    d.raftPort = opts.raftPort ?? (await freePort());
    d.dataDir = opts.dataDir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-bb-')));
    d.ownDataDir = !opts.dataDir;
    live.add(d);
    await d.launch();
    return d;
  }

  get tls() { return this.args.includes('--tls-cert'); }
  get base() { return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.httpPort}`; }
  get wsBase() { return `${this.tls ? 'wss' : 'ws'}://127.0.0.1:${this.httpPort}`; }
  get pid() { return this.proc?.pid; }
  get running() { return !!this.proc && this.exitInfo === null; }

  argv() {
    // Every test client comes from 127.0.0.1: the per-address limits
    // (limits.test.mjs tests them) are lifted unless a test sets them.
    const lift = [];
    if (!this.args.includes('--max-connections-per-ip')) lift.push('--max-connections-per-ip', '0');
    if (!this.args.includes('--max-room-rate')) lift.push('--max-room-rate', '0');
    return ['--id', String(this.id), '--http', `127.0.0.1:${this.httpPort}`,
      '--raft', `127.0.0.1:${this.raftPort}`, '--data', this.dataDir, ...lift, ...this.args];
  }

  _append(prefix, data) {
    const s = typeof data === 'string' ? data : data.toString('utf8');
    this.chunks.push(prefix ? `${prefix}${s}` : s);
    this.outLen += s.length;
    while (this.outLen > MAX_OUTPUT && this.chunks.length > 1) this.outLen -= this.chunks.shift().length;
  }

  output() { return this.chunks.join(''); }

  // Spawns the process and, unless waitHealthy is false, waits for /healthz
  // 200 (a node whose peers are unreachable never gets there).
  async launch({ waitHealthy = true } = {}) {
    requireBin();
    if (this.running) throw new Error(`${this.name} is already running`);
    this.starts += 1;
    const argv = this.argv();
    this._append('', `\n===== ${this.name} start #${this.starts}: ${DRIFTD_BIN} ${argv.join(' ')}\n`);
    this.exitInfo = null;
    // opts.env: variables added to the node's environment (test hooks).
    const env = this.opts.env ? { ...process.env, ...this.opts.env } : process.env;
    const proc = spawn(DRIFTD_BIN, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.proc = proc;
    proc.stdout.on('data', (d) => this._append('', d));
    proc.stderr.on('data', (d) => this._append('', d));
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this._append('', `\n===== ${this.name} exited: code=${code} signal=${signal}\n`);
        resolve(this.exitInfo);
      });
    });
    proc.on('error', (e) => this._append('', `\n===== spawn error: ${e.message}\n`));
    if (waitHealthy) await this.waitHealthy(this.opts.startTimeoutMs ?? 20000);
  }

  async waitHealthy(timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    for (;;) {
      if (this.exitInfo) {
        throw new Error(`${this.name} exited before /healthz answered 200 (code=${this.exitInfo.code} signal=${this.exitInfo.signal})\n${this.tail()}`);
      }
      try {
        const r = await httpRequest(`${this.base}/healthz`, { timeoutMs: 1000 });
        if (r.status === 200) return;
        last = `status ${r.status}`;
      } catch (e) {
        last = e.message;
      }
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: /healthz did not answer 200 within ${timeoutMs} ms (last: ${last})\n${this.tail()}`);
      }
      await sleep(50);
    }
  }

  tail(maxChars = 20000) {
    const s = this.output();
    return s.length > maxChars ? `...[${s.length - maxChars} chars cut]...\n${s.slice(-maxChars)}` : s;
  }

  // Sends signal and waits for the exit. Returns {code, signal}. Kills with
  // SIGKILL (and throws) if it does not exit within timeoutMs.
  async stop(signal = 'SIGTERM', timeoutMs = 20000) {
    if (!this.proc || this.exitInfo) return this.exitInfo;
    this.proc.kill(signal);
    try {
      return await withTimeout(this.exited, timeoutMs, `${this.name} to exit after ${signal}`);
    } catch (e) {
      this.proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`${e.message}; killed with SIGKILL\n${this.tail()}`);
    }
  }

  // SIGTERM; asserts a clean exit (code 0, no signal).
  async stopClean(timeoutMs = 20000) {
    const info = await this.stop('SIGTERM', timeoutMs);
    assert.ok(info, `${this.name} was not started`);
    assert.equal(info.signal, null, `${this.name} died of signal ${info.signal} after SIGTERM\n${this.tail()}`);
    assert.equal(info.code, 0, `${this.name} exited with code ${info.code} after SIGTERM (clean shutdown must exit 0)\n${this.tail()}`);
    return info;
  }

  async kill9() {
    const info = await this.stop('SIGKILL', 10000);
    assert.equal(info.signal, 'SIGKILL');
    return info;
  }

  // Starts again on the same ports and data dir.
  async restart() {
    if (this.running) await this.stopClean();
    await this.launch();
  }

  // Resident set size in KiB, from /proc/PID/status.
  rssKiB() {
    const s = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(s);
    if (!m) throw new Error('no VmRSS');
    return Number(m[1]);
  }

  async dispose({ clean = true } = {}) {
    try {
      if (this.running) {
        if (clean) await this.stopClean();
        else await this.stop('SIGKILL');
      }
    } finally {
      live.delete(this);
      if (this.ownDataDir) await fsp.rm(this.dataDir, { recursive: true, force: true });
    }
  }
}

export function dumpServers(label) {
  for (const d of live) {
    process.stderr.write(`\n----- ${d.name} output (test failed: ${label}) -----\n${d.tail(60000)}\n----- end of ${d.name} output -----\n`);
  }
}

// Wires a driftd into the enclosing describe(). ctx.srv is the Driftd.
export function useDriftd(opts = {}) {
  const ctx = { srv: null };
  before(async () => {
    ctx.srv = await Driftd.start(opts);
  });
  afterEach(async (t) => {
    if (!t.passed) dumpServers(t.fullName ?? t.name);
    await closeAllClients();
  });
  after(async () => {
    await closeAllClients();
    if (ctx.srv) await ctx.srv.dispose();
  });
  return ctx;
}

// The last test of a describe(): SIGTERM, exit code 0 (clean shutdown is a
// requirement), with open client connections if the test left some.
export function shutdownTest(ctx) {
  test('SIGTERM: clean shutdown, exit code 0', async () => {
    assert.ok(ctx.srv, 'server never started');
    await ctx.srv.stopClean();
  });
}

// ---- HTTP --------------------------------------------------------------------

// One HTTP request on a fresh connection (no keep-alive). body: string,
// Buffer or object (sent as JSON). Returns {status, headers, text, json()}.
export function httpRequest(url, { method = 'GET', headers = {}, body, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    let payload = body;
    const hdrs = { ...headers };
    if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
      payload = JSON.stringify(body);
      if (!Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')) hdrs['Content-Type'] = 'application/json';
    }
    const tls = String(url).startsWith('https:');
    const opts = { method, headers: hdrs, agent: false, ...(tls && trustedCA ? { ca: trustedCA } : {}) };
    const req = (tls ? https : http).request(url, opts, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({
          status: res.statusCode,
          headers: res.headers,
          text,
          json() {
            try { return JSON.parse(text); } catch (e) {
              throw new Error(`${method} ${url}: body is not JSON (${e.message}): ${JSON.stringify(text.slice(0, 300))}`);
            }
          },
        });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.end(payload); else req.end();
  });
}

export async function createRoom(base) {
  const r = await httpRequest(`${base}/new`, { method: 'POST' });
  assert.equal(r.status, 200, `POST /new answered ${r.status}: ${r.text}`);
  const j = r.json();
  assert.equal(typeof j.room, 'string', `POST /new: no room id in ${r.text}`);
  assert.equal(typeof j.socket_url, 'string', `POST /new: no socket_url in ${r.text}`);
  return j;
}

// POST a client message to /room/ID/send.
export function httpSend(base, room, message, opts = {}) {
  return httpRequest(`${base}/room/${room}/send`, { method: 'POST', body: message, ...opts });
}

// ---- WebSocket clients ----------------------------------------------------------

const clients = new Set();

export async function closeAllClients() {
  const all = [...clients];
  clients.clear();
  await Promise.all(all.map((c) => c.close().catch(() => {})));
}

let nonceCounter = 1000;
export const nextNonce = () => ++nonceCounter;

function matcher(pred) {
  if (pred === undefined || pred === null) return () => true;
  if (typeof pred === 'string') return (m) => m && m.type === pred;
  if (typeof pred === 'function') return pred;
  // object pattern: every listed field equal (shallow, JSON compare)
  return (m) => m && Object.entries(pred).every(([k, v]) => JSON.stringify(m[k]) === JSON.stringify(v));
}

export class RawClient {
  // format: 'json' | 'cbor' | 'msgpack'. query: extra query parameters.
  // sendFormat: how send() encodes (default: the connection's format).
  static async connect(url, { format = 'json', query = {}, sendFormat, timeoutMs = 10000, label } = {}) {
    const u = new URL(url);
    if (format === 'cbor') u.searchParams.set('cbor', 'true');
    if (format === 'msgpack') u.searchParams.set('msgpack', 'true');
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, String(v));
    const c = new RawClient(u.toString(), format, sendFormat ?? format, label);
    clients.add(c);
    await c._opened(timeoutMs);
    return c;
  }

  constructor(url, format, sendFormat, label) {
    this.url = url;
    this.format = format;
    this.sendFormat = sendFormat;
    this.label = label ?? `${format} client`;
    this.queue = [];   // undelivered entries {msg, raw, binary}
    this.log = [];     // every entry ever received
    this.waiters = [];
    this.closeInfo = null;
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this._pump();
      });
    });
    this.ws.on('error', (e) => { this.lastError = e; });
    this.ws.on('message', (data, isBinary) => this._onMessage(data, isBinary));
  }

  _opened(timeoutMs) {
    return withTimeout(new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('unexpected-response', (req, res) => {
        const e = new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`);
        e.status = res.statusCode;
        res.resume();
        reject(e);
        this.ws.terminate();
      });
      this.ws.once('error', (e) => reject(e));
      this.ws.once('close', (code) => reject(new Error(`closed (${code}) before open`)));
    }), timeoutMs, `${this.label} to open ${this.url}`);
  }

  _onMessage(data, isBinary) {
    let msg;
    let raw = data;
    try {
      if (!isBinary) {
        raw = data.toString('utf8');
        msg = JSON.parse(raw);
      } else if (this.format === 'msgpack') {
        msg = msgpack.decode(data);
      } else {
        msg = cbor.decode(data);
      }
    } catch (e) {
      msg = { type: '__undecodable__', error: e.message, binary: isBinary };
    }
    const entry = { msg, raw, binary: isBinary, n: this.log.length };
    this.log.push(entry);
    this.queue.push(entry);
    this._pump();
  }

  _pump() {
    for (let w = 0; w < this.waiters.length; w++) {
      const waiter = this.waiters[w];
      const i = this.queue.findIndex((e) => waiter.match(e.msg));
      if (i >= 0) {
        const [entry] = this.queue.splice(i, 1);
        this.waiters.splice(w, 1);
        w--;
        clearTimeout(waiter.timer);
        waiter.resolve(entry);
      } else if (this.closeInfo) {
        this.waiters.splice(w, 1);
        w--;
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`${this.label}: socket closed (code ${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${waiter.what}; unconsumed: ${this.describeQueue()}`));
      }
    }
  }

  describeQueue(max = 5) {
    const q = this.queue.slice(0, max).map((e) => safeJson(e.msg, 300));
    return `[${q.join(', ')}${this.queue.length > max ? `, ... ${this.queue.length - max} more` : ''}]`;
  }

  // The first queued or future message matching pred (a type string, a
  // function, or an object pattern); it is removed from the queue, others stay.
  async nextEntry(pred, timeoutMs = 5000, what) {
    const desc = what ?? (typeof pred === 'string' ? `a "${pred}" message` : typeof pred === 'object' && pred ? `a message like ${safeJson(pred)}` : 'a message');
    return new Promise((resolve, reject) => {
      const waiter = { match: matcher(pred), resolve, reject, what: desc };
      waiter.timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`${this.label}: timed out after ${timeoutMs} ms waiting for ${desc}; unconsumed: ${this.describeQueue()}`));
      }, timeoutMs);
      this.waiters.push(waiter);
      this._pump();
    });
  }

  async next(pred, timeoutMs = 5000, what) {
    return (await this.nextEntry(pred, timeoutMs, what)).msg;
  }

  // The very next message whatever it is.
  async shift(timeoutMs = 5000) {
    return this.next(undefined, timeoutMs, 'the next message');
  }

  // Removes and returns every queued message.
  drain() {
    const q = this.queue.map((e) => e.msg);
    this.queue = [];
    return q;
  }

  encode(obj, fmt = this.sendFormat) {
    if (fmt === 'json') return JSON.stringify(obj);
    if (fmt === 'msgpack') return msgpack.encode(obj);
    if (fmt === 'cbor') return cbor.encode(obj);
    if (fmt === 'cbor-client') return cbor.clientEncode(obj);
    throw new Error(`unknown format ${fmt}`);
  }

  send(obj, fmt) {
    const data = this.encode(obj, fmt);
    this.ws.send(data, { binary: typeof data !== 'string' });
  }

  sendText(text) { this.ws.send(text, { binary: false }); }
  sendBinary(buf) { this.ws.send(buf, { binary: true }); }

  push(key, value, action = 'append', extra = {}) {
    const act = typeof action === 'string' ? { type: action } : action;
    this.send({ type: 'push', key, value, action: act, ...extra });
  }

  // Sends get and waits for its init (unless seq === null).
  async get(key, seq = 0, timeoutMs = 5000) {
    const msg = { type: 'get', key };
    if (seq !== undefined) msg.seq = seq;
    this.send(msg);
    if (seq === null) return null;
    return this.next((m) => m.type === 'init' && m.key === key, timeoutMs, `init for key ${JSON.stringify(key)}`);
  }

  // Ping with a fresh nonce; resolves with the messages (removed from the
  // queue) that arrived before the pong. The server handles a connection's
  // frames in order, so anything caused by earlier frames of this connection
  // that is delivered to it is delivered before this pong.
  async roundTrip(timeoutMs = 5000) {
    const nonce = nextNonce();
    this.send({ type: 'ping', nonce });
    const entry = await this.nextEntry((m) => m.type === 'pong' && m.nonce === nonce, timeoutMs, `pong ${nonce}`);
    const before = this.queue.filter((e) => e.n < entry.n);
    this.queue = this.queue.filter((e) => !before.includes(e));
    return before.map((e) => e.msg);
  }

  async close(timeoutMs = 3000) {
    clients.delete(this);
    if (this.closeInfo) return this.closeInfo;
    try {
      if (this.ws.readyState === WebSocket.CONNECTING) { this.ws.terminate(); }
      else this.ws.close(1000);
      return await withTimeout(this.closed, timeoutMs, `${this.label} to close`);
    } catch {
      this.ws.terminate();
      return this.closed;
    }
  }
}

export function safeJson(v, max = 500) {
  let s;
  try {
    s = JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? `<bytes ${Buffer.from(x).toString('hex')}>` : x));
  } catch {
    s = String(v);
  }
  if (s === undefined) s = String(v);
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

// A driftdb DbConnection, connected, disconnected at the end of the test.
export async function dbConnect(socketUrl, useCbor = false, timeoutMs = 10000) {
  const db = new DbConnection();
  // disconnect() does not cancel a pending reconnect timer (the client
  // reconnects 1 s after a close it did not ask for): cancel it too.
  const entry = {
    db,
    close: async () => {
      db.disconnect();
      if (db.reconnectLoopHandle) clearTimeout(db.reconnectLoopHandle);
      db.reconnectLoopHandle = null;
    },
  };
  clients.add(entry);
  await withTimeout(db.connect(socketUrl, useCbor), timeoutMs, `driftdb DbConnection to ${socketUrl}`);
  return db;
}

// Collect every received message of a driftdb connection.
export function recordDb(db) {
  const seen = [];
  db.messageListener.addListener((m) => seen.push(m));
  return seen;
}
