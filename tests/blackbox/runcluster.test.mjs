// deploy/run-cluster.sh (what `make run` runs) and Ctrl-C.
//
// A terminal's Ctrl-C sends SIGINT to the whole foreground process group:
// the script and its three nodes at once. The script runs here in its own
// process group (detached = setsid) on free ports; once every node's
// /healthz answers, the group gets SIGINT: the script must exit 0 with one
// summary line, report no node as exited unexpectedly, and leave no driftd
// of its run behind. A node killed for real (kill -9) must still be
// reported, and the script's status is then 1. Last, `make run` itself in a
// pseudo-terminal (util-linux `script`), Ctrl-C typed as ^C: make exits 0.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { requireBin, httpRequest, waitFor, withTimeout } from './lib/harness.mjs';

const T = { timeout: 120000 };
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT = path.join(ROOT, 'deploy/run-cluster.sh');

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// A base with BASE..BASE+2 free for HTTP and BASE+1000.. for raft.
async function freeBase() {
  for (let tries = 0; tries < 200; tries++) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    let ok = true;
    for (const p of [base, base + 1, base + 2, base + 1000, base + 1001, base + 1002]) {
      if (!(await portFree(p))) { ok = false; break; }
    }
    if (ok) return base;
  }
  throw new Error('no free port range');
}

// PIDs of live driftd processes whose command line mentions dataRoot.
function driftdsOf(dataRoot) {
  const pids = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let cmd;
    try { cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8'); } catch { continue; }
    const argv = cmd.split('\0');
    if (path.basename(argv[0]) === 'driftd' && argv.some((a) => a.startsWith(dataRoot))) {
      let state = '';
      try { state = /State:\s+(\S)/.exec(fs.readFileSync(`/proc/${d}/status`, 'utf8'))?.[1] ?? ''; } catch { continue; }
      if (state !== 'Z') pids.push(Number(d));
    }
  }
  return pids;
}

class Run {
  // cmd/args: what to start (the script, or `script -c make run`).
  static async start({ cmd, args, name = 'run-cluster', stdin = 'ignore', env = {} }) {
    const r = new Run();
    r.name = name;
    r.root = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-runcl-'));
    r.dataRoot = path.join(r.root, 'data');
    r.base = await freeBase();
    r.out = '';
    r.proc = spawn(cmd, args, {
      cwd: ROOT,
      detached: true, // setsid: its own session and process group
      stdio: [stdin, 'pipe', 'pipe'],
      env: {
        ...process.env,
        DRIFTD: requireBin(),
        DRIFTCTL: path.join(path.dirname(requireBin()), 'driftctl'),
        DATA_ROOT: r.dataRoot,
        HTTP_PORT_BASE: String(r.base),
        RAFT_PORT_BASE: String(r.base + 1000),
        DRIFTD_ARGS: '--election-timeout 500 --heartbeat 50',
        ...env,
      },
    });
    r.proc.stdout.on('data', (d) => { r.out += d; });
    r.proc.stderr.on('data', (d) => { r.out += d; });
    r.exited = new Promise((resolve) => r.proc.on('exit', (code, signal) => resolve({ code, signal })));
    return r;
  }

  url(i) { return `http://127.0.0.1:${this.base + i - 1}`; }

  async waitUp(timeoutMs = 60000, ids = [1, 2, 3]) {
    for (const i of ids) {
      await waitFor(async () => {
        if (this.proc.exitCode !== null) throw new Error(`exited early:\n${this.out}`);
        return (await httpRequest(`${this.url(i)}/healthz`, { timeoutMs: 1000 })).status === 200;
      }, timeoutMs, `node ${i} /healthz 200`, 100);
    }
  }

  async waitExit(timeoutMs = 60000) {
    return withTimeout(this.exited, timeoutMs, `${this.name} to exit`);
  }

  runLines() { return this.out.split(/\r?\n/).filter((l) => l.startsWith('run-cluster: ')); }

