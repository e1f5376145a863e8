// The closed cluster, tried as an attacker on the same network would: raw
// sockets to every raft port (libraft's own wire format, truncated and
// flooding handshakes, wrong keys, a replayed proof), the forward route
// without and with forged proofs and forbidden commands, the admin API
// without its token or with it in the query string. Every attempt must be
// refused and logged, no node may crash, and the rooms read back from every
// node must be exactly what legitimate clients wrote.
//
// Each attempt has a positive control made with the real key (a handshake
// that completes, a batch that is accepted), so a refusal is known to come
// from the check under test and not from a malformed probe.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

import {
  adminHeaders, createRoom, freePort, httpRequest, httpSend, requireBin, waitFor, WebSocket, msgpack,
} from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere, waitSameReplay, replay } from './lib/cluster.mjs';
import { requireCtl } from './lib/admin.mjs';

const T = { timeout: 120000 };

// ---- raft handshake (src/consensus/transport.c) ---------------------------------

const MAGIC = Buffer.from('DRIFTRF1');
const u64 = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; };
function mac(keyHex, label, ...parts) {
  const h = crypto.createHmac('sha256', Buffer.from(keyHex, 'hex'));
  h.update(Buffer.concat([Buffer.from(label), Buffer.from([0])]));
  for (const p of parts) h.update(p);
  return h.digest();
}
function hello(fromId, toId, nonceC, addr) {
  const a = Buffer.from(addr);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(a.length);
  return Buffer.concat([MAGIC, u64(fromId), u64(toId), nonceC, len, a]);
}

// A raw TCP connection that records what it receives and when it closes.
class Raw {
  static open(port) {
    return new Promise((resolve, reject) => {
      const r = new Raw();
      r.sock = net.connect(port, '127.0.0.1', () => resolve(r));
      r.sock.once('error', reject);
    });
  }

  constructor() {
    this.data = Buffer.alloc(0);
    this.isClosed = false;
    this.closed = new Promise((resolve) => { this._closedResolve = resolve; });
  }

  set sock(s) {
    this._s = s;
    s.on('data', (d) => { this.data = Buffer.concat([this.data, d]); });
    s.on('error', () => {});
    s.on('close', () => { this.isClosed = true; this._closedResolve(); });
  }

  get sock() { return this._s; }
  send(b) { this._s.write(b); }
  destroy() { this._s.destroy(); }
  async bytes(n, timeoutMs = 5000) {
    await waitFor(() => this.data.length >= n || this.isClosed, timeoutMs, `${n} bytes`);
    return this.data.subarray(0, n);
  }

  async waitClosed(timeoutMs = 10000) {
    await waitFor(() => this.isClosed, timeoutMs, 'the server to close the connection');
  }
}

// Runs a client handshake against node `to` claiming to be node `from`.
// key: the key the proof is made with. Returns {raw, chal, okByte}.
async function raftHandshake(port, { from, to, addr, key, serverKey, nonceC = crypto.randomBytes(32), proof }) {
  const raw = await Raw.open(port);
  raw.send(hello(from, to, nonceC, addr));
  const chal = Buffer.from(await raw.bytes(80));
  assert.equal(chal.length, 80, 'a challenge of 80 bytes');
  assert.deepEqual(chal.subarray(0, 8), MAGIC);
  assert.equal(chal.readBigUInt64BE(8), BigInt(to), 'the server names itself');
  const nonceS = chal.subarray(16, 48);
  const T_ = [nonceC, nonceS, Buffer.concat([u64(from), u64(to)]), Buffer.from(addr)];
  const serverOk = serverKey
    ? mac(serverKey, 'driftd raft server', ...T_).equals(chal.subarray(48, 80)) : null;
  const p = proof ?? mac(key, 'driftd raft client', ...T_);
  raw.send(p);
  await waitFor(() => raw.data.length >= 81 || raw.isClosed, 8000, 'OK byte or close');
  return { raw, chal, serverOk, proof: p, okByte: raw.data.length >= 81 ? raw.data[80] : null };
}

