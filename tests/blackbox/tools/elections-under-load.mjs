// Counts raft elections in a 3-node cluster under full ingest load: are
// there spurious ones (a leader replaced while it was alive) at the default
// --election-timeout / --heartbeat? Not a test (a count over minutes of
// load on a shared machine belongs in docs/benchmarks.md, "Failover").
//
//   DRIFTD_BIN=build/driftd node tests/blackbox/tools/elections-under-load.mjs \
//       [--minutes 10] [--base-port 48500] [--bench build/driftd-bench] \
//       [--out DIR] [--relay] [-- extra driftd flags...]
//
// Starts three nodes as scripts/bench.sh does (fresh data dirs, HTTP on
// BASE+1..3, raft on BASE+101..103, limits off), reads every node's
// driftd_raft_elections_total (term changes seen: one per election) and
// leader changes from /metrics, runs `driftd-bench ingest --publishers 16
// --window 64 --value-size 64` for the given minutes (the benchmark's peak
// ingest scenario), polls /metrics every 10 s meanwhile (when an election
// shows up, when it happened), reads the counters again and stops the nodes
// with SIGTERM (exit 0 expected). A fresh cluster shows 1 election per node
// (the first one, at bootstrap) before the load. Node logs stay in --out;
// lines with event=leader_changed and raft's "convert to candidate" are
// summarised. Exit status 1 when any election happened under load or a
// node did not exit 0.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { httpRequest, sleep, waitFor } from '../lib/harness.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    minutes: { type: 'string', default: '10' },
    'base-port': { type: 'string', default: '48500' },
    bench: { type: 'string' },
    out: { type: 'string' },
    relay: { type: 'boolean', default: false },
  },
});
const bin = process.env.DRIFTD_BIN;
if (!bin) throw new Error('DRIFTD_BIN is not set');
const bench = values.bench ?? path.join(path.dirname(bin), 'driftd-bench');
const minutes = Number(values.minutes);
const basePort = Number(values['base-port']);
const out = values.out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'driftd-elections-'));
const ids = [1, 2, 3];
const httpPort = (i) => basePort + i;
const raftPort = (i) => basePort + 100 + i;
const base = (i) => `http://127.0.0.1:${httpPort(i)}`;
const bootstrap = ids.map((i) => `${i}=127.0.0.1:${raftPort(i)}`).join(',');

const nodes = new Map();
for (const i of ids) {
  const data = path.join(out, `node${i}`);
  fs.rmSync(data, { recursive: true, force: true });
  fs.mkdirSync(data, { recursive: true });
  const log = fs.openSync(path.join(out, `node${i}.log`), 'w');
  const p = spawn(bin, ['--id', String(i), '--http', `127.0.0.1:${httpPort(i)}`, '--raft', `127.0.0.1:${raftPort(i)}`,
    '--data', data, '--bootstrap', bootstrap, '--max-connections', '10100', '--max-connections-per-ip', '0',
    '--max-room-rate', '0', '--max-msg-rate', '0', '--max-byte-rate', '0', ...positionals],
  { stdio: ['ignore', log, log] });
  const exited = new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal })));
  nodes.set(i, { p, exited });
}
let failed = false;
try {
  for (const i of ids) {
    await waitFor(async () => (await httpRequest(`${base(i)}/healthz`, { timeoutMs: 1000 })).status === 200,
      30000, `node ${i} /healthz`);
  }

  async function counters(i) {
    const r = await httpRequest(`${base(i)}/metrics`, { timeoutMs: 5000 });
    const get = (name) => Number((r.text.match(new RegExp(`^${name} (\\S+)$`, 'm')) ?? [])[1]);
    return {
      elections: get('driftd_raft_elections_total'),
      leaderChanges: get('driftd_raft_leader_changes_total'),
      snapshots: get('driftd_snapshots_total'),
    };
  }
  const before = {};
  for (const i of ids) before[i] = await counters(i);

  const t0 = Date.now();
  const benchOut = fs.openSync(path.join(out, 'bench.txt'), 'w');
  const b = spawn(bench, ['ingest', '--publishers', '16', '--window', '64', '--value-size', '64',
    ...(values.relay ? ['--relay'] : []), '--duration', String(Math.round(minutes * 60)), '--warmup', '0', '--url', ids.map(base).join(',')],
  { stdio: ['ignore', benchOut, benchOut] });
  const benchDone = new Promise((resolve) => b.on('exit', (code) => resolve(code)));
  let benchCode = null;
  benchDone.then((c) => { benchCode = c; });
  let seen = { ...before };
  while (benchCode === null) {
    await Promise.race([sleep(10000), benchDone]);
    for (const i of ids) {
      const c = await counters(i).catch(() => null);
      if (c && c.elections > seen[i].elections) {
        console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s: node ${i} saw ${c.elections - seen[i].elections} election(s) (${new Date().toISOString()})`);
      }
      if (c) seen[i] = c;
    }
  }
  const after = {};
  for (const i of ids) after[i] = await counters(i);
  const benchTail = fs.readFileSync(path.join(out, 'bench.txt'), 'utf8').trim().split('\n').slice(-6).join('\n');
  console.log(`driftd-bench ingest --publishers 16 --window 64 --value-size 64 --duration ${Math.round(minutes * 60)} (exit ${benchCode}):\n${benchTail}`);
  let under = 0;
  for (const i of ids) {
    const d = after[i].elections - before[i].elections;
    under += d;
    console.log(`node ${i}: elections_total ${before[i].elections} -> ${after[i].elections} (+${d}), leader_changes_total ${before[i].leaderChanges} -> ${after[i].leaderChanges}, snapshots_total ${before[i].snapshots} -> ${after[i].snapshots}`);
  }
  for (const i of ids) {
    const lines = fs.readFileSync(path.join(out, `node${i}.log`), 'utf8').split('\n')
      .filter((l) => /event=leader_changed|convert to candidate|event=snapshot /.test(l));
    console.log(`node ${i} log: ${lines.length} lines with event=leader_changed / convert to candidate / event=snapshot`);
    for (const l of lines.slice(0, 20)) console.log(`  ${l}`);
  }
  console.log(`elections under load: ${under} (sum over the nodes' counters; 0 expected), ${minutes} min, logs in ${out}`);
  if (under > 0) failed = true;
} finally {
  for (const { p } of nodes.values()) p.kill('SIGTERM');
  for (const [i, { exited }] of nodes) {
    const e = await exited;
    if (e.code !== 0) { console.log(`node ${i} exited ${JSON.stringify(e)}`); failed = true; }
  }
}
process.exitCode = failed ? 1 : 0;
