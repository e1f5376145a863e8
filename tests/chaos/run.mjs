#!/usr/bin/env node
// The chaos run: a driftd cluster with each node in its own network
// namespace, writers and subscribers on every node, a seeded nemesis, then
// the checker over the recorded histories and the final reads of every node.
//
//   sudo node tests/chaos/run.mjs                       # about a minute
//   sudo CHAOS_DURATION=1800 CHAOS_NODES=5 node tests/chaos/run.mjs
//   sudo CHAOS_SEED=123456 node tests/chaos/run.mjs     # replay a seed
//
// Environment:
//   CHAOS_SEED         nemesis and workload seed (default: random; printed)
//   CHAOS_DURATION     seconds of faults and writes (60)
//   CHAOS_NODES        initial voters, 3 or 5 (3); one more namespace holds
//                      the node the membership change adds and removes
//   CHAOS_CHECK_STALE  0: a stale read (get on B missing a push acked on A)
//                      is only counted (default: it fails the run)
//   CHAOS_CHECK_MEMBERSHIP 0: membership disagreements only reported
//   CHAOS_OUT          folder for records.json, summary.json and the node
//                      logs (default: a new folder under /tmp, kept when
//                      the run fails or CHAOS_KEEP=1)
//   CHAOS_PAUSE_MS     writer pause range "LO,HI" (20,120)
//   CHAOS_HOLD_MS      how long each fault holds, range "LO,HI" (1500,5000)
//   CHAOS_SNAPSHOT     --snapshot-threshold of the nodes (2000: snapshots,
//                      log compaction and snapshot installs happen under
//                      faults too; --snapshot-trailing is a quarter of it)
//   DRIFTD_BIN, DRIFTCTL_BIN  (default build/driftd, build/driftctl)
//
// Runs as root (ip netns, nft, tc). Re-executes itself under `unshare --net`
// so the bridge and the client side live in a private namespace that
// vanishes with the run; the node namespaces (drc-PID-N) and processes are
// removed on exit, also on failure and on SIGINT/SIGTERM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { check, selfTest, CHECKS } from './lib/checker.mjs';
import { ChaosNet, ChaosNode, httpGet, killAllSync, run, sleep, unexpectedExits, unsupportedReason } from './lib/env.mjs';
import { Nemesis, KINDS } from './lib/nemesis.mjs';
import { Rng, newSeed } from './lib/rng.mjs';
import { Workload, finalRead } from './lib/workload.mjs';
import { gapsByKind, recoveryByKind, unavailability } from './lib/stats.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

function log(msg) {
  const t = new Date().toISOString().slice(11, 23);
  process.stdout.write(`[chaos ${t}] ${msg}\n`);
}