// libraft's own TCP handshake (protocol 1, id, address) followed by an
// AppendEntries header that claims 100,000 entries in 40 bytes: 88 bytes
// that crashed a node when its raft port spoke libraft's wire format.
function libraftCrashPacket(claimId, addr) {
  const a = Buffer.alloc(16);
  a.write(addr.slice(0, 15));
  const head = Buffer.alloc(24);
  head.writeBigUInt64LE(1n, 0);
  head.writeBigUInt64LE(BigInt(claimId), 8);
  head.writeBigUInt64LE(16n, 16);
  const msg = Buffer.alloc(48);
  msg.writeBigUInt64LE(1n, 0);          // protocol
  msg.writeBigUInt64LE(40n, 8);         // header length
  msg.writeBigUInt64LE(3n, 16);         // type: AppendEntries
  msg.writeBigUInt64LE(100000n, 24);    // n entries (in the following bytes)
  msg.writeBigUInt64LE(99n, 32);        // term
  msg.writeBigUInt64LE(99n, 40);
  return Buffer.concat([head, a, msg]).subarray(0, 88);
}

// ---- forward link (src/net/forward.c) -----------------------------------------

// The bytes of a relay batch (src/relay/batch.c): [1, now, [cmd...]], padded
// with nil to a multiple of 8.
function batch(cmds) {
  const body = msgpack.encode([1, Date.now(), cmds]);
  const pad = (8 - (body.length % 8)) % 8;
  return Buffer.concat([body, Buffer.alloc(pad, 0xc0)]);
}
// A push command (action 2: append); the value is embedded as its msgpack item.
const push = (node, session, counter, room, key, value) =>
  [2, node, session, counter, Buffer.from(room), Buffer.from(key), 2, 0, value];

