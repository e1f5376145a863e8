// The chaos checker: a pure function over a run's records. No I/O, no clock.
//
// records = {
//   rooms: [id], keys: [name],
//   sends: [{i, writer, node, via: 'ws'|'http', conn, room, key, value,
//            t0, t1, outcome: 'ok'|'not_applied'|'unknown'|'no_answer'|
//            'refused' (the connection was refused: nothing was sent),
//            seq (WebSocket acks: the seq of the broadcast), detail}],
//   subs: [{sub, node, room, key, events: [{seq, value, src, conn}]}],
//   reads: [{value, room, key, seq, ackNode, ackAt, node, t0, t1,
//            outcome: 'fresh'|'stale'|'error', detail}],
//   finals: {nodeId: {room: {key: [{seq, value}]}}},   // after healing
//   members: [ids expected in the configuration at the end],
//   configs: {nodeId: [{id, role}]},   // /cluster/status nodes at the end
//   changes: [{op: 'add'|'remove', id, ok, t0, ms}],   // driftctl runs
//   probes: [{t, node, ids}],   // configurations seen during the run
// }
//
// Checks (a violation names one of them):
//   ack_present        every acknowledged push is present exactly once on
//                      every node, in its key, at its seq when the ack said one
//   identical          every node holds the same stream for every key
//   seq_gapfree        per room and node, the seqs of all keys together are
//                      1..N, each once (only `append` is used: no relay gaps)
//   no_phantom         every retained value was sent, to that room and key
//   no_duplicate       no value is retained twice (exactly once, also for
//                      pushes whose outcome was unknown)
//   not_applied_absent nothing answered "not applied" (or never sent: the
//                      connection was refused) is retained
//   subscriber         what each subscriber received (broadcasts and the
//                      `init` of its resuming gets), in arrival order, is a
//                      prefix of the key's final stream: gap-free, in order,
//                      no repeats, same values
//   conn_order         a WebSocket connection's own pushes are applied in
//                      the order it sent them
//   stale_read         a get on node B after a push was acked on node A
//                      includes it (only with opts.checkStale)
//   membership         at the end every node's configuration holds exactly
//                      the expected members (the initial voters, as voters:
//                      every added node was removed again); and during the
//                      run no node that has committed past a successful
//                      removal still lists the removed node (ids are never
//                      reused)

export const CHECKS = ['ack_present', 'identical', 'seq_gapfree', 'no_phantom', 'no_duplicate',
  'not_applied_absent', 'subscriber', 'conn_order', 'stale_read', 'membership'];

const MAX_MSGS = 20;

