// Measures failover time on a local 3-node cluster: kill -9 of the leader
// to the first push committed by the new leader, as seen by a writer on a
// surviving follower that pushes over HTTP every 5 ms. Not a test (timing
// belongs in docs/benchmarks.md, not in assertions).
//
//   DRIFTD_BIN=build/driftd node tests/blackbox/tools/failover-time.mjs \
//       [--runs 5] [--election-timeout 1000] [--heartbeat 100]
import { parseArgs } from 'node:util';
import { Cluster } from '../lib/cluster.mjs';
import { createRoom, httpRequest, sleep } from '../lib/harness.mjs';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    'election-timeout': { type: 'string', default: '1000' },
    heartbeat: { type: 'string', default: '100' },
  },
});
const runs = Number(values.runs);
const et = Number(values['election-timeout']);
const hb = Number(values.heartbeat);

async function leaderOf(c, id) {
  const st = await c.status(id);
  return st.leader ? st.leader.id : null;
}

const results = [];
for (let r = 0; r < runs; r++) {
  const c = await Cluster.start({ size: 3, name: `failover${r}`, electionTimeoutMs: et, heartbeatMs: hb });
  try {
    let leader = null;
    while (!leader) { leader = await leaderOf(c, 1); if (!leader) await sleep(20); }
    const writerNode = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(writerNode));
    let lastOkBefore = 0;
    let firstOkAfter = 0;
    let killedAt = 0;
    let stop = false;
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
        if (res && res.status !== 200 && killedAt) console.log(`  ${t1 - killedAt} ms: ${res.status} ${res.text}`);
        if (!res && killedAt) console.log(`  ${t1 - killedAt} ms: request failed`);
        if (res && res.status === 200) {
          if (!killedAt) lastOkBefore = t1;
          // Only a push sent after the kill proves the new leader commits.
          else if (t0 >= killedAt && !firstOkAfter) firstOkAfter = t1;
        }
        await sleep(5);
      }
    })();
    await sleep(500);
    killedAt = Date.now();
    await c.kill9(leader);
    while (!firstOkAfter && Date.now() - killedAt < 30000) await sleep(5);
    stop = true;
    await writer;
    if (!firstOkAfter) {
      console.log(`run ${r + 1}: no push committed within 30 s of the kill`);
      c.dump('no commit after the kill');
      process.exitCode = 1;
      continue;
    }
    const ms = firstOkAfter - killedAt;
    results.push(ms);
    console.log(`run ${r + 1}: leader ${leader} killed; first commit by the new leader after ${ms} ms (last ack before the kill ${killedAt - lastOkBefore} ms earlier)`);
  } finally {
    await c.dispose();
  }
}
results.sort((a, b) => a - b);
console.log(`election timeout ${et} ms, heartbeat ${hb} ms, ${runs} runs: min ${results[0]} ms, median ${results[Math.floor(results.length / 2)]} ms, max ${results.at(-1)} ms`);