// Opens a forward link to `port` as node `nodeId`; resolves with the socket
// and the leader's challenge (or the HTTP status of a refused upgrade).
function forwardLink(port, { nodeId, nonceC = crypto.randomBytes(32), query } = {}) {
  const q = query ?? `node=${nodeId}&nonce=${nonceC.toString('hex')}`;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/_driftd/forward?${q}`, 'driftd-forward', { perMessageDeflate: false });
  const r = { ws, nonceC, messages: [], close: null };
  r.closed = new Promise((resolve) => ws.on('close', (code, reason) => { r.close = { code, reason: reason.toString() }; resolve(r.close); }));
  ws.on('message', (d) => r.messages.push(Buffer.from(d)));
  ws.on('error', () => {});
  return new Promise((resolve) => {
    ws.once('unexpected-response', (req, res) => { r.status = res.statusCode; res.resume(); ws.terminate(); resolve(r); });
    ws.once('open', () => resolve(r));
    ws.once('close', () => resolve(r));
  });
}

async function challenge(link) {
  await waitFor(() => link.messages.length > 0 || link.close, 5000, 'the leader\'s challenge');
  assert.ok(link.messages.length > 0, `no challenge; closed ${JSON.stringify(link.close)}`);
  const m = link.messages[0];
  assert.equal(m.length, 73);
  assert.equal(m[0], 0xa1);
  return m;
}

function linkProof(keyHex, link, chal, follower) {
  const leader = chal.readBigUInt64BE(1);
  const nonceS = chal.subarray(9, 41);
  const T_ = [link.nonceC, nonceS, Buffer.concat([u64(follower), u64(leader)])];
  return {
    leaderOk: mac(keyHex, 'driftd forward leader', ...T_).equals(chal.subarray(41, 73)),
    proof: Buffer.concat([Buffer.from([0xa2]), mac(keyHex, 'driftd forward follower', ...T_)]),
  };
}

// Everything the rooms hold, read from every node: {id: {room: replay}}.
async function histories(c, rooms, key) {
  const out = {};
  for (const id of c.liveIds()) {
    out[id] = {};
    for (const room of rooms) out[id][room] = await replay(c.socketUrl(id, room), key);
  }
  return out;
}

describe('closed cluster: raft ports, forward links and the admin API under attack', () => {
  const ctx = useCluster({ size: 3, name: 'attack' });
  const rooms = [];
  let expected; // the legitimate history of rooms[0] / 'k'

  before(async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (let i = 0; i < 2; i++) rooms.push((await createRoom(c.base(1 + i))).room);
    for (const room of rooms) {
      await waitRoomEverywhere(c, room);
      for (let i = 0; i < 6; i++) {
        const r = await httpSend(c.base(1 + (i % 3)), room, { type: 'push', key: 'k', value: { i }, action: { type: 'append' } });
        assert.equal(r.status, 200, r.text);
      }
    }
    expected = await waitSameReplay(c, rooms[0], 'k', { until: (d) => d.length === 6 });
  });

  test('libraft\'s wire format (the 88-byte crash packet) never reaches libraft on any raft port', T, async () => {
    const c = ctx.cluster;
    for (const id of c.ids) {
      const other = id === 1 ? 2 : 1;
      const raw = await Raw.open(c.raftPorts[id - 1]);
      raw.send(libraftCrashPacket(other, c.raftAddr(other)));
      await raw.waitClosed();
      assert.equal(raw.data.length, 0, 'nothing is answered to a stranger');
    }
    for (const id of c.ids) {
      assert.ok(c.running(id), `node ${id} is running`);
      await waitFor(() => /event=raft_peer_refused remote=127\.0\.0\.1:\d+ claimed_id=0 why="not a driftd raft handshake"/.test(c.node(id).output()),
        5000, `node ${id} to log the refused peer with its address`);
    }
  });

  test('a wrong key fails the raft handshake while claiming an existing node id; the real key passes it, once', T, async () => {
    const c = ctx.cluster;
    const wrong = crypto.randomBytes(32).toString('hex');
    for (const id of c.ids) {
      const from = id === 1 ? 2 : 1;
      const port = c.raftPorts[id - 1];
      const bad = await raftHandshake(port, { from, to: id, addr: c.raftAddr(from), key: wrong, serverKey: c.keyHex });
      assert.equal(bad.serverOk, true, 'the node proves it holds the key');
      await bad.raw.waitClosed();
      assert.equal(bad.okByte, null, 'no OK for a wrong proof');
      await waitFor(() => /event=raft_peer_refused remote=\S+ claimed_id=\d+ why="wrong proof/.test(c.node(id).output()), 5000, 'the refusal in the log');

      // Positive control: the same handshake with the cluster key completes.
      const nonceC = crypto.randomBytes(32);
      const good = await raftHandshake(port, { from, to: id, addr: c.raftAddr(from), key: c.keyHex, nonceC });
      assert.equal(good.okByte, 1, 'the real key gets the OK byte');
      good.raw.destroy();
      // A replay of that proof, with the same client nonce: the node's fresh
      // nonce makes it worthless.
      const replayed = await raftHandshake(port, { from, to: id, addr: c.raftAddr(from), nonceC, proof: good.proof });
      await replayed.raw.waitClosed();
      assert.equal(replayed.okByte, null, 'a replayed proof is refused');
    }
  });

  test('truncated and idle handshakes are cut off, bounded, and the cluster keeps serving meanwhile', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const port = c.raftPorts[leader - 1];
    const conns = [];
    for (let i = 0; i < 80; i++) {
      const r = await Raw.open(port);
      r.send(hello(2, leader, crypto.randomBytes(32), '127.0.0.1:1').subarray(0, 10));
      conns.push(r);
    }
    // Past 64 handshakes in progress, new ones are closed at once.
    await waitFor(() => conns.filter((r) => r.isClosed).length >= 16, 3000, 'the connections over the bound to be closed');
    const follower = c.ids.find((id) => id !== leader);
    const r = await httpSend(c.base(follower), rooms[1], { type: 'push', key: 'k', value: 'during flood', action: { type: 'append' } });
    assert.equal(r.status, 200, `a push through a follower during the flood: ${r.text}`);
    // The rest are cut off after the handshake timeout (5 s).
    await waitFor(() => conns.every((x) => x.isClosed), 12000, 'every stalled handshake to be cut off');
    await waitFor(() => /event=raft_peer_refused remote=\S+ claimed_id=0 why="handshake timed out"/.test(c.node(leader).output()), 5000, 'timeouts logged');
  });

  test('the forward route refuses links without a node id, without a proof, with a wrong proof, or with a batch first', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const port = c.httpPorts[leader - 1];
    const follower = c.ids.find((id) => id !== leader);
    assert.equal((await forwardLink(port, { query: 'nonce=' + 'ab'.repeat(32) })).status, 400, 'no node id');
    assert.equal((await forwardLink(port, { query: `node=${follower}` })).status, 401, 'no nonce');
    assert.equal((await forwardLink(port, { query: `node=${follower}&nonce=zz` })).status, 401, 'bad nonce');

    const wrong = await forwardLink(port, { nodeId: follower });
    const chal = await challenge(wrong);
    const { leaderOk } = linkProof(c.keyHex, wrong, chal, follower);
    assert.equal(leaderOk, true, 'the leader proves it holds the key');
    wrong.ws.send(linkProof(crypto.randomBytes(32).toString('hex'), wrong, chal, follower).proof);
    assert.equal((await wrong.closed).code, 1008, 'a wrong proof closes with 1008');

    const early = await forwardLink(port, { nodeId: follower });
    await challenge(early);
    early.ws.send(batch([push(follower, 77, 1, rooms[0], 'k', 'early')]));
    assert.equal((await early.closed).code, 1008, 'a batch before the proof closes with 1008');
    await waitFor(() => /event=fwd_refused remote=\S+ node=\d+ why="wrong proof/.test(c.node(leader).output()), 5000, 'logged with the address');
  });

  test('an authenticated link may carry only its own node\'s client commands', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const port = c.httpPorts[leader - 1];
    const [f1, f2] = c.ids.filter((id) => id !== leader);
    const session = Number(crypto.randomBytes(4).readUInt32BE(0)) * 4096 + 1;
    const attempts = [
      ['a room delete', [3, f1, session, 1, Buffer.from(rooms[0]), Buffer.alloc(0), 0, 0, null]],
      ['a push with another node\'s origin', push(f2, session, 1, rooms[0], 'k', 'forged')],
      ['another node\'s directory entry', [5, f1, session, 1, leader, Buffer.from('127.0.0.1:1'), Buffer.from('127.0.0.1:2')]],
      ['a directory removal', [6, f1, session, 1, f2]],
    ];
    for (const [what, cmd] of attempts) {
      const l = await forwardLink(port, { nodeId: f1 });
      l.ws.send(linkProof(c.keyHex, l, await challenge(l), f1).proof);
      // A legitimate push first, so the refusal is the forbidden command's.
      l.ws.send(batch([push(f1, session, 1, rooms[1], 'k', 'x'), cmd]));
      const close = await l.closed;
      assert.equal(close.code, 1008, `${what}: closed ${JSON.stringify(close)}`);
      assert.match(close.reason, /forbidden/);
    }
    // Positive control: the same link with only its own client command.
    const ok = await forwardLink(port, { nodeId: f1 });
    ok.ws.send(linkProof(c.keyHex, ok, await challenge(ok), f1).proof);
    ok.ws.send(batch([push(f1, session + 1, 1, rooms[0], 'k', 'via a raw link')]));
    expected = await waitSameReplay(c, rooms[0], 'k', { until: (d) => d.length === 7 });
    assert.deepEqual(expected.at(-1).value, 'via a raw link');
    assert.equal(ok.close, null, 'the link stays up');
    ok.ws.close();
    await waitFor(() => /event=fwd_forbidden_batch node=\d+/.test(c.node(leader).output()), 5000, 'refusals logged');
  });

  test('the admin API takes its token only as a bearer header', T, async () => {
    const c = ctx.cluster;
    for (const id of c.ids) {
      const base = c.base(id);
      const token = c.adminToken;
      assert.equal((await httpRequest(`${base}/admin/rooms`)).status, 401);
      assert.equal((await httpRequest(`${base}/admin/rooms?token=${token}`)).status, 401);
      assert.equal((await httpRequest(`${base}/admin/rooms?access_token=${token}`)).status, 401);
      assert.equal((await httpRequest(`${base}/admin/rooms`, { headers: { Authorization: `Bearer ${token}x` } })).status, 401);
      assert.equal((await httpRequest(`${base}/admin/rooms`, { headers: adminHeaders(base) })).status, 200);
    }
  });

  test('after every attack: all nodes run and hold exactly what legitimate clients wrote', T, async () => {
    const c = ctx.cluster;
    for (const id of c.ids) assert.ok(c.running(id), `node ${id} runs`);
    const all = await histories(c, rooms, 'k');
    for (const id of c.ids) {
      assert.deepEqual(all[id][rooms[0]], expected, `node ${id}: room 0`);
      assert.deepEqual(all[id][rooms[1]].map((e) => e.value), [0, 1, 2, 3, 4, 5].map((i) => ({ i })).concat(['during flood']), `node ${id}: room 1`);
    }
    const lists = await Promise.all(c.ids.map(async (id) => {
      const r = await httpRequest(`${c.base(id)}/admin/rooms`, { headers: adminHeaders(c.base(id)) });
      return r.json().rooms.map((x) => x.id ?? x.room).sort();
    }));
    for (const l of lists) assert.deepEqual(l, [...rooms].sort());
  });

  test('a node started with another key is kept out, and rejoins with the right one', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const victim = c.ids.find((id) => id !== leader);
    const d = c.node(victim);
    await d.stopClean();
    const otherKey = path.join(c.root, 'other.key');
    await fsp.writeFile(otherKey, crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
    const savedArgs = d.args;
    d.args = savedArgs.map((a) => (a === c.keyFile ? otherKey : a));
    d.opts.startTimeoutMs = 3000;
    await assert.rejects(d.launch(), /healthz did not answer 200/);
    await waitFor(() => /event=raft_(peer|connect)_refused .*different cluster key/.test(d.output()), 5000, 'the wrong key to be named in its log');
    await waitFor(() => /event=raft_(peer|connect)_refused .*different cluster key/.test(c.node(leader).output()), 5000, 'and in the leader\'s');
    const r = await httpSend(c.base(leader), rooms[1], { type: 'push', key: 'k', value: 'without the outsider', action: { type: 'append' } });
    assert.equal(r.status, 200, r.text);
    await d.stop('SIGTERM');
    d.args = savedArgs;
    d.opts.startTimeoutMs = 20000;
    await d.launch();
    await waitSameReplay(c, rooms[1], 'k', { until: (x) => x.at(-1)?.value === 'without the outsider' });
  });
});

describe('closed cluster: the admin API without a token', () => {
  const ctx = useCluster({ size: 3, name: 'notoken', token: false });

  test('is closed (403) on every node while a cluster key is set', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (const id of c.ids) {
      for (const p of ['/admin/rooms', '/admin/status']) {
        const r = await httpRequest(`${c.base(id)}${p}`);
        assert.equal(r.status, 403, r.text);
        assert.match(r.json().error, /admin token/);
      }
    }
  });
});

describe('open mode (loopback, no cluster key)', () => {
  const ctx = useCluster({ size: 3, name: 'open', key: false });

  test('forwarding works and libraft\'s wire format is still refused at the raft port', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const follower = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(follower));
    await waitRoomEverywhere(c, room);
    const r = await httpSend(c.base(follower), room, { type: 'push', key: 'k', value: 1, action: { type: 'append' } });
    assert.equal(r.status, 200, r.text);
    const raw = await Raw.open(c.raftPorts[leader - 1]);
    raw.send(libraftCrashPacket(follower, c.raftAddr(follower)));
    await raw.waitClosed();
    assert.ok(c.running(leader));
    assert.match(c.node(follower).output(), /event=no_cluster_key/);
  });
});

describe('start-up refusals', () => {
  let dir;
  before(async () => { dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-refuse-')); });
  const run = (args) => spawnSync(requireBin(), ['--data', path.join(dir, 'data'), ...args], { encoding: 'utf8', timeout: 10000 });

  test('a node reachable beyond loopback needs a cluster key or --insecure', T, async () => {
    const port = await freePort();
    for (const args of [['--http', `0.0.0.0:${port}`], ['--http', `127.0.0.1:${port}`, '--raft', `0.0.0.0:${port + 1}`],
      ['--http', `[::]:${port}`]]) {
      const r = run(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /without a cluster key.*--cluster-key-file.*--insecure/s);
    }
  });

  test('key and token files are checked', T, async () => {
    const port = await freePort();
    const open = path.join(dir, 'open.key');
    await fsp.writeFile(open, crypto.randomBytes(32).toString('hex'), { mode: 0o644 });
    await fsp.chmod(open, 0o644);
    let r = run(['--http', `127.0.0.1:${port}`, '--cluster-key-file', open]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /readable by other users; chmod 600/);
    const short = path.join(dir, 'short.key');
    await fsp.writeFile(short, 'abcd', { mode: 0o600 });
    r = run(['--http', `127.0.0.1:${port}`, '--cluster-key-file', short]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /want 64 hex digits/);
    r = run(['--http', `127.0.0.1:${port}`, '--admin-token', 'x'.repeat(257)]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /admin token must be 1\.\.256 bytes/);
  });

  test('driftctl keygen makes a key file only its owner reads, and never overwrites one', T, async () => {
    const f = path.join(dir, 'new.key');
    let r = spawnSync(requireCtl(), ['keygen', f], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const st = await fsp.stat(f);
    assert.equal(st.mode & 0o777, 0o600);
    assert.match(await fsp.readFile(f, 'utf8'), /^[0-9a-f]{64}\n$/);
    r = spawnSync(requireCtl(), ['keygen', f], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /File exists/);
    r = spawnSync(requireCtl(), ['keygen'], { encoding: 'utf8' });
    assert.match(r.stdout, /^[0-9a-f]{64}\n$/);
  });
});