  async dispose() {
    try { process.kill(-this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    for (const pid of driftdsOf(this.dataRoot)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await fsp.rm(this.root, { recursive: true, force: true });
  }
}

const runs = [];
after(async () => { for (const r of runs) await r.dispose(); });

function fail(r, e) {
  process.stderr.write(`\n----- ${r.name} output -----\n${r.out.slice(-40000)}\n----- end -----\n`);
  throw e;
}

describe('deploy/run-cluster.sh', () => {
  test('SIGINT to the process group (Ctrl-C): three clean stops, one summary line, exit 0, no driftd left', T, async () => {
    const r = await Run.start({ cmd: SCRIPT, args: [] });
    runs.push(r);
    try {
      await r.waitUp();
      assert.equal(driftdsOf(r.dataRoot).length, 3, 'three driftd processes of this run');
      process.kill(-r.proc.pid, 'SIGINT');
      const info = await r.waitExit();
      assert.deepEqual(info, { code: 0, signal: null }, 'the script must exit 0 after Ctrl-C');
      const lines = r.runLines();
      assert.ok(!lines.some((l) => /unexpectedly|failed/.test(l)), `a node was reported as failed:\n${lines.join('\n')}`);
      for (const i of [1, 2, 3]) assert.ok(lines.includes(`run-cluster: node ${i} stopped (exit 0)`), `node ${i} not reported stopped`);
      assert.equal(lines.at(-1), 'run-cluster: all 3 nodes stopped cleanly');
      assert.equal(lines.filter((l) => /nodes stopped cleanly/.test(l)).length, 1, 'one summary line');
      await waitFor(() => driftdsOf(r.dataRoot).length === 0, 5000, 'no driftd of the run left');
      for (const i of [1, 2, 3]) {
        assert.match(fs.readFileSync(path.join(r.dataRoot, `node${i}.log`), 'utf8'), /event=exit code=0/);
      }
    } catch (e) { fail(r, e); }
  });

  // Killed while the script still polls /healthz (a foreground curl or
  // sleep): bash reaps the node then, and `wait -n` no longer knows it.
  test('a node that dies for real (even during start-up) is reported and makes the status 1; the others keep running', T, async () => {
    const r = await Run.start({ cmd: SCRIPT, args: [] });
    runs.push(r);
    try {
      const m = await waitFor(() => /run-cluster: node 2 \(pid (\d+)\)/.exec(r.out), 10000, 'node 2 started', 5);
      process.kill(Number(m[1]), 'SIGKILL');
      await waitFor(() => r.runLines().some((l) => l.startsWith(`run-cluster: node 2 (pid ${m[1]}) exited unexpectedly with status 137`)), 10000, 'node 2 reported dead');
      await r.waitUp(60000, [1, 3]);
      assert.equal(r.proc.exitCode, null, 'the script must keep running with two nodes');
      assert.equal(driftdsOf(r.dataRoot).length, 2);
      process.kill(-r.proc.pid, 'SIGINT');
      const info = await r.waitExit();
      assert.deepEqual(info, { code: 1, signal: null });
      assert.equal(r.runLines().at(-1), 'run-cluster: 2 of 3 nodes stopped cleanly; failed: node 2 (status 137)');
      await waitFor(() => driftdsOf(r.dataRoot).length === 0, 5000, 'no driftd of the run left');
    } catch (e) { fail(r, e); }
  });

  test('make run in a terminal: ^C stops the cluster and make exits 0', T, async (t) => {
    const make = spawnSync('make', ['--version'], { encoding: 'utf8' });
    const scr = spawnSync('script', ['--version'], { encoding: 'utf8' });
    if (make.status !== 0 || scr.status !== 0) {
      t.skip('needs make and util-linux script (a pseudo-terminal)');
      return;
    }
    // -o build: the build is the test's own (BUILD= its folder), not redone.
    const build = path.dirname(requireBin());
    const r = await Run.start({
      name: 'make run',
      cmd: 'script',
      args: ['-q', '-e', '-f', '-c', `make --no-print-directory -o build run BUILD=${build}`, '/dev/null'],
      stdin: 'pipe',
      // Under `make test` the outer make's settings must not leak in.
      env: { MAKEFLAGS: '', MFLAGS: '', MAKELEVEL: '' },
    });
    runs.push(r);
    try {
      await r.waitUp();
      r.proc.stdin.write('\x03'); // the terminal's intr character: SIGINT to its foreground group
      const info = await r.waitExit();
      assert.ok(r.runLines().at(-1) === 'run-cluster: all 3 nodes stopped cleanly', `no clean summary:\n${r.runLines().join('\n')}`);
      assert.deepEqual(info, { code: 0, signal: null }, 'make run must exit 0 after Ctrl-C');
      assert.doesNotMatch(r.out, /make: \*\*\*/);
      await waitFor(() => driftdsOf(r.dataRoot).length === 0, 5000, 'no driftd of the run left');
    } catch (e) { fail(r, e); } finally {
      r.proc.stdin.end();
    }
  });
});
