// The chaos workload: writers on every node (one WebSocket, one HTTP), each
// push a unique value; subscribers on every node (one per room) that record
// every broadcast and resume with `get` after a disconnect (theirs or one
// they make every 5-20 s, half the time on another node); a reader that
// checks "push acked on node A, then get on node B" (stale reads). Every
// outcome goes into plain records (see checker.mjs for their shape).
import { createRequire } from 'node:module';

import { httpGet, sleep } from './env.mjs';

// `ws` comes from the black-box tests' install (make npm).
const require = createRequire(new URL('../../blackbox/package.json', import.meta.url));
const WebSocket = require('ws');

export const WRITE_TIMEOUT_MS = 12000; // > driftd's --queue-timeout (5000)

// What an error text means for a push: 'unknown' when driftd says the
// outcome is unknown, else 'not_applied' (driftd names both explicitly;
// anything it answers before proposing is not applied either).
export function classifyError(text) {
  return /outcome unknown/i.test(text) ? 'unknown' : 'not_applied';
}

// A WebSocket with a message callback and a promise of its opening.
function openWs(url, onMessage, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    let opened = false;
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('open timeout')); }, timeoutMs);
    ws.on('open', () => { opened = true; clearTimeout(timer); resolve(ws); });
    ws.on('unexpected-response', (req, res) => {
      clearTimeout(timer);
      res.resume();
      reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
      ws.terminate();
    });
    ws.on('error', (e) => { if (!opened) { clearTimeout(timer); reject(e); } });
    ws.on('message', (d, bin) => {
      if (bin) return;
      let m;
      try { m = JSON.parse(d.toString('utf8')); } catch { return; }
      onMessage(m);
    });
  });
}

