// driftd-bench: every scenario of the benchmark tool, briefly and at tiny
// scale, against a real 1-node driftd and a real 3-node cluster. This tests
// the tool, not driftd's speed: nothing asserts on timing. What must hold is
// the tool's own check (every acknowledged push reached every subscriber
// once, in seq order: exit status 0 and "ok": true in its --json output),
// and that the figures it reports are consistent with the scale asked for.
// With --workers the connections are split over worker processes: the
// merged result must pass the same check and count the same.
// The check itself is tested against a fake server that drops, repeats or
// reorders one message, closes a subscriber (1008) or refuses a push: the
// tool must say so and exit 1. Against TLS nodes (certificates made here
// with the openssl command line) the tool speaks https and wss, verifying
// the nodes against --cacert.
//
// Last, scripts/bench.sh itself in its quick mode, with one pair of runs:
// driftd's ingest scenario, then the same load against a 3-server NATS
// JetStream cluster (nats-server, and the Go load generator the script
// builds): both must pass, and results.md must hold the ratio line.
//
// The tool: $DRIFTD_BENCH_BIN (set by ctest), else driftd-bench next to
// $DRIFTD_BIN.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import {
  useDriftd, shutdownTest, requireBin, trustCA,
} from './lib/harness.mjs';
import { makeCerts } from './lib/certs.mjs';
import { useCluster } from './lib/cluster.mjs';

const T = { timeout: 120000 };

function benchBin() {
  const bin = process.env.DRIFTD_BENCH_BIN ?? path.join(path.dirname(requireBin()), 'driftd-bench');
  if (!fs.existsSync(bin)) {
    throw new Error(`driftd-bench not found at ${bin} (build the driftd-bench target, or set DRIFTD_BENCH_BIN)`);
  }
  return bin;
}