export function check(records, opts = {}) {
  const { checkStale = false, checkMembership = true } = opts;
  const counts = Object.fromEntries(CHECKS.map((c) => [c, 0]));
  const violations = [];
  const reportedOnly = [];
  const fail = (chk, msg) => {
    // Membership disagreements (docs/reliability.md, finding 1) are
    // reported without failing when checkMembership is false.
    if (chk === 'membership' && !checkMembership) {
      if (reportedOnly.length < MAX_MSGS) reportedOnly.push({ check: chk, msg });
      return;
    }
    counts[chk] += 1;
    if (counts[chk] <= MAX_MSGS) violations.push({ check: chk, msg });
  };
  const nodeIds = Object.keys(records.finals).map(Number).sort((a, b) => a - b);
  if (nodeIds.length === 0) throw new Error('records hold no final reads');
  const ref = records.finals[nodeIds[0]];

  // value -> [{node, room, key, seq}] per node
  const where = new Map(); // `${node}\0${value}` -> [{room,key,seq}]
  for (const id of nodeIds) {
    for (const room of records.rooms) {
      for (const key of records.keys) {
        for (const e of records.finals[id]?.[room]?.[key] ?? []) {
          const k = `${id}\0${JSON.stringify(e.value)}`;
          if (!where.has(k)) where.set(k, []);
          where.get(k).push({ room, key, seq: e.seq });
        }
      }
    }
  }
  const at = (id, value) => where.get(`${id}\0${JSON.stringify(value)}`) ?? [];

  // identical
  for (const room of records.rooms) {
    for (const key of records.keys) {
      const a = ref?.[room]?.[key] ?? [];
      for (const id of nodeIds.slice(1)) {
        const b = records.finals[id]?.[room]?.[key] ?? [];
        if (JSON.stringify(a) !== JSON.stringify(b)) {
          let i = 0;
          while (i < a.length && i < b.length && a[i].seq === b[i].seq && JSON.stringify(a[i].value) === JSON.stringify(b[i].value)) i++;
          fail('identical', `room ${room} key ${key}: node ${nodeIds[0]} has ${a.length} entries, node ${id} has ${b.length}; first difference at position ${i}: ${JSON.stringify(a[i] ?? null)} vs ${JSON.stringify(b[i] ?? null)}`);
        }
      }
    }
  }

  // seq_gapfree
  for (const id of nodeIds) {
    for (const room of records.rooms) {
      const seqs = [];
      for (const key of records.keys) for (const e of records.finals[id]?.[room]?.[key] ?? []) seqs.push(e.seq);
      seqs.sort((x, y) => x - y);
      for (let i = 0; i < seqs.length; i++) {
        if (seqs[i] !== i + 1) {
          fail('seq_gapfree', `node ${id} room ${room}: seqs of all keys should be 1..${seqs.length}, position ${i} holds ${seqs[i]} (previous ${seqs[i - 1] ?? 'none'})`);
          break;
        }
      }
      for (const key of records.keys) {
        const s = (records.finals[id]?.[room]?.[key] ?? []).map((e) => e.seq);
        for (let i = 1; i < s.length; i++) {
          if (!(s[i] > s[i - 1])) { fail('seq_gapfree', `node ${id} room ${room} key ${key}: seq ${s[i]} follows ${s[i - 1]}`); break; }
        }
      }
    }
  }

  // sent values
  const sent = new Map();
  for (const s of records.sends) sent.set(JSON.stringify(s.value), s);

  // no_phantom, no_duplicate
  for (const id of nodeIds) {
    const seen = new Set();
    for (const room of records.rooms) {
      for (const key of records.keys) {
        for (const e of records.finals[id]?.[room]?.[key] ?? []) {
          const v = JSON.stringify(e.value);
          const s = sent.get(v);
          if (!s) fail('no_phantom', `node ${id} room ${room} key ${key} seq ${e.seq}: value ${v} was never sent`);
          else if (s.room !== room || s.key !== key) fail('no_phantom', `node ${id}: value ${v} was sent to ${s.room}/${s.key} but is retained in ${room}/${key} at seq ${e.seq}`);
          if (seen.has(v)) fail('no_duplicate', `node ${id} room ${room} key ${key} seq ${e.seq}: value ${v} retained twice`);
          seen.add(v);
        }
      }
    }
  }

  // ack_present, not_applied_absent
  for (const s of records.sends) {
    const v = JSON.stringify(s.value);
    if (s.outcome === 'ok') {
      for (const id of nodeIds) {
        const w = at(id, s.value);
        if (w.length !== 1) {
          fail('ack_present', `acknowledged push ${v} (${s.via} on node ${s.node}, ${s.room}/${s.key}${s.seq != null ? ` seq ${s.seq}` : ''}) is retained ${w.length} times on node ${id}`);
        } else if (w[0].room !== s.room || w[0].key !== s.key || (s.seq != null && w[0].seq !== s.seq)) {
          fail('ack_present', `acknowledged push ${v} (${s.room}/${s.key} seq ${s.seq}) is at ${w[0].room}/${w[0].key} seq ${w[0].seq} on node ${id}`);
        }
      }
    } else if (s.outcome === 'not_applied' || s.outcome === 'refused') {
      for (const id of nodeIds) {
        const w = at(id, s.value);
        if (w.length > 0) fail('not_applied_absent', `push ${v} answered "${s.detail}" (${s.via} on node ${s.node}) is retained on node ${id} at seq ${w[0].seq}`);
      }
    }
  }

  // subscriber
  for (const sub of records.subs) {
    const fin = ref?.[sub.room]?.[sub.key] ?? [];
    const ev = sub.events;
    for (let i = 0; i < ev.length; i++) {
      const f = fin[i];
      if (!f || f.seq !== ev[i].seq || JSON.stringify(f.value) !== JSON.stringify(ev[i].value)) {
        fail('subscriber', `subscriber ${sub.sub} (node ${sub.node}) ${sub.room}/${sub.key}: entry ${i} received (${ev[i].src} on ${ev[i].conn}) is seq ${ev[i].seq} ${JSON.stringify(ev[i].value)}, the final stream has ${f ? `seq ${f.seq} ${JSON.stringify(f.value)}` : 'nothing'} there (previous received: seq ${ev[i - 1]?.seq ?? 'none'})`);
        break;
      }
    }
  }

  // conn_order
  const byConn = new Map();
  for (const s of records.sends) {
    if (s.via !== 'ws' || !s.conn) continue;
    if (!byConn.has(s.conn)) byConn.set(s.conn, []);
    byConn.get(s.conn).push(s);
  }
  for (const [conn, list] of byConn) {
    let prev = null;
    for (const s of list) {
      const w = at(nodeIds[0], s.value);
      if (w.length !== 1) continue;
      if (prev && w[0].seq <= prev.seq) {
        fail('conn_order', `connection ${conn}: push ${JSON.stringify(s.value)} sent after ${JSON.stringify(prev.value)} is at seq ${w[0].seq}, before it (seq ${prev.seq})`);
      }
      prev = { seq: w[0].seq, value: s.value };
    }
  }

  // stale_read
  const reads = { fresh: 0, stale: 0, error: 0 };
  for (const r of records.reads ?? []) {
    reads[r.outcome] = (reads[r.outcome] ?? 0) + 1;
    if (r.outcome === 'stale' && checkStale) {
      fail('stale_read', `get on node ${r.node} at +${r.t0 - r.ackAt} ms after ${JSON.stringify(r.value)} (seq ${r.seq}) was acked on node ${r.ackNode} misses it: ${r.detail}`);
    }
  }

  // membership
  if (records.members && records.configs) {
    const want = [...records.members].sort((a, b) => a - b);
    for (const [id, cfg] of Object.entries(records.configs)) {
      const got = cfg.map((x) => x.id).sort((a, b) => a - b);
      const notVoter = cfg.filter((x) => want.includes(x.id) && x.role !== 'voter');
      if (JSON.stringify(got) !== JSON.stringify(want) || notVoter.length) {
        fail('membership', `node ${id}'s configuration is ${JSON.stringify(cfg)}, expected voters ${JSON.stringify(want)}`);
      }
    }
  }

  // A node may lag behind a removal (cut off, frozen): it is held to it
  // only once its commit index has passed the removal's log entry. That
  // index is bounded from the probes' configuration indexes (the entry
  // holding the configuration each node uses), counting only committed
  // configurations (entry <= the node's commit index: an uncommitted one
  // may be cut from the log, e.g. a change whose leader lost its term): a
  // committed configuration that lists the node is its addition or later
  // (index >= L, the least such); one that does not list it, at an index
  // >= L, comes after its removal (ids are never reused), so the removal's
  // entry is at most B, the least such index. A node whose commit index is
  // >= B and that still lists the node has committed the removal and
  // ignores it. (An earlier version took the highest commit index of the
  // probe round after the removal, which is no bound when only a lagging
  // node answered that round.)
  if (records.probes && records.changes) {
    const reported = new Set();
    const committed = records.probes.filter((p) => p.configIndex > 0 && p.configIndex <= p.commit);
    for (const c of records.changes) {
      if (c.op !== 'remove' || !c.ok) continue;
      const withIt = committed.filter((p) => p.ids.includes(c.id));
      if (withIt.length === 0) continue;
      const L = Math.min(...withIt.map((p) => p.configIndex));
      const after = committed.filter((p) => p.configIndex >= L && !p.ids.includes(c.id));
      if (after.length === 0) continue;
      const bound = Math.min(...after.map((p) => p.configIndex));
      const at = c.t0 + c.ms;
      for (const p of records.probes.filter((x) => x.configIndex > 0 && x.ids.includes(c.id))) {
        if (p.commit < bound || reported.has(`${p.node}/${c.id}`)) continue;
        reported.add(`${p.node}/${c.id}`);
        fail('membership', `node ${p.node} lists node ${c.id} at +${p.t - (records.tStart ?? 0)} ms (term ${p.term}, commit ${p.commit}, configuration ${JSON.stringify(p.ids)} of entry ${p.configIndex}), ${p.t - at} ms after its removal succeeded, though its commit index is past the removal's entry (<= ${bound})`);
      }
    }
  }

  const outcomes = { ok: 0, not_applied: 0, unknown: 0, no_answer: 0, refused: 0 };
  for (const s of records.sends) outcomes[s.outcome] = (outcomes[s.outcome] ?? 0) + 1;
  let retained = 0;
  for (const room of records.rooms) for (const key of records.keys) retained += (ref?.[room]?.[key] ?? []).length;
  const unknownApplied = records.sends.filter((s) => (s.outcome === 'unknown' || s.outcome === 'no_answer') && at(nodeIds[0], s.value).length > 0).length;
  return {
    ok: violations.length === 0,
    violations,
    reportedOnly,
    counts,
    stats: { sends: records.sends.length, outcomes, retained, unknownApplied, reads, nodes: nodeIds },
  };
}