// One `get` over a fresh WebSocket: its init message.
async function wsGet(url, key, seq, timeoutMs) {
  let done;
  const got = new Promise((resolve) => { done = resolve; });
  const ws = await openWs(url, (m) => { if (m.type === 'init' && m.key === key) done(m); }, timeoutMs);
  try {
    ws.send(JSON.stringify({ type: 'get', key, seq }));
    let timer;
    const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no init within ${timeoutMs} ms`)), timeoutMs); });
    ws.on('close', () => done({ closed: true }));
    const m = await Promise.race([got, t]).finally(() => clearTimeout(timer));
    if (m.closed) throw new Error('socket closed before init');
    return m;
  } finally {
    ws.terminate();
  }
}

export class Workload {
  // nodes(): the current [ChaosNode] clients may use (initial voters);
  // rooms: [room ids]; keys: key names (every room has them all).
  constructor({ nodes, rooms, keys, rng, runTag, staleEveryMs = 250, pauseMs = [20, 120] }) {
    this.nodes = nodes;
    this.rooms = rooms;
    this.keys = keys;
    this.rng = rng;
    this.runTag = runTag;
    this.staleEveryMs = staleEveryMs;
    this.pauseMs = pauseMs;
    this.sends = [];
    this.subs = [];
    this.reads = [];
    this.running = false;
    this.sockets = new Set();
    this.connSeq = 0;
    this.lastWsAck = null;
    this.faultNow = () => null;
  }

  value(writer, n) { return `${this.runTag}.${writer}.${n}`; }

  start() {
    this.running = true;
    this.t0 = Date.now();
    this.writerTasks = [];
    this.subTasks = [];
    for (const node of this.nodes()) {
      this.writerTasks.push(this.wsWriter(node, `w${node.id}ws`));
      this.writerTasks.push(this.httpWriter(node, `w${node.id}http`));
      for (const room of this.rooms) this.subTasks.push(this.subscriber(node, room, `s${node.id}.${this.rooms.indexOf(room)}`));
    }
    this.writerTasks.push(this.staleReader());
  }

  // Stops writers and the reader; subscribers keep running until
  // stopSubscribers().
  async stopWriters() {
    this.running = false;
    await Promise.all(this.writerTasks ?? []);
  }

  pause() { return sleep(this.rng.int(this.pauseMs[0], this.pauseMs[1])); }

  record(rec) {
    rec.i = this.sends.length;
    this.sends.push(rec);
    return rec;
  }

  async httpWriter(node, name) {
    let n = 0;
    while (this.running) {
      const room = this.rng.pick(this.rooms);
      const key = this.rng.pick(this.keys);
      const value = this.value(name, n++);
      const rec = this.record({ writer: name, node: node.id, via: 'http', conn: null, room, key, value, t0: Date.now(), t1: null, outcome: null, seq: null, detail: null, fault: this.faultNow() });
      try {
        const r = await httpGet(`${node.base}/room/${room}/send`, {
          method: 'POST', body: { type: 'push', key, value, action: { type: 'append' } }, timeoutMs: WRITE_TIMEOUT_MS,
        });
        rec.t1 = Date.now();
        if (r.status === 200) rec.outcome = 'ok';
        else {
          rec.outcome = classifyError(r.text);
          rec.detail = `HTTP ${r.status} ${r.text.slice(0, 200)}`;
        }
      } catch (e) {
        rec.t1 = Date.now();
        // Refused: the request never reached driftd, certainly not applied.
        rec.outcome = e.code === 'ECONNREFUSED' ? 'refused' : 'no_answer';
        rec.detail = e.message;
      }
      await this.pause();
    }
  }

  async wsWriter(node, name) {
    let n = 0;
    let ws = null;
    let conn = null;
    let pending = null; // {rec, resolve}
    const room = this.rooms[(node.id - 1) % this.rooms.length];
    const onMessage = (m) => {
      if (!pending) return;
      if (m.type === 'push' && m.value === pending.rec.value) {
        pending.resolve({ outcome: 'ok', seq: m.seq });
      } else if (m.type === 'error') {
        pending.resolve({ outcome: classifyError(m.message), detail: `error ${m.message}` });
      }
    };
    while (this.running) {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        try {
          ws = await openWs(`${node.wsBase}/room/${room}/connect`, onMessage);
          conn = `${name}#${++this.connSeq}`;
          this.sockets.add(ws);
          ws.on('close', () => { this.sockets.delete(ws); if (pending) pending.resolve({ outcome: 'no_answer', detail: 'socket closed' }); });
          for (const key of this.keys) ws.send(JSON.stringify({ type: 'get', key, seq: null }));
        } catch {
          ws = null;
          await sleep(300);
          continue;
        }
      }
      const key = this.rng.pick(this.keys);
      const value = this.value(name, n++);
      const rec = this.record({ writer: name, node: node.id, via: 'ws', conn, room, key, value, t0: Date.now(), t1: null, outcome: null, seq: null, detail: null, fault: this.faultNow() });
      const res = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ outcome: 'no_answer', detail: `no answer within ${WRITE_TIMEOUT_MS} ms` }), WRITE_TIMEOUT_MS);
        pending = { rec, resolve: (r) => { clearTimeout(timer); resolve(r); } };
        try {
          ws.send(JSON.stringify({ type: 'push', key, value, action: { type: 'append' } }));
        } catch (e) {
          pending.resolve({ outcome: 'no_answer', detail: `send failed: ${e.message}` });
        }
      });
      pending = null;
      rec.t1 = Date.now();
      rec.outcome = res.outcome;
      rec.seq = res.seq ?? null;
      rec.detail = res.detail ?? null;
      if (res.outcome === 'ok') this.lastWsAck = { value, room, key, seq: res.seq, node: node.id, at: rec.t1 };
      if (res.outcome === 'no_answer') {
        // A late answer would be ambiguous: start a new connection.
        ws.terminate();
        ws = null;
      }
      await this.pause();
    }
    if (ws) ws.terminate();
  }

  // One subscriber: every key of the room, resumed after the last seq seen
  // per key. Records, per key, every entry received in order.
  async subscriber(node, room, name) {
    const perKey = new Map();
    for (const key of this.keys) {
      const rec = { sub: name, node: node.id, room, key, events: [], reconnects: 0 };
      this.subs.push(rec);
      perKey.set(key, rec);
    }
    const last = (key) => {
      const ev = perKey.get(key).events;
      return ev.length ? ev[ev.length - 1].seq : 0;
    };
    this.subStop ??= [];
    let stopped = false;
    let current = null;
    this.subStop.push(() => { stopped = true; if (current) current.terminate(); });
    this.subLast ??= [];
    this.subLast.push({ room, last });
    let connN = 0;
    let at = node;
    while (!stopped) {
      const conn = `${name}#${++connN}@${at.id}`;
      let ws;
      try {
        ws = await openWs(`${at.wsBase}/room/${room}/connect`, (m) => {
          const rec = perKey.get(m.key);
          if (!rec) return;
          if (m.type === 'push') rec.events.push({ seq: m.seq, value: m.value, src: 'push', conn });
          else if (m.type === 'init') for (const e of m.data) rec.events.push({ seq: e.seq, value: e.value, src: 'init', conn });
        });
      } catch {
        await sleep(300);
        at = node;
        continue;
      }
      current = ws;
      for (const key of this.keys) {
        if (connN > 1) perKey.get(key).reconnects += 1;
        ws.send(JSON.stringify({ type: 'get', key, seq: last(key) }));
      }
      // While writers run, also leave on our own every 5-20 s, and resume
      // on another node half the time.
      const leave = this.running ? setTimeout(() => ws.terminate(), this.rng.int(5000, 20000)) : null;
      await new Promise((resolve) => ws.on('close', resolve));
      clearTimeout(leave);
      current = null;
      const others = this.nodes().filter((x) => x.live);
      at = this.running && others.length && this.rng.chance(0.5) ? this.rng.pick(others) : node;
      if (!stopped) await sleep(200);
    }
  }

  // Subscribers' view has caught up with `finalLast` ({room: {key: seq}}), or
  // timeoutMs passed.
  async waitSubscribers(finalLast, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const behind = this.subs.filter((s) => {
        const ev = s.events;
        return (ev.length ? ev[ev.length - 1].seq : 0) < (finalLast[s.room]?.[s.key] ?? 0);
      });
      if (behind.length === 0) return true;
      await sleep(200);
    }
    return false;
  }

  async stopSubscribers() {
    for (const f of this.subStop ?? []) f();
    await Promise.all(this.subTasks ?? []);
  }

  // "push acked on node A, then get on node B": B must include it.
  async staleReader() {
    while (this.running) {
      await sleep(this.staleEveryMs);
      const ack = this.lastWsAck;
      if (!ack) continue;
      const others = this.nodes().filter((n) => n.id !== ack.node && n.live);
      if (others.length === 0) continue;
      const node = this.rng.pick(others);
      const rec = { value: ack.value, room: ack.room, key: ack.key, seq: ack.seq, ackNode: ack.node, ackAt: ack.at, node: node.id, t0: Date.now(), t1: null, outcome: null, detail: null, fault: this.faultNow() };
      this.reads.push(rec);
      // Alternately an HTTP get and a WebSocket get on a fresh connection.
      rec.via = this.reads.length % 2 ? 'ws' : 'http';
      try {
        let init;
        if (rec.via === 'http') {
          const r = await httpGet(`${node.base}/room/${ack.room}/send`, {
            method: 'POST', body: { type: 'get', key: ack.key, seq: ack.seq - 1 }, timeoutMs: 3000,
          });
          if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.text.slice(0, 200)}`);
          init = JSON.parse(r.text);
        } else {
          init = await wsGet(`${node.wsBase}/room/${ack.room}/connect`, ack.key, ack.seq - 1, 3000);
        }
        rec.t1 = Date.now();
        rec.outcome = (init.data ?? []).some((e) => e.value === ack.value && e.seq === ack.seq) ? 'fresh' : 'stale';
        if (rec.outcome === 'stale') rec.detail = `${rec.via} init had ${init.data?.length ?? 0} entries after seq ${ack.seq - 1}`;
      } catch (e) {
        rec.t1 = Date.now();
        rec.outcome = 'error';
        rec.detail = e.message;
      }
    }
  }

  closeAll() { for (const ws of this.sockets) ws.terminate(); }
}

// The retained stream of every key of every room as node answers a fresh
// `get` seq 0: {room: {key: [{seq, value}]}}.
export async function finalRead(node, rooms, keys, timeoutMs = 10000) {
  const out = {};
  for (const room of rooms) {
    out[room] = {};
    const inits = new Map();
    let waiter = null;
    const ws = await openWs(`${node.wsBase}/room/${room}/connect`, (m) => {
      if (m.type === 'init') { inits.set(m.key, m.data); if (waiter) waiter(); }
    }, timeoutMs);
    try {
      for (const key of keys) ws.send(JSON.stringify({ type: 'get', key, seq: 0 }));
      const deadline = Date.now() + timeoutMs;
      while (inits.size < keys.length) {
        if (Date.now() > deadline) throw new Error(`node ${node.id}: no init for every key of ${room}`);
        await new Promise((r) => { waiter = r; setTimeout(r, 200); });
      }
    } finally {
      ws.terminate();
    }
    for (const key of keys) out[room][key] = inits.get(key).map((e) => ({ seq: e.seq, value: e.value }));
  }
  return out;
}