// Runs driftd-bench SCENARIO ARGS --json; resolves {code, signal, json,
// stdout, stderr}. Killed (and rejected) after timeoutMs.
function runBench(args, timeoutMs = 60000) {
  const bin = benchBin();
  return new Promise((resolve, reject) => {
    const p = spawn(bin, [...args, '--json', '--progress', '0.5'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`driftd-bench ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      let json = null;
      try { json = JSON.parse(stdout); } catch { /* asserted by the caller */ }
      resolve({ code, signal, json, stdout, stderr });
    });
  });
}

const SHORT = ['--duration', '2', '--warmup', '0.5', '--drain', '10'];

// Exit 0, parseable JSON, the check passed, and the common fields present.
function assertPassed(r, scenario) {
  const where = `driftd-bench ${scenario}: exit ${r.code}\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout}`;
  assert.equal(r.signal, null, where);
  assert.ok(r.json, `no JSON on stdout; ${where}`);
  assert.equal(r.code, 0, where);
  const j = r.json;
  assert.equal(j.scenario, scenario);
  assert.equal(j.ok, true, where);
  assert.equal(j.check.ok, true, where);
  for (const k of ['lost', 'reordered', 'duplicated', 'unacked', 'unexpected_closes', 'slow_consumer_closes',
    'connect_failures', 'bad_frames', 'errors']) {
    assert.equal(j.check[k], 0, `check.${k}; ${where}`);
  }
  assert.equal(j.check.drained, true, where);
  assert.equal(j.connections.ready, j.connections.target, where);
  assert.ok(j.measured_s > 0.5 && j.measured_s < 10, `measured_s ${j.measured_s}`);
  for (const h of ['ack_latency_ms', 'deliver_latency_ms']) {
    const l = j[h];
    if (l.count > 0) {
      assert.ok(l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, `${h} percentiles out of order: ${JSON.stringify(l)}`);
      assert.ok(l.min >= 0 && l.p50 > 0, `${h}: ${JSON.stringify(l)}`);
    }
  }
  return j;
}

// The scenarios against the nodes of urlsOf() (known only once they run).
function scenarios(urlsOf, pidsOf) {
  const u = () => ['--url', urlsOf().join(',')];

  test('ingest: acknowledged pushes, push->ack latency', T, async () => {
    const j = assertPassed(await runBench(['ingest', ...u(), ...SHORT, '--publishers', '3', '--window', '8',
      '--value-size', '64']), 'ingest');
    assert.equal(j.params.publishers, 3);
    assert.equal(j.params.action, 'append');
    assert.ok(j.pushes.acked > 0 && j.pushes.acked_per_s > 0, JSON.stringify(j.pushes));
    assert.equal(j.ack_latency_ms.count, j.pushes.acked);
    assert.equal(j.deliveries.count, 0);
    // every push of the whole run was acknowledged (nothing refused)
    assert.equal(j.totals.acked, j.totals.sent);
  });

  // --lws-rx: lws' own WebSocket client parses the frames (the tool's own
  // parser, on plain connections, is the default)
  test('ingest at a fixed rate with subscribers: push->deliver latency', T, async () => {
    const j = assertPassed(await runBench(['ingest', ...u(), ...SHORT, '--publishers', '2', '--subscribers', '2',
      '--rate', '200', '--relay', '--no-coalesce', '--lws-rx']), 'ingest');
    assert.equal(j.params.action, 'relay');
    assert.ok(j.deliveries.count > 0, JSON.stringify(j.deliveries));
    assert.equal(j.totals.deliveries, j.totals.acked, 'one subscriber per room gets each push once');
    // 200/s for 2 s: roughly, not a timing assertion
    assert.ok(j.pushes.sent > 50 && j.pushes.sent < 1000, JSON.stringify(j.pushes));
  });

  test('fanout at a fixed rate: every subscriber gets every push', T, async () => {
    const j = assertPassed(await runBench(['fanout', ...u(), ...SHORT, '--subscribers', '20', '--rate', '100']),
      'fanout');
    assert.equal(j.params.rooms, 1);
    assert.equal(j.connections.target, 21);
    assert.equal(j.totals.deliveries, j.totals.acked * 20);
    assert.equal(j.deliver_latency_ms.count, j.deliveries.count);
  });

  test('fanout closed loop, two publishers, msgpack', T, async () => {
    const j = assertPassed(await runBench(['fanout', ...u(), ...SHORT, '--msgpack', '--publishers', '2',
      '--subscribers', '10', '--rate', '0', '--window', '8']), 'fanout');
    assert.equal(j.format, 'msgpack');
    // each publisher also receives the other's pushes: 10 + 1 deliveries each
    assert.equal(j.totals.deliveries, j.totals.acked * 11);
  });

  test('fanout closed loop over two worker processes', T, async () => {
    const j = assertPassed(await runBench(['fanout', ...u(), ...SHORT, '--subscribers', '30', '--rate', '0',
      '--window', '8', '--workers', '2']), 'fanout');
    assert.equal(j.workers, 2);
    assert.equal(j.connections.target, 31);
    assert.ok(j.deliveries.count > 0, JSON.stringify(j.deliveries));
    // the publisher's acks are counted in one worker, the subscribers'
    // deliveries in both: every push reached all 30
    assert.equal(j.totals.deliveries, j.totals.acked * 30);
    assert.equal(j.deliver_latency_ms.count, j.deliveries.count);
    // the tool's CPU: the parent's plus each worker's, each read from /proc
    assert.equal(j.cpu.bench_workers_s.length, 2, JSON.stringify(j.cpu));
    const sum = j.cpu.bench_workers_s.reduce((a, b) => a + b, 0);
    assert.ok(j.cpu.bench_workers_s.every((x) => x > 0), JSON.stringify(j.cpu));
    assert.ok(j.cpu.bench_s > 0 && j.cpu.bench_s >= sum - 1e-6, JSON.stringify(j.cpu));
  });

  test('rooms: many small rooms', T, async () => {
    const j = assertPassed(await runBench(['rooms', ...u(), ...SHORT, '--rooms', '10', '--clients', '3',
      '--rate', '5']), 'rooms');
    assert.equal(j.params.rooms, 10);
    assert.equal(j.connections.target, 30);
    assert.equal(j.totals.deliveries, j.totals.acked * 2);
  });

  test('ingest with subscribers over three worker processes', T, async () => {
    const j = assertPassed(await runBench(['ingest', ...u(), ...SHORT, '--publishers', '3', '--subscribers', '3',
      '--window', '8', '--workers', '3']), 'ingest');
    assert.equal(j.workers, 3);
    assert.ok(j.pushes.acked > 0, JSON.stringify(j.pushes));
    assert.equal(j.totals.deliveries, j.totals.acked, 'one subscriber per room gets each push once');
    assert.equal(j.ack_latency_ms.count, j.pushes.acked);
  });

  test('connections: idle subscribed connections, node memory', T, async () => {
    const pids = pidsOf();
    const n = urlsOf().length;
    const j = assertPassed(await runBench(['connections', ...u(), ...pids.flatMap((p) => ['--pid', String(p)]),
      '--duration', '2', '--warmup', '0.5', '--connections', '60', '--rooms', '4']), 'connections');
    assert.equal(j.connections.ready, 60);
    assert.ok(j.connections.connect_rate > 0);
    // one push per room reached all 15 connections of the room
    assert.equal(j.totals.acked, 4);
    assert.equal(j.totals.deliveries, 4 * 14);
    assert.equal(j.nodes.length, n);
    j.nodes.forEach((node, i) => {
      assert.equal(node.pid, pids[i]);
      assert.equal(node.connections, 60 / n);
      assert.ok(node.rss_before_kib > 0 && node.rss_after_kib > 0, JSON.stringify(node));
      // the RSS growth over the node's connections (src/bench/report.c),
      // printed with 6 significant digits (JSON_REAL_PRECISION(6))
      const want = ((node.rss_after_kib - node.rss_before_kib) * 1024) / node.connections;
      assert.ok(Math.abs(node.bytes_per_conn - want) <= 5e-6 * Math.max(1, Math.abs(want)),
        `bytes_per_conn ${node.bytes_per_conn}, want ${want}: ${JSON.stringify(node)}`);
    });
  });
}

describe('driftd-bench against one node', () => {
  const ctx = useDriftd();

  scenarios(() => [ctx.srv.base], () => [ctx.srv.pid]);

  test('node pids are found through /proc when not given', T, async () => {
    const j = assertPassed(await runBench(['connections', '--url', ctx.srv.base, '--duration', '1',
      '--warmup', '0.2', '--connections', '6', '--rooms', '1']), 'connections');
    assert.equal(j.nodes[0].pid, ctx.srv.pid);
    assert.equal(j.nodes[0].pid_from_port, true);
  });

  test('bad usage exits 2', T, async () => {
    assert.equal((await runBench(['nosuchscenario'])).code, 2);
    assert.equal((await runBench(['fanout', '--url', 'ftp://127.0.0.1:1'])).code, 2);
    assert.equal((await runBench(['fanout', '--rate', 'fast'])).code, 2);
  });

  shutdownTest(ctx);
});

// ---- the check itself, against a faulty fake server ---------------------------

// A minimal DriftDB server (POST /new, GET /room/ID, WebSocket get/push in
// JSON) that breaks its contract once, on purpose, at the push with seq
// FAULT_SEQ, towards one subscriber that is not the sender ("the victim"):
//   drop     the victim never gets it
//   dup      the victim gets it twice
//   reorder  the victim gets it after the next one
//   close    the victim is closed with 1008, as a slow consumer would be
//   error    the push is refused with an `error` to its sender, not applied
const FAULT_SEQ = 5;

async function startFakeServer(fault) {
  const rooms = new Map();
  let nextRoom = 0;
  const srv = http.createServer((req, res) => {
    const host = req.headers.host;
    if (req.method === 'POST' && req.url === '/new') {
      const id = `fakeroom${++nextRoom}`;
      rooms.set(id, { seq: 0, subs: new Map(), held: null });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ room: id, socket_url: `ws://${host}/room/${id}/connect`, http_url: `http://${host}/room/${id}/send` }));
      return;
    }
    const m = /^\/room\/([^/?]+)$/.exec(req.url);
    if (req.method === 'GET' && m && rooms.has(m[1])) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const wss = new WebSocketServer({ noServer: true });
  srv.on('upgrade', (req, sock, head) => {
    const m = /^\/room\/([^/?]+)\/connect/.exec(req.url);
    const room = m && rooms.get(m[1]);
    if (!room) { sock.destroy(); return; }
    wss.handleUpgrade(req, sock, head, (ws) => session(ws, room));
  });

  function session(ws, room) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.type === 'get') {
        if (!room.subs.has(msg.key)) room.subs.set(msg.key, new Set());
        room.subs.get(msg.key).add(ws);
        ws.send(JSON.stringify({ type: 'init', key: msg.key, data: [] }));
        return;
      }
      if (msg.type !== 'push') return;
      if (fault === 'error' && room.seq + 1 === FAULT_SEQ && !room.refused) {
        room.refused = true;
        ws.send(JSON.stringify({ type: 'error', message: 'push: not applied (fake)' }));
        return;
      }
      const seq = ++room.seq;
      const out = JSON.stringify({ type: 'push', key: msg.key, value: msg.value, seq });
      const subs = [...(room.subs.get(msg.key) ?? [])];
      const victim = seq === FAULT_SEQ ? subs.find((x) => x !== ws) : null;
      for (const sub of subs) {
        if (sub === victim) {
          if (fault === 'drop') continue;
          if (fault === 'dup') sub.send(out);
          if (fault === 'reorder') { room.held = { sub, out }; continue; }
          if (fault === 'close') { sub.close(1008, 'slow consumer'); continue; }
        }
        sub.send(out);
        if (room.held && room.held.sub === sub && seq === FAULT_SEQ + 1) {
          sub.send(room.held.out);
          room.held = null;
        }
      }
    });
    ws.on('close', () => {
      for (const set of room.subs.values()) set.delete(ws);
    });
  }

  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      srv.close(resolve);
    }),
  };
}

