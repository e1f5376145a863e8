// How a node stops: descriptors closed once (libwebsockets 4.1.6 closed its
// event pipe twice at every shutdown; when the number had been reused in
// between, by a raft connection accepted while stopping, libuv aborted:
// docs/reliability.md, finding 7; the fix is
// deploy/patches/libwebsockets/0003-event-pipe-closed-once-with-libuv.patch).
//
// The double close happens at every stop, so it is seen without the race:
// the node runs under `strace -f -e trace=close` and no close() may answer
// EBADF (a number closed a second time). Skipped where strace is missing
// or cannot trace (no ptrace).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  createRoom, freePort, httpRequest, requireBin, waitFor, withTimeout, RawClient, closeAllClients,
} from './lib/harness.mjs';

function straceUsable() {
  const r = spawnSync('strace', ['-f', '-qq', '-o', '/dev/null', 'true'], { timeout: 10000 });
  return r.status === 0;
}

describe('shutdown', () => {
  test('no descriptor is closed twice while the node stops (strace)', async (t) => {
    if (!straceUsable()) {
      t.skip('strace is missing or cannot trace here');
      return;
    }
    const bin = requireBin();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-shutdown-'));
    const trace = path.join(dir, 'strace.txt');
    let p = null;
    let pid = 0;
    try {
      const httpPort = await freePort();
      const raftPort = await freePort();
      const base = `http://127.0.0.1:${httpPort}`;
      p = spawn('strace', ['-f', '-qq', '-e', 'trace=close', '-o', trace, bin,
        '--id', '1', '--http', `127.0.0.1:${httpPort}`, '--raft', `127.0.0.1:${raftPort}`,
        '--data', path.join(dir, 'd')], {
        stdio: ['ignore', 'pipe', 'pipe'],
        // LeakSanitizer cannot run under ptrace (an ASan build would exit
        // 1 for it); the ASan suite checks leaks everywhere else.
        env: { ...process.env, ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'detect_leaks=0'].filter(Boolean).join(':') },
      });
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { out += d; });
      const exited = new Promise((resolve) => p.on('exit', (c, s) => resolve({ code: c, signal: s })));
      await waitFor(async () => (await httpRequest(`${base}/healthz`, { timeoutMs: 1000 })).status === 200,
        30000, `driftd under strace to answer /healthz\n${out}`);
      // Some traffic: a room, a push over HTTP, a WebSocket session left
      // open for the stop to close.
      const { room, socket_url: url } = await createRoom(base);
      const r = await httpRequest(`${base}/room/${room}/send`, {
        method: 'POST', body: { type: 'push', key: 'k', value: 1, action: { type: 'append' } },
      });
      assert.equal(r.status, 200, r.text);
      const ws = await RawClient.connect(url);
      ws.send({ type: 'ping', nonce: 1 });
      await ws.next('pong');
      // strace's child is the node (strace itself does not pass SIGTERM on).
      pid = Number(fs.readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
      assert.ok(pid > 0, 'the driftd pid, child of strace');
      process.kill(pid, 'SIGTERM');
      const ex = await withTimeout(exited, 20000, 'driftd to stop');
      assert.deepEqual(ex, { code: 0, signal: null }, `exit of driftd (under strace)\n${out}`);
      const twice = fs.readFileSync(trace, 'utf8').split('\n').filter((l) => /close\(\d+\)\s*= -1 EBADF/.test(l));
      assert.deepEqual(twice, [], 'close() of a descriptor already closed');
    } finally {
      if (p && p.exitCode === null && p.signalCode === null) {
        try { if (pid) process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        p.kill('SIGKILL');
      }
      await closeAllClients();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
