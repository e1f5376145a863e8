// The short chaos run (about a minute) as a test: tests/chaos/run.mjs with
// its defaults, in its own network namespaces. Needs root, ip netns, nft, tc
// and unshare; skipped with the reason otherwise, unless CHAOS_REQUIRE=1
// (CI), which turns the skip into a failure. CHAOS_SEED / CHAOS_DURATION /
// CHAOS_NODES / CHAOS_CHECK_STALE pass through.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { unsupportedReason } from './lib/env.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const why = unsupportedReason();
const skip = why && process.env.CHAOS_REQUIRE !== '1' ? `chaos suite needs: ${why}` : false;

test('chaos: partitions, loss, slow links, kill -9, SIGSTOP, restarts and a membership change; the checker finds nothing and catches every planted violation', { skip, timeout: 900000 }, async () => {
  assert.equal(why, null, `CHAOS_REQUIRE=1 but the chaos suite cannot run: ${why}`);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'driftd-chaos-'));
  const env = { ...process.env, CHAOS_OUT: out };
  env.CHAOS_DURATION ??= '60';
  const child = spawn(process.execPath, [path.join(here, 'run.mjs')], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? s)));
  const summaryFile = path.join(out, 'summary.json');
  const summary = fs.existsSync(summaryFile) ? JSON.parse(fs.readFileSync(summaryFile, 'utf8')) : null;
  assert.ok(summary, `run.mjs exited ${code} without a summary; node logs in ${out}`);
  assert.equal(code, 0, `chaos run failed (seed ${summary.seed}; replay with CHAOS_SEED=${summary.seed}); records and node logs in ${out}`);
  assert.ok(summary.pushes.ok > 0, 'no push was acknowledged');
  assert.ok(summary.selfTest.every((s) => s.caught), 'the checker missed a planted violation');
  fs.rmSync(out, { recursive: true, force: true });
});
