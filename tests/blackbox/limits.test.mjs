// Hostile and careless clients against one node: one address opening more
// connections than its share, trickling headers (slowloris), holding a
// fragmented message open, creating rooms in a loop, flooding messages. Each
// is bounded and answered, and a well-behaved client from another address
// is served meanwhile. Attackers use other loopback addresses (127.0.0.x).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';

import {
  useDriftd, createRoom, httpRequest, RawClient, waitFor,
} from './lib/harness.mjs';

const T = { timeout: 120000 };
// Under AddressSanitizer freed memory waits in a quarantine that RSS
// counts: off, so the memory bound measures what driftd holds.
if (process.env.ASAN_OPTIONS !== undefined) {
  process.env.ASAN_OPTIONS += ':quarantine_size_mb=0:thread_local_quarantine_size_kb=0';
}

function connectFrom(port, localAddress) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.closedAt = null;
    s.on('close', () => { s.closedAt = Date.now(); });
    s.on('error', () => {});
    s.on('connect', () => resolve(s));
    s.on('close', () => resolve(s));
  });
}

describe('per-client limits', () => {
  const ctx = useDriftd({
    name: 'limits',
    args: ['--max-connections-per-ip', '40', '--header-timeout', '2000', '--message-timeout', '2000',
      '--max-room-rate', '1', '--max-msg-rate', '50'],
  });

  test('one address past its connection share is refused; others are served', T, async () => {
    const port = ctx.srv.httpPort;
    const socks = [];
    for (let i = 0; i < 60; i++) socks.push(await connectFrom(port, '127.0.0.2'));
    await waitFor(() => socks.filter((s) => s.closedAt).length >= 20, 5000, '20 connections over the share to be refused');
    assert.ok(socks.filter((s) => s.closedAt).length <= 25, 'only those over the share');
    for (let i = 0; i < 10; i++) assert.equal((await httpRequest(`${ctx.srv.base}/healthz`, { timeoutMs: 2000 })).status, 200);
    for (const s of socks) s.destroy();
    await waitFor(() => /event=accept_refused remote=127\.0\.0\.2 why="connections per address"/.test(ctx.srv.output()), 5000, 'logged');
  });

  test('slowloris: trickled headers are cut after the header timeout; fresh requests pass meanwhile', T, async () => {
    const port = ctx.srv.httpPort;
    const socks = [];
    for (let a = 3; a < 10; a++) {
      for (let i = 0; i < 40; i++) {
        const s = await connectFrom(port, `127.0.0.${a}`);
        s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
        socks.push(s);
      }
    }
    const trickle = setInterval(() => { for (const s of socks) if (!s.closedAt) s.write('X-A: b\r\n'); }, 300);
    try {
      let ok = 0;
      for (let i = 0; i < 24; i++) {
        const r = await httpRequest(`${ctx.srv.base}/healthz`, { timeoutMs: 3000 }).catch(() => null);
        if (r?.status === 200) ok++;
      }
      assert.equal(ok, 24, `${ok} of 24 fresh /healthz answered during the attack`);
      await waitFor(() => socks.every((s) => s.closedAt), 10000, 'every trickling connection to be cut');
    } finally {
      clearInterval(trickle);
      for (const s of socks) s.destroy();
    }
  });

  test('a fragmented message left unfinished is refused with 1008', T, async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const c = await RawClient.connect(url, { label: 'half a message' });
    // A masked text frame without FIN: the first fragment of a message.
    const payload = Buffer.from('{"type":"push","key":"k",');
    const mask = crypto.randomBytes(4);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    c.ws._socket.write(Buffer.concat([Buffer.from([0x01, 0x80 | payload.length]), mask, masked]));
    const info = await c.closed;
    assert.equal(info.code, 1008, JSON.stringify(info));
    assert.match(info.reason, /not finished in time/);
  });

  test('a session over its message rate gets an error, then close 1008', T, async () => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const c = await RawClient.connect(url, { label: 'flooder' });
    for (let i = 0; i < 400; i++) c.ws.send(JSON.stringify({ type: 'ping', nonce: i }));
    const info = await c.closed;
    assert.equal(info.code, 1008, JSON.stringify(info));
    assert.ok(c.log.some((e) => e.msg?.type === 'error' && /rate limit/.test(e.msg.message)), 'an error before the close');
    assert.equal((await httpRequest(`${ctx.srv.base}/healthz`)).status, 200);
  });

  test('room creation is rate-limited per address (429 with Retry-After)', T, async () => {
    const codes = [];
    for (let i = 0; i < 15; i++) codes.push((await httpRequest(`${ctx.srv.base}/new`, { method: 'POST' })));
    const ok = codes.filter((r) => r.status === 200).length;
    const limited = codes.filter((r) => r.status === 429);
    assert.ok(ok >= 7 && ok <= 11, `${ok} rooms created in a burst (10 allowed, some used before)`);
    assert.ok(limited.length >= 4, `${limited.length} refused`);
    assert.ok(limited[0].headers['retry-after'], 'Retry-After');
    assert.match(limited[0].json().message ?? limited[0].text, /too many rooms/);
  });
});