describe('driftd-bench catches a server that loses, repeats or reorders', () => {
  const cases = [
    ['drop', (c) => assert.ok(c.lost >= 1, JSON.stringify(c))],
    ['dup', (c) => assert.ok(c.duplicated >= 1, JSON.stringify(c))],
    ['reorder', (c) => assert.ok(c.reordered >= 1, JSON.stringify(c))],
    ['close', (c) => {
      assert.equal(c.unexpected_closes, 1, JSON.stringify(c));
      assert.equal(c.slow_consumer_closes, 1, JSON.stringify(c));
    }],
    ['error', (c) => assert.equal(c.errors, 1, JSON.stringify(c))],
  ];
  for (const [fault, check] of cases) {
    test(`${fault}: the run fails with exit status 1`, T, async () => {
      const fake = await startFakeServer(fault);
      try {
        const r = await runBench(['fanout', '--url', fake.url, '--duration', '1', '--warmup', '0', '--drain', '2',
          '--subscribers', '3', '--rate', '50']);
        assert.equal(r.code, 1, `${r.stderr}\n${r.stdout}`);
        assert.ok(r.json, r.stderr);
        assert.equal(r.json.ok, false);
        assert.equal(r.json.check.ok, false);
        assert.notEqual(r.json.failure, '');
        check(r.json.check);
      } finally {
        await fake.close();
      }
    });
  }

  test('drop, with the subscribers split over two workers: the merged check fails', T, async () => {
    const fake = await startFakeServer('drop');
    try {
      const r = await runBench(['fanout', '--url', fake.url, '--duration', '1', '--warmup', '0', '--drain', '2',
        '--subscribers', '3', '--rate', '50', '--workers', '2']);
      assert.equal(r.code, 1, `${r.stderr}\n${r.stdout}`);
      assert.equal(r.json.workers, 2);
      assert.equal(r.json.ok, false);
      assert.ok(r.json.check.lost >= 1, JSON.stringify(r.json.check));
      assert.notEqual(r.json.failure, '');
    } finally {
      await fake.close();
    }
  });

  test('error with --allow-errors: refused pushes are not acks, nothing lost', T, async () => {
    const fake = await startFakeServer('error');
    try {
      const r = await runBench(['fanout', '--url', fake.url, '--duration', '1', '--warmup', '0', '--drain', '2',
        '--subscribers', '3', '--rate', '50', '--allow-errors']);
      assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
      assert.equal(r.json.check.errors, 1);
      assert.equal(r.json.check.lost, 0);
      assert.equal(r.json.totals.acked, r.json.totals.sent - 1);
    } finally {
      await fake.close();
    }
  });

  test('no fault: the fake server passes', T, async () => {
    const fake = await startFakeServer('none');
    try {
      assertPassed(await runBench(['fanout', '--url', fake.url, '--duration', '1', '--warmup', '0',
        '--subscribers', '3', '--rate', '50']), 'fanout');
    } finally {
      await fake.close();
    }
  });
});

