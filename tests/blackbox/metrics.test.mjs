// GET /metrics: the Prometheus text exposition format (0.0.4) on every node
// of a 3-node cluster. Every scrape is parsed strictly (each line a comment
// or a sample, HELP and TYPE for each family, counters named *_total and
// never going down, histogram buckets cumulative with +Inf == _count); the
// values follow what the test does (pushes by action and transport,
// deliveries, stream_size answers, errors, one leader, commit indexes, the
// leader's per-peer match index). The last case times scrapes with
// METRICS_ROOMS rooms in the state (docs/benchmarks.md, "Metrics").
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createRoom, httpRequest, httpSend, RawClient, waitFor } from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere } from './lib/cluster.mjs';

const T = { timeout: 240000 };
const ROOMS = Number(process.env.METRICS_ROOMS ?? 1000);
const SCRAPES = Number(process.env.METRICS_SCRAPES ?? 100);

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*';
const LVALUE = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
const VALUE = '(?:[+-]?(?:\\d+\\.?\\d*(?:[eE][+-]?\\d+)?|\\.\\d+(?:[eE][+-]?\\d+)?)|[+-]Inf|NaN)';
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL}=${LVALUE})(?:,${LABEL}=${LVALUE})*,?)?\\})? (${VALUE})(?: -?\\d+)?$`);
const HELP = new RegExp(`^# HELP (${NAME}) (.*)$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const TYPES_DONE = new Set();

function parseLabels(s) {
  const out = {};
  if (!s) return out;
  const re = new RegExp(`(${LABEL})=(${LVALUE}),?`, 'g');
  let m;
  while ((m = re.exec(s)) !== null) out[m[1]] = JSON.parse(m[2]);
  return out;
}

function parseValue(v) {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  return Number(v);
}

