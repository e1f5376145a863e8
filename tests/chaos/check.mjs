#!/usr/bin/env node
// Re-runs the checker (and its self-test) over a saved run:
//   node tests/chaos/check.mjs /tmp/driftd-chaos-XXXX/records.json [--stale]
// Prints every violation; exit 1 when there is one or the self-test misses.
import fs from 'node:fs';

import { check, selfTest, CHECKS } from './lib/checker.mjs';
import { gapsByKind, recoveryByKind, unavailability } from './lib/stats.mjs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node tests/chaos/check.mjs RECORDS.json [--stale]\n');
  process.exit(2);
}
const records = JSON.parse(fs.readFileSync(file, 'utf8'));
const res = check(records, { checkStale: process.argv.includes('--stale') });
process.stdout.write(`seed ${records.seed}: ${JSON.stringify(res.stats)}\n`);
if (records.faults && records.tStart) {
  const kinds = {};
  for (const f of records.faults) kinds[f.kind] = (kinds[f.kind] ?? 0) + 1;
  process.stdout.write(`faults ${records.faults.length}: ${JSON.stringify(kinds)}\n`);
  process.stdout.write(`longest unavailability: ${JSON.stringify(unavailability(records.sends, records.faults, records.tStart, records.tEnd))}\n`);
  process.stdout.write(`longest gap between acks per fault kind (ms): ${JSON.stringify(gapsByKind(records.sends, records.faults, records.tEnd))}\n`);
  process.stdout.write(`longest time from a heal to the next ack per fault kind (ms): ${JSON.stringify(recoveryByKind(records.sends, records.faults))}\n`);
}
for (const v of res.violations) process.stdout.write(`VIOLATION ${v.check}: ${v.msg}\n`);
for (const c of CHECKS) if (res.counts[c]) process.stdout.write(`check ${c}: ${res.counts[c]} violations\n`);
const st = selfTest(records);
for (const s of st) process.stdout.write(`self-test ${s.check}: ${s.caught ? 'caught' : 'NOT CAUGHT'} (${s.planted})\n`);
process.exit(res.ok && st.every((s) => s.caught) ? 0 : 1);