describe('driftd-bench against a 3-node cluster', () => {
  const ctx = useCluster({ size: 3 });
  const ids = [1, 2, 3];

  scenarios(() => ids.map((id) => ctx.cluster.node(id).base), () => ids.map((id) => ctx.cluster.node(id).pid));
});

// ---- TLS nodes ----------------------------------------------------------------

describe('driftd-bench against a 3-node TLS cluster (wss, https; mutual TLS on raft)', () => {
  const certs = makeCerts('driftd-bench-tls-');
  trustCA(fs.readFileSync(certs.ca));
  after(() => fs.rmSync(certs.dir, { recursive: true, force: true }));
  const ctx = useCluster({
    size: 3,
    name: 'benchtls',
    args: ['--tls-cert', certs.cert, '--tls-key', certs.key, '--peer-ca', certs.ca,
      '--peer-cert', certs.cert, '--peer-key', certs.key],
  });
  const urls = () => [1, 2, 3].map((id) => ctx.cluster.node(id).base);

  test('ingest with subscribers on other nodes: nothing lost', T, async () => {
    await ctx.cluster.waitLeader();
    for (const u of urls()) assert.match(u, /^https:/);
    const j = assertPassed(await runBench(['ingest', '--url', urls().join(','), '--cacert', certs.ca, ...SHORT,
      '--publishers', '3', '--subscribers', '3', '--window', '16', '--value-size', '64']), 'ingest');
    assert.equal(j.tls, true);
    assert.ok(j.pushes.acked > 0, JSON.stringify(j.pushes));
    assert.equal(j.totals.deliveries, j.totals.acked, 'one subscriber per room gets each push once');
  });

  test('fanout at a fixed rate, msgpack, one write per push', T, async () => {
    const j = assertPassed(await runBench(['fanout', '--url', urls().join(','), '--cacert', certs.ca, ...SHORT,
      '--msgpack', '--no-coalesce', '--subscribers', '12', '--rate', '100']), 'fanout');
    assert.equal(j.totals.deliveries, j.totals.acked * 12);
  });

  test('a node whose certificate does not chain to --cacert: set-up error, exit 2', T, async () => {
    const r = await runBench(['ingest', '--url', urls()[0], '--cacert', certs.other, '--duration', '1',
      '--publishers', '1']);
    assert.equal(r.code, 2, `${r.stderr}\n${r.stdout}`);
    assert.match(r.stderr, /TLS: certificate/);
  });
});

