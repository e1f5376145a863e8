// Measures failover time on a local 3-node cluster, as seen by a writer on a
// surviving follower that pushes over HTTP every 5 ms (one push at a time).
// Not a test (timing belongs in docs/benchmarks.md, not in assertions).
//
//   DRIFTD_BIN=build/driftd node tests/blackbox/tools/failover-time.mjs \
//       [--runs 5] [--election-timeout MS --heartbeat MS] [--planned]
//
// Default (crash): kill -9 of the leader; the figure is the kill to the
// first push sent after it and acknowledged (so committed by the new
// leader). --planned: a planned restart of the leader instead (SIGTERM, wait
// for the exit, start it again on its data dir); the figure is the longest
// time without an acknowledged push from the SIGTERM until the restarted
// node is healthy, and the SIGTERM to the first push sent after it and
// acknowledged. Without --election-timeout / --heartbeat the nodes run
// driftd's own defaults.
import { parseArgs } from 'node:util';
import { Cluster } from '../lib/cluster.mjs';
import { createRoom, httpRequest, sleep } from '../lib/harness.mjs';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'election-timeout': { type: 'string' },
    heartbeat: { type: 'string' },
    planned: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
const et = values['election-timeout'] != null ? Number(values['election-timeout']) : null;
const hb = values.heartbeat != null ? Number(values.heartbeat) : null;
const planned = values.planned;

async function leaderOf(c, id) {
  const st = await c.status(id);
  return st.leader ? st.leader.id : null;
}

function summary(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? `min ${s[0]} ms, median ${s[Math.floor(s.length / 2)]} ms, max ${s.at(-1)} ms` : 'no result';
}

const firsts = [];
const gaps = [];
for (let r = 0; r < runs; r++) {
  const c = await Cluster.start({ size: 3, name: `failover${r}`, electionTimeoutMs: et, heartbeatMs: hb });
  try {
    let leader = null;
    while (!leader) { leader = await leaderOf(c, 1); if (!leader) await sleep(20); }
    const writerNode = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(writerNode));
    let lastOkBefore = 0;
    let firstOkAfter = 0;
    let eventAt = 0;
    let stop = false;
    let lastAck = 0;
    let maxGap = 0;
    const writer = (async () => {
      let n = 0;
      while (!stop) {
        const t0 = Date.now();
        const res = await httpRequest(`${c.base(writerNode)}/room/${room}/send`, {
          method: 'POST',
          body: { type: 'push', key: 'k', value: n++, action: { type: 'relay' } },
          timeoutMs: 30000,
        }).catch(() => null);
        const t1 = Date.now();
        if (res && res.status !== 200 && eventAt) console.log(`  ${t1 - eventAt} ms: ${res.status} ${res.text}`);
        if (!res && eventAt) console.log(`  ${t1 - eventAt} ms: request failed`);
        if (res && res.status === 200) {
          if (!eventAt) lastOkBefore = t1;
          // Only a push sent after the kill proves the new leader commits.
          else if (t0 >= eventAt && !firstOkAfter) firstOkAfter = t1;
          if (eventAt && lastAck) maxGap = Math.max(maxGap, t1 - Math.max(lastAck, eventAt));
          lastAck = t1;
        }
        await sleep(5);
      }
    })();
    await sleep(500);
    eventAt = Date.now();
    if (planned) {
      await c.stop(leader); // SIGTERM, exit 0 asserted
      await c.restart(leader); // waits for /healthz 200
    } else {
      await c.kill9(leader);
    }
    while (!firstOkAfter && Date.now() - eventAt < 30000) await sleep(5);
    stop = true;
    await writer;
    if (!firstOkAfter) {
      console.log(`run ${r + 1}: no push committed within 30 s`);
      c.dump('no commit after the event');
      process.exitCode = 1;
      continue;
    }
    const ms = firstOkAfter - eventAt;
    firsts.push(ms);
    if (planned) {
      gaps.push(maxGap);
      console.log(`run ${r + 1}: leader ${leader} stopped (SIGTERM) and restarted; first ack of a push sent after the SIGTERM ${ms} ms; longest time without an ack ${maxGap} ms`);
    } else {
      console.log(`run ${r + 1}: leader ${leader} killed; first commit by the new leader after ${ms} ms (last ack before the kill ${eventAt - lastOkBefore} ms earlier)`);
    }
  } finally {
    await c.dispose();
  }
}
const timing = et != null || hb != null ? `election timeout ${et ?? 'default'} ms, heartbeat ${hb ?? 'default'} ms` : 'driftd defaults';
if (planned) {
  console.log(`planned restart of the leader, ${timing}, ${runs} runs: first ack after the SIGTERM: ${summary(firsts)}; longest time without an ack: ${summary(gaps)}`);
} else {
  console.log(`kill -9 of the leader, ${timing}, ${runs} runs: ${summary(firsts)}`);
}