describe('descriptor limit', () => {
  test('max-connections is capped below the descriptor limit; a flood is refused without a log storm', T, async (t) => {
    const { spawn } = await import('node:child_process');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const { freePort, requireBin, sleep } = await import('./lib/harness.mjs');
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'driftd-fd-'));
    // prlimit (util-linux) sets the limits of the process it runs.
    const p = spawn('prlimit', ['--nofile=600:600', requireBin(), '--http', `127.0.0.1:${port}`, '--raft', `127.0.0.1:${await freePort()}`,
      '--data', path.join(dir, 'd'), '--max-connections-per-ip', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const exited = new Promise((r) => p.on('exit', r));
    try {
      await waitFor(async () => (await httpRequest(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1000 }).catch(() => null))?.status === 200, 20000, 'the node');
      assert.match(out, /event=max_connections_capped from=10000 to=88 /);
      const socks = [];
      for (let i = 0; i < 700; i++) socks.push(await connectFrom(port, '127.0.0.2'));
      await sleep(1500); // a flood holds for a while: the log must not grow with it
      const len = out.length;
      await sleep(1500);
      t.diagnostic(`log ${out.length} bytes after the flood; grew ${out.length - len} in 1.5 s`);
      assert.ok(out.length < 200000, `log ${out.length} bytes`);
      assert.ok(out.length - len < 20000, `log grew ${out.length - len} bytes in 1.5 s of a held flood`);
      for (const s of socks) s.destroy();
      await waitFor(async () => (await httpRequest(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1000 }).catch(() => null))?.status === 200, 10000, 'served again');
    } finally {
      p.kill('SIGTERM');
      const code = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      assert.equal(code, 0, out.slice(-2000));
    }
  });
});

describe('log kept after a snapshot', () => {
  const ctx = useDriftd({ name: 'trailing', args: ['--snapshot-bytes', '32'] });

  test('1 MB relay pushes: the entries kept after each snapshot are bounded by bytes, and so is RSS', T, async (t) => {
    const { socket_url: url } = await createRoom(ctx.srv.base);
    const c = await RawClient.connect(url, { label: 'big relays' });
    await c.get('big');
    const value = 'x'.repeat(900 * 1024);
    let peak = 0;
    for (let i = 0; i < 400; i++) {
      c.push('big', `${i}:${value}`, 'relay');
      await c.next('push', 20000);
      if (i % 20 === 0) peak = Math.max(peak, ctx.srv.rssKiB());
    }
    peak = Math.max(peak, ctx.srv.rssKiB());
    t.diagnostic(`peak RSS ${(peak / 1024).toFixed(0)} MiB after 400 relay pushes of 900 KiB (352 MiB through the log)`);
    // 32 MiB between snapshots + 64 MiB kept after one, plus buffers; the
    // entry count alone (2048) would keep all 352 MiB.
    assert.ok(peak < 250 * 1024, `peak RSS ${peak} KiB`);
    await c.close();
  });
});