// ---- scripts/bench.sh: driftd's ingest next to NATS JetStream -----------------

// A base port for scripts/bench.sh whose derived ports are all free now:
// driftd HTTP BASE+1..3, raft BASE+101..103, nats-server client BASE+201..203,
// routes BASE+211..213, monitoring BASE+221..223. BENCH_TEST_BASE_PORT fixes it.
async function freeBenchBase() {
  if (process.env.BENCH_TEST_BASE_PORT) return Number(process.env.BENCH_TEST_BASE_PORT);
  const offsets = [1, 2, 3, 101, 102, 103, 201, 202, 203, 211, 212, 213, 221, 222, 223];
  const bindable = (port) => new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  for (let i = 0; i < 50; i++) {
    const base = 20000 + 10 * Math.floor(Math.random() * 900);
    let ok = true;
    for (const o of offsets) {
      if (!(await bindable(base + o))) { ok = false; break; }
    }
    if (ok) return base;
  }
  throw new Error('no free port range for scripts/bench.sh');
}

// The quick set of ingest and jetstream, one pair: both run, the JetStream
// result has acknowledged publishes and no error, results.md has the ratio
// line and the fsync note. No figure is compared with another.
describe('scripts/bench.sh: driftd ingest and NATS JetStream R3, one quick pair', () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'driftd-bench-sh-'));
  after(() => fs.rmSync(out, { recursive: true, force: true }));

  test('both run, the ratio is written next to the figures', { timeout: 240000 }, async (t) => {
    for (const bin of ['nats-server', 'go']) {
      // scripts/deps.sh installs them: their absence is a set-up fault
      assert.equal(spawnSync('sh', ['-c', `command -v ${bin}`]).status, 0,
        `${bin} is not installed (scripts/deps.sh installs nats-server, golang-go, golang-github-nats-io-go-nats-dev)`);
    }
    const build = path.dirname(requireBin());
    const script = fileURLToPath(new URL('../../scripts/bench.sh', import.meta.url));
    const base = await freeBenchBase();
    const env = {
      ...process.env, QUICK: '1', RUNS: '1', DURATION: '2', WARMUP: '1', SCENARIOS: 'ingest jetstream',
      BASE_PORT: String(base), OUT: out, DRIFTD: requireBin(), BENCH: benchBin(),
    };
    const r = await new Promise((resolve, reject) => {
      const p = spawn(script, [build], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      p.stdout.on('data', (d) => { log += d; });
      p.stderr.on('data', (d) => { log += d; });
      const timer = setTimeout(() => { p.kill('SIGTERM'); reject(new Error(`bench.sh did not finish\n${log}`)); }, 220000);
      p.on('error', (e) => { clearTimeout(timer); reject(e); });
      p.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal, log }); });
    });
    t.diagnostic(`BASE_PORT ${base}`);
    assert.equal(r.code, 0, `bench.sh exit ${r.code} ${r.signal ?? ''}\n${r.log}`);

    const ingest = JSON.parse(fs.readFileSync(path.join(out, 'ingest-1.json'), 'utf8'));
    assert.equal(ingest.ok, true, r.log);
    const js = JSON.parse(fs.readFileSync(path.join(out, 'jetstream-1.json'), 'utf8'));
    assert.equal(js.scenario, 'jetstream');
    assert.equal(js.ok, true, JSON.stringify(js));
    assert.equal(js.params.publishers, ingest.params.publishers);
    assert.equal(js.params.window, ingest.params.window);
    assert.equal(js.params.value_size, ingest.params.value_size);
    assert.equal(js.params.replicas, 3);
    assert.equal(js.params.storage, 'file');
    assert.equal(js.params.urls.length, 3);
    assert.ok(js.pushes.acked > 0 && js.pushes.acked_per_s > 0, JSON.stringify(js.pushes));
    assert.equal(js.pushes.errors, 0);
    assert.equal(js.totals.errors, 0);
    assert.equal(js.totals.acked, js.totals.sent, 'every publish of the run acknowledged');
    assert.equal(js.ack_latency_ms.count, js.pushes.acked);
    const l = js.ack_latency_ms;
    assert.ok(l.min > 0 && l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, JSON.stringify(l));
    assert.equal(js.nodes.length, 3);
    for (const n of js.nodes) assert.ok(n.pid > 0 && n.cpu_s >= 0, JSON.stringify(n));

    const md = fs.readFileSync(path.join(out, 'results.md'), 'utf8');
    const m = /^driftd ingest \/ JetStream R3 = ([0-9.]+) \(median of per-pair ratios over 1 pair: ([0-9.]+)\)$/m.exec(md);
    assert.ok(m, `no ratio line in results.md:\n${md}`);
    const want = ingest.pushes.acked_per_s / js.pushes.acked_per_s;
    assert.ok(Math.abs(Number(m[2]) - want) <= 0.001 + 1e-3 * want, `ratio ${m[2]}, want ${want}`);
    assert.ok(Math.abs(Number(m[1]) - want) <= 0.01 + 1e-2 * want, `ratio ${m[1]}, want ${want}`);
    assert.match(md, /^## driftd ingest and NATS JetStream R3$/m);
    assert.match(md, /without fsync/);
    assert.match(md, /^\| acknowledged publishes\/s \| [0-9]+ \| [0-9]+ \|$/m);
    // the stores went with their clusters
    for (const d of ['ingest-1', 'jetstream-1']) assert.equal(fs.existsSync(path.join(out, d, 'data')), false, d);
  });
});