// ---- self-test: one planted violation per check ---------------------------------

function clone(x) { return JSON.parse(JSON.stringify(x)); }

function maxSeq(records, id, room) {
  let m = 0;
  for (const key of records.keys) for (const e of records.finals[id][room][key]) m = Math.max(m, e.seq);
  return m;
}

function forAllNodes(records, f) {
  for (const id of Object.keys(records.finals)) f(records.finals[id], Number(id));
}

// Each planter changes a copy of the records so that exactly its check must
// fire; returns a description. The records need at least one room with a
// retained entry on every node.
const PLANTERS = {
  ack_present(r) {
    const ids = Object.keys(r.finals);
    const retained = new Set();
    for (const room of r.rooms) for (const key of r.keys) for (const e of r.finals[ids[0]][room][key]) retained.add(JSON.stringify(e.value));
    const s = r.sends.find((x) => x.outcome !== 'ok' && !retained.has(JSON.stringify(x.value)));
    if (s) { s.outcome = 'ok'; return `marked push ${JSON.stringify(s.value)} (absent everywhere) acknowledged`; }
    r.sends.push({ i: r.sends.length, writer: 'planted', node: 1, via: 'http', conn: null, room: r.rooms[0], key: r.keys[0], value: 'planted-lost', outcome: 'ok', seq: null });
    return 'added an acknowledged push that no node retains';
  },
  identical(r) {
    const ids = Object.keys(r.finals);
    const last = r.finals[ids[ids.length - 1]];
    for (const room of r.rooms) {
      for (const key of r.keys) {
        const l = last[room][key];
        if (l.length >= 1) {
          l.pop();
          return `dropped the last entry of ${room}/${key} on node ${ids[ids.length - 1]} only`;
        }
      }
    }
    throw new Error('no retained entry to plant "identical"');
  },
  seq_gapfree(r) {
    const room = r.rooms.find((rm) => maxSeq(r, Object.keys(r.finals)[0], rm) > 0);
    const top = maxSeq(r, Object.keys(r.finals)[0], room);
    forAllNodes(r, (f) => { for (const key of r.keys) for (const e of f[room][key]) if (e.seq === top) e.seq += 1; });
    for (const s of r.sends) if (s.room === room && s.seq === top) s.seq += 1;
    for (const sub of r.subs) if (sub.room === room) for (const e of sub.events) if (e.seq === top) e.seq += 1;
    for (const rd of r.reads ?? []) if (rd.room === room && rd.seq === top) rd.seq += 1;
    return `renumbered seq ${top} of ${room} to ${top + 1} everywhere (a gap)`;
  },
  no_phantom(r) {
    const room = r.rooms[0];
    const next = maxSeq(r, Object.keys(r.finals)[0], room) + 1;
    forAllNodes(r, (f) => { f[room][r.keys[0]].push({ seq: next, value: 'planted-never-sent' }); });
    return `appended a never-sent value to ${room}/${r.keys[0]} on every node`;
  },
  no_duplicate(r) {
    const ids = Object.keys(r.finals);
    for (const room of r.rooms) {
      for (const key of r.keys) {
        const l = r.finals[ids[0]][room][key];
        if (l.length) {
          const v = l[0].value;
          const next = maxSeq(r, ids[0], room) + 1;
          forAllNodes(r, (f) => { f[room][key].push({ seq: next, value: v }); });
          return `appended a second copy of ${JSON.stringify(v)} to ${room}/${key} on every node`;
        }
      }
    }
    throw new Error('no retained entry to plant "no_duplicate"');
  },
  not_applied_absent(r) {
    const ids = Object.keys(r.finals);
    const retained = new Set();
    for (const room of r.rooms) for (const key of r.keys) for (const e of r.finals[ids[0]][room][key]) retained.add(JSON.stringify(e.value));
    const s = r.sends.find((x) => retained.has(JSON.stringify(x.value)));
    s.outcome = 'not_applied';
    s.detail = 'planted: push not applied';
    return `marked retained push ${JSON.stringify(s.value)} "not applied"`;
  },
  subscriber(r) {
    const sub = r.subs.find((x) => x.events.length >= 2);
    if (sub) {
      const [gone] = sub.events.splice(Math.floor(sub.events.length / 2), 1);
      return `removed seq ${gone.seq} from what subscriber ${sub.sub} received of ${sub.room}/${sub.key}`;
    }
    throw new Error('no subscriber with 2 events to plant "subscriber"');
  },
  conn_order(r) {
    const ids = Object.keys(r.finals);
    const retained = new Set();
    for (const room of r.rooms) for (const key of r.keys) for (const e of r.finals[ids[0]][room][key]) retained.add(JSON.stringify(e.value));
    const byConn = new Map();
    for (let i = 0; i < r.sends.length; i++) {
      const s = r.sends[i];
      if (s.via !== 'ws' || !retained.has(JSON.stringify(s.value))) continue;
      if (!byConn.has(s.conn)) byConn.set(s.conn, []);
      byConn.get(s.conn).push(i);
    }
    for (const [conn, idx] of byConn) {
      if (idx.length >= 2) {
        const [a, b] = idx;
        [r.sends[a], r.sends[b]] = [r.sends[b], r.sends[a]];
        return `swapped the send order of two pushes of connection ${conn}`;
      }
    }
    throw new Error('no WebSocket connection with 2 retained pushes to plant "conn_order"');
  },
  stale_read(r) {
    r.reads = r.reads ?? [];
    const s = r.sends.find((x) => x.outcome === 'ok' && x.seq != null) ?? r.sends[0];
    r.reads.push({ value: s.value, room: s.room, key: s.key, seq: s.seq, ackNode: s.node, ackAt: s.t1 ?? 0, node: 99, t0: (s.t1 ?? 0) + 1, t1: (s.t1 ?? 0) + 2, outcome: 'stale', detail: 'planted' });
    return 'added a read that missed an acknowledged push';
  },
  membership_probe(r) {
    const t = (r.tStart ?? 0) + 1000;
    r.changes = [...(r.changes ?? []), { op: 'remove', id: 98, ok: true, t0: t, ms: 10 }];
    r.probes = [...(r.probes ?? []),
      { t: t - 500, node: 1, term: 1, commit: 40, configIndex: 50, ids: [1, 2, 98] },
      { t: t + 1000, node: 2, term: 1, commit: 100, configIndex: 60, ids: [1, 2] },
      { t: t + 60000, node: 1, term: 1, commit: 1e12, configIndex: 50, ids: [1, 2, 98] }];
    return 'added probes where node 1, past the commit index of node 98\'s removal, still lists node 98';
  },
  membership(r) {
    r.members = r.members ?? Object.keys(r.finals).map(Number);
    r.configs = r.configs ?? Object.fromEntries(r.members.map((id) => [id, r.members.map((m) => ({ id: m, role: 'voter' }))]));
    const id = Object.keys(r.configs)[0];
    r.configs[id].push({ id: 99, role: 'spare' });
    return `added a removed node 99 to node ${id}'s configuration`;
  },
};

// Plants one violation per check in copies of records; returns
// [{check, planted, caught, others}] (caught: that check fired).
// A check counts as caught when it reports more violations than on the
// unplanted records (a run with stale reads already has some).
export function selfTest(records) {
  const out = [];
  const base = check(records, { checkStale: true, checkMembership: true }).counts;
  for (const [name, plant] of Object.entries(PLANTERS)) {
    const chk = name.replace(/_probe$/, '');
    const r = clone(records);
    const planted = plant(r);
    const res = check(r, { checkStale: true, checkMembership: true });
    const others = Object.entries(res.counts).filter(([c, n]) => n > base[c] && c !== chk).map(([c]) => c);
    out.push({ check: chk, planted, caught: res.counts[chk] > base[chk], others });
  }
  return out;
}
