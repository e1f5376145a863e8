// Start-up failures name their cause: a raft port already in use makes
// driftd exit 1 with the address and the reason (libraft does not carry its
// transport's message into its own: it used to read "raft start: " and
// nothing more; seen by the chaos suite when a stray process held a port).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { freePort, requireBin, withTimeout } from './lib/harness.mjs';

describe('start-up failures', () => {
  test('a raft port in use: exit 1, the log names the address and the reason', async () => {
    const bin = requireBin();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-startup-'));
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const raftPort = holder.address().port;
    try {
      const httpPort = await freePort();
      const p = spawn(bin, ['--id', '1', '--http', `127.0.0.1:${httpPort}`, '--raft', `127.0.0.1:${raftPort}`,
        '--data', path.join(dir, 'd')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { out += d; });
      const code = await withTimeout(new Promise((resolve) => p.on('exit', (c) => resolve(c))), 20000, 'driftd to exit');
      assert.equal(code, 1, out);
      assert.match(out, new RegExp(`raft start: listen 127\\.0\\.0\\.1:${raftPort}: address already in use`), out);
    } finally {
      holder.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