function outer() {
  const why = unsupportedReason();
  if (why) {
    process.stderr.write(`chaos: cannot run: ${why}\n`);
    process.exit(77);
  }
  const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : newSeed();
  const env = { ...process.env, CHAOS_SEED: String(seed), CHAOS_PRIVATE_NETNS: '1' };
  const child = spawn('unshare', ['--net', '--', process.execPath, fileURLToPath(import.meta.url)], { stdio: 'inherit', env });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

async function waitConverged(nodes, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  let stable = 0;
  while (Date.now() < deadline) {
    try {
      const st = await Promise.all(nodes.map((n) => n.status(2000)));
      const leaders = new Set(st.map((s) => s.leader?.id ?? null));
      const commit = Math.max(...st.map((s) => s.commit_index));
      last = st.map((s) => `node ${s.id}: ${s.role} leader=${s.leader?.id ?? null} commit=${s.commit_index} applied=${s.applied_index}`).join('; ');
      if (leaders.size === 1 && !leaders.has(null) && st.every((s) => s.applied_index === commit)) {
        if (++stable >= 3) return { ok: true, last };
      } else stable = 0;
    } catch (e) {
      last = e.message;
      stable = 0;
    }
    await sleep(300);
  }
  return { ok: false, last };
}

async function inner() {
  const seed = Number(process.env.CHAOS_SEED);
  const duration = Number(process.env.CHAOS_DURATION ?? 60) * 1000;
  const n = Number(process.env.CHAOS_NODES ?? 3);
  // Reads are linearizable (read barrier): a stale one fails the run unless
  // CHAOS_CHECK_STALE=0. Membership disagreements (finding 1 in
  // docs/reliability.md, fixed) fail it unless CHAOS_CHECK_MEMBERSHIP=0.
  const checkStale = process.env.CHAOS_CHECK_STALE !== '0';
  const checkMembership = process.env.CHAOS_CHECK_MEMBERSHIP !== '0';
  const snapshot = Number(process.env.CHAOS_SNAPSHOT ?? 2000);
  const pause = (process.env.CHAOS_PAUSE_MS ?? '20,120').split(',').map(Number);
  const bin = path.resolve(process.env.DRIFTD_BIN ?? path.join(repo, 'build', 'driftd'));
  const ctlBin = path.resolve(process.env.DRIFTCTL_BIN ?? path.join(repo, 'build', 'driftctl'));
  const out = process.env.CHAOS_OUT ? path.resolve(process.env.CHAOS_OUT) : fs.mkdtempSync(path.join(os.tmpdir(), 'driftd-chaos-'));
  fs.mkdirSync(out, { recursive: true });
  log(`seed ${seed} (replay: CHAOS_SEED=${seed}), ${n} nodes, ${duration / 1000} s, records and logs in ${out}`);

  const net = new ChaosNet(n + 1);
  let nodes = [];
  let joiner = null;
  const cleanup = () => {
    killAllSync();
    net.teardownSync();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { log(`${sig}: cleaning up`); process.exit(130); });

  let failed = true;
  try {
    await net.setup();
    const keyFile = path.join(out, 'cluster.key');
    const tokenFile = path.join(out, 'admin.token');
    fs.rmSync(keyFile, { force: true });
    await run([ctlBin, 'keygen', keyFile]);
    fs.writeFileSync(tokenFile, `${seed.toString(16)}chaos${process.pid}\n`, { mode: 0o600 });
    const bootstrap = Array.from({ length: n }, (_, i) => `${i + 1}=${net.addr(i + 1)}:9080`).join(',');
    const common = ['--bootstrap', bootstrap, '--cluster-key-file', keyFile, '--admin-token-file', tokenFile,
      '--election-timeout', '500', '--heartbeat', '50', '--log-level', 'info',
      '--snapshot-threshold', String(snapshot), '--snapshot-trailing', String(Math.max(1, Math.floor(snapshot / 4)))];
    nodes = Array.from({ length: n }, (_, i) => new ChaosNode({ net, slot: i + 1, id: i + 1, bin, root: out, common }));
    for (const x of nodes) x.launch();
    await Promise.all(nodes.map((x) => x.waitHealthy(30000)));
    log(`cluster up: ${nodes.map((x) => `${x.id}@${x.addr}`).join(' ')}`);

    // Two rooms, two keys each: one seq counter per room shared by its keys.
    const rooms = [];
    while (rooms.length < 2) {
      const r = await httpGet(`${nodes[rooms.length % n].base}/new`, { method: 'POST', timeoutMs: 5000 });
      if (r.status === 200) rooms.push(JSON.parse(r.text).room); else await sleep(200);
    }
    const keys = ['a', 'b'];
    for (const room of rooms) {
      for (const x of nodes) {
        for (let t = 0; ; t++) {
          const r = await httpGet(`${x.base}/room/${room}`, { timeoutMs: 2000 }).catch(() => ({ status: 0 }));
          if (r.status === 200) break;
          if (t > 100) throw new Error(`room ${room} not visible on node ${x.id}`);
          await sleep(100);
        }
      }
    }

    const cluster = {
      net,
      nodes,
      joinerSlot: n + 1,
      mrng: new Rng(seed, 'membership'),
      makeJoiner: (id) => {
        joiner = new ChaosNode({ net, slot: n + 1, id, bin, root: out, common: common.filter((a, i) => a !== '--bootstrap' && common[i - 1] !== '--bootstrap'), join: true });
        return joiner;
      },
      ctl: (args) => run([ctlBin, '--token-file', tokenFile, ...args], { check: false, timeoutMs: 60000 }),
    };
    const holdMs = (process.env.CHAOS_HOLD_MS ?? '1500,5000').split(',').map(Number);
    const nemesis = new Nemesis({ cluster, rng: new Rng(seed, 'nemesis'), log, holdMs });
    const work = new Workload({ nodes: () => nodes, rooms, keys, rng: new Rng(seed, 'workload'), runTag: seed.toString(36), pauseMs: pause });
    work.faultNow = () => nemesis.now();

    const tStart = Date.now();
    work.start();
    const nemTask = nemesis.run();
    const memTask = nemesis.runMembership();
    const probeTask = nemesis.probeMembers();
    const ticker = setInterval(() => {
      const o = { ok: 0, not_applied: 0, unknown: 0, no_answer: 0, refused: 0 };
      for (const s of work.sends) if (s.outcome) o[s.outcome] += 1;
      log(`+${Math.round((Date.now() - tStart) / 1000)} s: ${work.sends.length} pushes (${JSON.stringify(o)}), ${nemesis.faults.length} faults`);
    }, 15000);
    await sleep(duration);
    nemesis.stop();
    await nemTask;
    await memTask;
    await probeTask;
    await work.stopWriters();
    const tEnd = Date.now();
    clearInterval(ticker);
    log(`writes stopped after ${work.sends.length} pushes, ${nemesis.faults.length} faults; healing`);

    // Heal: no rules, nothing frozen, every voter running, the joiner out.
    await net.healAll();
    for (const x of nodes) { if (x.frozen) x.sigcont(); if (!x.running) x.launch(); }
    if (nemesis.joiner) {
      const removed = await nemesis.removeJoiner(60000);
      if (!removed) log(`joiner ${nemesis.joiner.id} could not be removed: it stays and is read too`);
    }
    await Promise.all(nodes.map((x) => x.waitHealthy(60000)));
    const readNodes = nemesis.joiner ? [...nodes, nemesis.joiner] : nodes;
    const conv = await waitConverged(readNodes, 60000);
    log(`converged: ${conv.ok} (${conv.last})`);

    // Let subscribers catch up with the final streams, then read every node.
    const ref = await finalRead(nodes[0], rooms, keys);
    const finalLast = {};
    for (const room of rooms) { finalLast[room] = {}; for (const k of keys) finalLast[room][k] = ref[room][k].at(-1)?.seq ?? 0; }
    const caught = await work.waitSubscribers(finalLast, 20000);
    await work.stopSubscribers();
    const finals = {};
    for (const x of readNodes) finals[x.id] = await finalRead(x, rooms, keys);

    // Every added node was removed: the configuration is the initial voters.
    const configs = {};
    for (const x of readNodes) {
      try { configs[x.id] = (await x.status(3000)).nodes.map((m) => ({ id: m.id, role: m.role })); } catch (e) { configs[x.id] = [{ error: e.message }]; }
    }
    const records = {
      seed, nodes: n, duration, rooms, keys, members: readNodes.map((x) => x.id), configs,
      sends: work.sends, subs: work.subs, reads: work.reads, finals,
      faults: nemesis.faults, changes: nemesis.changes, probes: nemesis.probes, tStart, tEnd,
    };
    fs.writeFileSync(path.join(out, 'records.json'), JSON.stringify(records));

    const res = check(records, { checkStale, checkMembership });
    const st = selfTest(records);
    const faultsByKind = Object.fromEntries(KINDS.map((k) => [k, nemesis.faults.filter((f) => f.kind === k).length]));
    const ch = nemesis.changes;
    const membership = {
      cycles: new Set(ch.map((c) => c.id)).size,
      addAttempts: ch.filter((c) => c.op === 'add').length,
      added: new Set(ch.filter((c) => c.op === 'add' && c.ok).map((c) => c.id)).size,
      removeAttempts: ch.filter((c) => c.op === 'remove').length,
      removed: new Set(ch.filter((c) => c.op === 'remove' && c.ok).map((c) => c.id)).size,
    };
    const unavail = unavailability(work.sends, nemesis.faults, tStart, tEnd);
    const byVia = {};
    for (const s of work.sends) {
      byVia[s.via] ??= { ok: 0, not_applied: 0, unknown: 0, no_answer: 0, refused: 0 };
      byVia[s.via][s.outcome] += 1;
    }
    const errorTexts = {};
    for (const s of work.sends) {
      if (s.outcome === 'ok' || !s.detail) continue;
      const t = s.detail.replace(/\d+/g, 'N').slice(0, 120);
      errorTexts[t] = (errorTexts[t] ?? 0) + 1;
    }
    const staleByFault = {};
    for (const r of work.reads) {
      if (r.outcome !== 'stale') continue;
      const k = r.fault ?? 'no fault';
      staleByFault[k] = (staleByFault[k] ?? 0) + 1;
    }
    const summary = {
      seed, nodes: n, seconds: Math.round((tEnd - tStart) / 1000), out,
      pushes: res.stats.outcomes, sent: res.stats.sends, byVia, retained: res.stats.retained,
      unknownButApplied: res.stats.unknownApplied,
      faults: nemesis.faults.length, faultsByKind, membership,
      longestUnavailabilityMs: unavail.ms, longestUnavailability: unavail,
      longestGapByFaultKindMs: gapsByKind(work.sends, nemesis.faults, tEnd),
      longestRecoveryAfterHealMs: recoveryByKind(work.sends, nemesis.faults),
      reads: res.stats.reads, staleByFault, checkStale,
      converged: conv.ok, subscribersCaughtUp: caught,
      violations: res.counts, selfTest: st, errorTexts,
    };
    fs.writeFileSync(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2));

    log(`pushes sent ${res.stats.sends}: acknowledged ${res.stats.outcomes.ok}, not applied ${res.stats.outcomes.not_applied}, outcome unknown ${res.stats.outcomes.unknown}, no answer ${res.stats.outcomes.no_answer}, connection refused ${res.stats.outcomes.refused} (${res.stats.unknownApplied} of the unknown/no-answer ones were applied); retained ${res.stats.retained}`);
    log(`faults ${nemesis.faults.length}: ${JSON.stringify(faultsByKind)}; membership ${JSON.stringify(membership)}`);
    log(`longest unavailability ${unavail.ms} ms (+${unavail.from}..+${unavail.to} ms; faults: ${unavail.faults.join(', ') || 'none'})`);
    log(`longest gap between acks per fault kind (ms): ${JSON.stringify(summary.longestGapByFaultKindMs)}`);
    log(`longest time from a heal to the next ack per fault kind (ms): ${JSON.stringify(summary.longestRecoveryAfterHealMs)}`);
    log(`reads after an ack elsewhere: ${JSON.stringify(res.stats.reads)}; stale by fault ${JSON.stringify(staleByFault)}${checkStale ? '' : ' (not failing: CHAOS_CHECK_STALE=0)'}`);
    log(`error texts: ${JSON.stringify(errorTexts)}`);
    for (const v of res.violations) log(`VIOLATION ${v.check}: ${v.msg}`);
    for (const v of res.reportedOnly) log(`KNOWN (not failing: CHAOS_CHECK_MEMBERSHIP=0) ${v.check}: ${v.msg}`);
    for (const c of CHECKS) if (res.counts[c]) log(`check ${c}: ${res.counts[c]} violations`);
    for (const s of st) log(`self-test ${s.check}: ${s.caught ? 'caught' : 'NOT CAUGHT'} (${s.planted})${s.others.length ? `; also fired: ${s.others.join(', ')}` : ''}`);
    const stOk = st.every((s) => s.caught);

    // A clean stop must exit 0 (as in the black-box suite); any exit the
    // nemesis did not cause is a crash.
    await work.closeAll();
    const exits = await Promise.all(readNodes.map((x) => x.stop()));
    const unclean = [];
    exits.forEach((e, i) => { if (e && (e.code !== 0 || e.signal)) unclean.push(`node ${readNodes[i].id} exited ${JSON.stringify(e)} after SIGTERM (${readNodes[i].logFile})`); });
    for (const u of unclean) log(`UNCLEAN STOP: ${u}`);
    for (const x of unexpectedExits) log(`CRASH: node ${x.id} exited code=${x.code} signal=${x.signal} at +${x.at - tStart} ms unasked (${x.log})`);
    summary.unexpectedExits = unexpectedExits;
    summary.uncleanStops = unclean;
    fs.writeFileSync(path.join(out, 'summary.json'), JSON.stringify(summary, null, 2));
    failed = !res.ok || !stOk || !conv.ok || unexpectedExits.length > 0 || unclean.length > 0;
    log(`${failed ? 'FAILED' : 'passed'}: checker ${res.ok ? 'clean' : 'found violations'}, self-test ${stOk ? 'caught every planted violation' : 'MISSED one'}, converged ${conv.ok}, ${unexpectedExits.length} crashes, ${unclean.length} unclean stops; seed ${seed}`);
  } catch (e) {
    log(`run aborted: ${e.stack ?? e.message}`);
    failed = true;
  } finally {
    killAllSync();
    net.teardownSync();
    if (!failed && process.env.CHAOS_KEEP !== '1' && !process.env.CHAOS_OUT) fs.rmSync(out, { recursive: true, force: true });
    else log(`records and node logs kept in ${out}`);
  }
  process.exit(failed ? 1 : 0);
}

if (process.env.CHAOS_PRIVATE_NETNS === '1') await inner(); else outer();