// Parses a whole scrape strictly; returns { families, series } where series
// maps `name{sorted labels}` to its value.
export function parseMetrics(text, where) {
  assert.ok(text.endsWith('\n'), `${where}: the text does not end with a newline`);
  const families = new Map(); // name -> { help, type, samples: [] }
  const series = new Map();
  const lines = text.slice(0, -1).split('\n');
  const fam = (name) => {
    if (!families.has(name)) families.set(name, { help: null, type: null, samples: [] });
    return families.get(name);
  };
  lines.forEach((line, i) => {
    const at = `${where} line ${i + 1} ${JSON.stringify(line)}`;
    let m;
    if ((m = HELP.exec(line))) {
      const f = fam(m[1]);
      assert.equal(f.help, null, `${at}: a second HELP`);
      assert.equal(f.samples.length, 0, `${at}: HELP after samples`);
      f.help = m[2];
      return;
    }
    if ((m = TYPE.exec(line))) {
      const f = fam(m[1]);
      assert.equal(f.type, null, `${at}: a second TYPE`);
      assert.equal(f.samples.length, 0, `${at}: TYPE after samples`);
      f.type = m[2];
      return;
    }
    assert.ok(!line.startsWith('#'), `${at}: a comment that is neither HELP nor TYPE`);
    m = SAMPLE.exec(line);
    assert.ok(m, `${at}: not a sample line`);
    const [, name, labelText, value] = m;
    let base = name;
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const b = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && families.get(b)?.type === 'histogram') base = b;
    }
    const f = families.get(base);
    assert.ok(f && f.type !== null && f.help !== null, `${at}: no HELP and TYPE before its samples`);
    const labels = parseLabels(labelText);
    const key = `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
    assert.ok(!series.has(key), `${at}: series ${key} twice`);
    const v = parseValue(value);
    series.set(key, v);
    f.samples.push({ name, labels, value: v });
  });
  for (const [name, f] of families) {
    assert.ok(name.startsWith('driftd_'), `${where}: ${name} is not prefixed driftd_`);
    assert.ok(f.help && f.type, `${where}: ${name} lacks HELP or TYPE`);
    if (f.type === 'counter') {
      assert.ok(name.endsWith('_total'), `${where}: counter ${name} does not end in _total`);
      for (const s of f.samples) assert.ok(s.value >= 0 && Number.isFinite(s.value), `${where}: ${name} = ${s.value}`);
    }
    if (f.type === 'histogram') checkHistogram(name, f, where);
    TYPES_DONE.add(f.type);
  }
  return { families, series };
}

function checkHistogram(name, f, where) {
  const buckets = f.samples.filter((s) => s.name === `${name}_bucket`);
  const count = f.samples.find((s) => s.name === `${name}_count`);
  const sum = f.samples.find((s) => s.name === `${name}_sum`);
  assert.ok(buckets.length > 1 && count && sum, `${where}: ${name} lacks buckets, _sum or _count`);
  let prevLe = -Infinity;
  let prev = 0;
  for (const b of buckets) {
    const le = parseValue(b.labels.le);
    assert.ok(le > prevLe, `${where}: ${name} buckets not in increasing le order at ${b.labels.le}`);
    assert.ok(b.value >= prev, `${where}: ${name} bucket le=${b.labels.le} (${b.value}) below the previous (${prev})`);
    prevLe = le;
    prev = b.value;
  }
  assert.equal(buckets.at(-1).labels.le, '+Inf', `${where}: ${name} has no +Inf bucket last`);
  assert.equal(buckets.at(-1).value, count.value, `${where}: ${name} +Inf bucket != _count`);
  assert.ok(sum.value >= 0, `${where}: ${name}_sum negative`);
}

async function scrape(c, id) {
  const r = await httpRequest(`${c.base(id)}/metrics`, { timeoutMs: 5000 });
  assert.equal(r.status, 200, `GET /metrics on node ${id}: ${r.status} ${r.text}`);
  assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/, `node ${id}: content-type`);
  return parseMetrics(r.text, `node ${id}`);
}

async function scrapeAll(c) {
  const out = new Map();
  for (const id of c.ids) out.set(id, await scrape(c, id));
  return out;
}

const val = (m, key) => m.series.get(key) ?? 0;
const sumOver = (all, key) => [...all.values()].reduce((a, m) => a + val(m, key), 0);

function assertMonotonic(before, after, where) {
  for (const [name, f] of before.families) {
    if (f.type !== 'counter' && f.type !== 'histogram') continue;
    for (const [key, v] of before.series) {
      if (!key.startsWith(`${name}`) || !after.series.has(key)) continue;
      if (f.type === 'histogram' && !/_(bucket|sum|count)\{/.test(key)) continue;
      assert.ok(after.series.get(key) >= v, `${where}: counter ${key} went down: ${v} -> ${after.series.get(key)}`);
    }
  }
}

describe('GET /metrics', () => {
  const ctx = useCluster({ size: 3, name: 'metrics' });

  test('every node answers a strictly valid scrape whose values follow the traffic', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const { room } = await createRoom(c.base(1));
    await waitRoomEverywhere(c, room);
    // A CBOR subscriber on node 2 sees every push (deliveries there).
    const sub = await RawClient.connect(c.socketUrl(2, room), { format: 'cbor', label: 'subscriber on 2' });
    await sub.get('k', 0);
    const before = await scrapeAll(c);

    // WebSocket pushes on node 3: 6 appends, 2 replaces, 2 relays.
    const w = await RawClient.connect(c.socketUrl(3, room), { label: 'writer on 3' });
    for (let i = 0; i < 6; i++) w.push('k', i, 'append');
    for (let i = 0; i < 2; i++) w.push('r', i, 'replace');
    for (let i = 0; i < 2; i++) w.push('x', i, 'relay');
    await w.roundTrip(10000); // every push above is applied or answered
    // HTTP pushes: 3 appends on each node, with stream_size answers.
    for (const id of c.ids) {
      for (let i = 0; i < 3; i++) {
        const r = await httpSend(c.base(id), room, { type: 'push', key: 'k', value: 100 + i, action: { type: 'append' } });
        assert.equal(r.status, 200, `HTTP push on ${id}: ${r.status} ${r.text}`);
      }
    }
    // A malformed WebSocket frame: one decode error on node 3.
    w.sendText('{"type": ');
    await w.next('error', 5000);
    // The subscriber on 2 saw the 6 + 9 appends to k.
    for (let n = 0; n < 15; n++) await sub.next((m) => m.type === 'push' && m.key === 'k', 10000);

    // Followers apply what the leader committed a moment later.
    let after;
    await waitFor(async () => {
      after = await scrapeAll(c);
      const top = val(after.get(leader), 'driftd_raft_commit_index{}');
      return c.ids.every((id) => val(after.get(id), 'driftd_raft_applied_index{}') >= top);
    }, 10000, 'every node to apply the leader\'s commit index');

    for (const id of c.ids) assertMonotonic(before.get(id), after.get(id), `node ${id}`);
    const delta = (key) => sumOver(after, key) - sumOver(before, key);
    const p = (a, t) => `driftd_pushes_total{action="${a}",transport="${t}"}`;
    assert.equal(delta(p('append', 'ws')), 6, 'ws appends');
    assert.equal(delta(p('replace', 'ws')), 2, 'ws replaces');
    assert.equal(delta(p('relay', 'ws')), 2, 'ws relays');
    assert.equal(delta(p('append', 'http')), 9, 'http appends');
    assert.equal(val(after.get(3), p('append', 'ws')) - val(before.get(3), p('append', 'ws')), 6, 'ws appends counted on node 3');
    for (const id of c.ids) {
      assert.equal(val(after.get(id), p('append', 'http')) - val(before.get(id), p('append', 'http')), 3, `http appends on ${id}`);
    }
    assert.ok(delta('driftd_stream_size_total{transport="http"}') === 9, 'one stream_size answer per HTTP append');
    assert.ok(val(after.get(2), 'driftd_deliveries_total{}') - val(before.get(2), 'driftd_deliveries_total{}') >= 15, 'deliveries on node 2');
    assert.equal(delta('driftd_errors_total{kind="decode"}'), 1, 'one decode error');
    // push -> ack: every push acknowledged on its origin node is timed.
    assert.ok(delta('driftd_push_ack_seconds_count{}') >= 19, `push_ack count grew by ${delta('driftd_push_ack_seconds_count{}')}`);
    assert.ok(val(after.get(2), 'driftd_connections{format="cbor",kind="ws"}') >= 1, 'the CBOR session on node 2');
    assert.ok(val(after.get(3), 'driftd_connections{format="json",kind="ws"}') >= 1, 'the JSON session on node 3');

    // Raft: exactly one leader, everyone names it, indexes present.
    const leaders = c.ids.filter((id) => val(after.get(id), 'driftd_raft_role{role="leader"}') === 1);
    assert.deepEqual(leaders, [leader], 'exactly one node reports role leader');
    for (const id of c.ids) {
      const m = after.get(id);
      const roles = [...m.series].filter(([k, v]) => k.startsWith('driftd_raft_role{') && v === 1);
      assert.equal(roles.length, 1, `node ${id}: one role set`);
      assert.equal(val(m, 'driftd_raft_leader_id{}'), leader, `node ${id}: leader id`);
      assert.equal(val(m, 'driftd_raft_node_id{}'), id, `node ${id}: node id`);
      assert.ok(val(m, 'driftd_raft_term{}') >= 1, `node ${id}: term`);
      for (const k of ['commit_index', 'applied_index', 'last_index']) {
        assert.ok(m.series.has(`driftd_raft_${k}{}`) && val(m, `driftd_raft_${k}{}`) > 0, `node ${id}: ${k}`);
      }
      assert.equal(val(m, 'driftd_rooms{}'), val(after.get(leader), 'driftd_rooms{}'), `node ${id}: rooms`);
      assert.ok(val(m, 'driftd_keys{}') >= 2 && val(m, 'driftd_retained_entries{}') >= 16, `node ${id}: keys and entries`);
      assert.ok(val(m, 'driftd_retained_bytes{}') > 0, `node ${id}: retained bytes`);
      assert.ok(val(m, 'driftd_process_resident_memory_bytes{}') > 0, `node ${id}: RSS`);
      assert.ok(val(m, 'driftd_process_open_fds{}') > 0, `node ${id}: fds`);
      if (id !== leader) assert.equal(val(m, 'driftd_forward_link_up{}'), 1, `node ${id}: forward link up`);
    }
    const lm = after.get(leader);
    const commits = (m) => val(m, 'driftd_raft_entry_commit_seconds_count{}');
    assert.ok(commits(lm) > commits(before.get(leader)), 'the leader timed the commit of its entries');
    // Every node timed its own log appends, and the node with a subscriber
    // timed the deliveries of the pushes to it (leader's stamp -> queued).
    for (const id of c.ids) {
      const appends = (m) => val(m, 'driftd_raft_append_seconds_count{}');
      assert.ok(appends(after.get(id)) > appends(before.get(id)), `node ${id} timed its log appends`);
    }
    const delivered = (m) => val(m, 'driftd_push_deliver_seconds_count{}');
    assert.ok(delivered(after.get(2)) - delivered(before.get(2)) >= 15, `node 2 timed the deliveries to its subscriber: ${delivered(after.get(2)) - delivered(before.get(2))}`);
    for (const id of c.ids) {
      assert.ok(lm.series.has(`driftd_raft_peer_match_index{peer="${id}"}`), `leader: match index of ${id}`);
    }
    for (const id of c.ids.filter((x) => x !== leader)) {
      assert.equal([...after.get(id).series.keys()].filter((k) => k.startsWith('driftd_raft_peer_match_index{')).length, 0,
        `follower ${id}: no match indexes`);
    }
    assert.ok(TYPES_DONE.has('counter') && TYPES_DONE.has('gauge') && TYPES_DONE.has('histogram'));
    await w.close();
    await sub.close();
  });

  test(`scrape cost with ${ROOMS} rooms (${SCRAPES} scrapes)`, T, async (t) => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const created = [];
    for (let i = 0; i < ROOMS; i += 50) {
      const batch = [];
      for (let j = i; j < Math.min(ROOMS, i + 50); j++) {
        batch.push((async () => {
          const { room } = await createRoom(c.base(leader));
          const r = await httpSend(c.base(leader), room, { type: 'push', key: 'k', value: j, action: { type: 'append' } });
          assert.equal(r.status, 200);
          return room;
        })());
      }
      created.push(...await Promise.all(batch));
    }
    const rooms = val(await scrape(c, leader), 'driftd_rooms{}');
    assert.ok(rooms >= ROOMS, `rooms ${rooms}`);
    const times = [];
    let bytes = 0;
    let cpu0 = null;
    let cpu1 = null;
    // The node's own CPU time over the run (10 ms ticks): what scrapes cost
    // the server, without the client's share of the round trip.
    const cpuOf = (text) => Number(/^driftd_process_cpu_seconds_total (\S+)$/m.exec(text)[1]);
    for (let i = 0; i < SCRAPES; i++) {
      const t0 = performance.now();
      const r = await httpRequest(`${c.base(leader)}/metrics`, { timeoutMs: 5000 });
      times.push(performance.now() - t0);
      assert.equal(r.status, 200);
      bytes = r.text.length;
      if (i === 0) cpu0 = cpuOf(r.text);
      cpu1 = cpuOf(r.text);
    }
    const cpuMs = ((cpu1 - cpu0) * 1000) / (SCRAPES - 1);
    times.sort((a, b) => a - b);
    const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(2);
    t.diagnostic(`metrics scrape: rooms=${rooms} bytes=${bytes} scrapes=${SCRAPES} ` +
      `p50=${q(0.5)}ms p99=${q(0.99)}ms max=${times.at(-1).toFixed(2)}ms (round trip, loopback, new connection each); ` +
      `node CPU ${cpuMs.toFixed(3)} ms per scrape (request handling included)`);
    assert.ok(Number(q(0.5)) < 100, 'a scrape answers in well under 100 ms');
  });
});
