// The nemesis: seeded faults, one at a time (each applied, held, healed),
// plus a membership change (add a node, later remove it) that runs while the
// other faults go on. Kinds are drawn as shuffled rounds, so every kind
// comes up once per round (a short run still sees them all).
import fs from 'node:fs';

import { run, sleep } from './env.mjs';

export const KINDS = ['isolate-leader', 'isolate-follower', 'bridge', 'ring', 'oneway-loss',
  'kill9', 'sigstop', 'lossy', 'slow', 'restart-all'];

export class Nemesis {
  // cluster: {net, nodes: [ChaosNode] (initial voters), joinerSlot,
  //           makeJoiner(id) -> ChaosNode, ctl(args) -> {code, stdout, stderr}}
  constructor({ cluster, rng, holdMs = [1500, 5000], gapMs = [500, 2000], membership = true, log = () => {} }) {
    this.c = cluster;
    this.rng = rng;
    this.mrng = cluster.mrng;
    this.holdMs = holdMs;
    this.gapMs = gapMs;
    this.membership = membership;
    this.log = log;
    this.faults = [];
    this.changes = [];
    this.current = null;
    this.stopping = false;
    this.joiner = null;
  }

  // Node count of the initial voters.
  get n() { return this.c.nodes.length; }

  now() { return this.current ? this.current.kind : null; }

  async leader() {
    const votes = new Map();
    await Promise.all(this.all().filter((x) => x.live).map(async (node) => {
      try {
        const st = await node.status(1000);
        if (st.leader && typeof st.leader.id === 'number') votes.set(st.leader.id, (votes.get(st.leader.id) ?? 0) + 1);
      } catch { /* unreachable */ }
    }));
    let best = null;
    for (const [id, v] of votes) if (!best || v > best[1]) best = [id, v];
    return best ? best[0] : null;
  }

  all() { return this.joiner?.running ? [...this.c.nodes, this.joiner] : [...this.c.nodes]; }
  byId(id) { return this.all().find((x) => x.id === id) ?? null; }
  slots() { const s = this.c.nodes.map((x) => x.slot); s.push(this.c.joinerSlot); return s; }

  // Rules cutting every pair in `cuts` ([[slotA, slotB]]) both ways.
  async cut(cuts) {
    const per = new Map();
    for (const [a, b] of cuts) {
      if (!per.has(a)) per.set(a, new Set());
      if (!per.has(b)) per.set(b, new Set());
      per.get(a).add(b);
      per.get(b).add(a);
    }
    for (const [slot, peers] of per) {
      const set = [...peers].map((p) => this.c.net.addr(p)).join(', ');
      await this.c.net.setRules(slot, { input: [`ip saddr { ${set} } drop`], output: [`ip daddr { ${set} } drop`] });
    }
  }

  async isolate(slot) {
    await this.cut(this.slots().filter((s) => s !== slot).map((s) => [slot, s]));
  }

  async apply(kind) {
    const rng = this.rng;
    const nodes = this.c.nodes;
    const pickRank = rng.int(0, 1000); // drawn for every kind: replays stay aligned
    const loss = rng.int(5, 100);
    const f = { kind, t0: Date.now(), t1: null, targets: [], detail: '' };
    switch (kind) {
      case 'isolate-leader': {
        const l = await this.leader();
        const node = (l && this.byId(l)) ?? nodes[pickRank % nodes.length];
        f.targets = [node.id];
        f.detail = l ? 'leader' : 'no leader known: a random node';
        await this.isolate(node.slot);
        break;
      }
      case 'isolate-follower': {
        const l = await this.leader();
        const others = nodes.filter((x) => x.id !== l);
        const node = others[pickRank % others.length];
        f.targets = [node.id];
        await this.isolate(node.slot);
        break;
      }
      case 'bridge':
      case 'ring': {
        const order = rng.shuffle(nodes.map((x) => x.slot));
        const m = order.length;
        const cuts = [];
        if (kind === 'ring' && m >= 5) {
          // Each node talks to its two ring neighbours only: every node sees
          // a majority (itself and two others of five), no two see the same.
          for (let i = 0; i < m; i++) {
            for (let j = i + 1; j < m; j++) {
              const d = Math.min(j - i, m - (j - i));
              if (d > 1) cuts.push([order[i], order[j]]);
            }
          }
          f.detail = `ring ${order.map((s) => nodes.find((x) => x.slot === s).id).join('-')}`;
        } else {
          // Two halves joined by one node (order[mid]) that talks to both.
          const mid = Math.floor(m / 2);
          const left = order.slice(0, mid);
          const right = order.slice(mid + 1);
          for (const a of left) for (const b of right) cuts.push([a, b]);
          f.detail = `${kind === 'ring' ? 'ring needs 5 nodes: bridge ' : ''}${left.map((s) => nodes.find((x) => x.slot === s).id)} | ${nodes.find((x) => x.slot === order[mid]).id} | ${right.map((s) => nodes.find((x) => x.slot === s).id)}`;
        }
        f.targets = nodes.map((x) => x.id);
        await this.cut(cuts);
        break;
      }
      case 'oneway-loss': {
        // Packets leaving one node for its peers are dropped (loss %), what
        // it receives is not: the others stop hearing it, it hears them.
        const l = await this.leader();
        const node = pickRank % 2 === 0 && l && this.byId(l) ? this.byId(l) : nodes[pickRank % nodes.length];
        const peers = this.slots().filter((s) => s !== node.slot).map((s) => this.c.net.addr(s)).join(', ');
        const pct = Math.max(50, loss);
        f.targets = [node.id];
        f.detail = `${pct}% of packets from node ${node.id}${node.id === l ? ' (leader)' : ''} to its peers dropped`;
        await this.c.net.setRules(node.slot, { output: [pct >= 100 ? `ip daddr { ${peers} } drop` : `ip daddr { ${peers} } numgen random mod 100 < ${pct} drop`] });
        break;
      }
      case 'lossy': {
        const pct = 5 + (loss % 26);
        f.targets = nodes.map((x) => x.id);
        f.detail = `${pct}% random loss on every node-to-node packet`;
        for (const slot of this.slots()) {
          const peers = this.slots().filter((s) => s !== slot).map((s) => this.c.net.addr(s)).join(', ');
          await this.c.net.setRules(slot, { input: [`ip saddr { ${peers} } numgen random mod 100 < ${pct} drop`] });
        }
        break;
      }
      case 'slow': {
        const l = await this.leader();
        const node = pickRank % 2 === 0 && l && this.byId(l) ? this.byId(l) : nodes[pickRank % nodes.length];
        const rate = [64, 128, 256, 512][pickRank % 4];
        f.targets = [node.id];
        f.detail = `tbf ${rate}kbit both ways on node ${node.id}${node.id === l ? ' (leader)' : ''}`;
        await this.c.net.setSlow(node.slot, true, { rate: `${rate}kbit` });
        break;
      }
      case 'kill9': {
        const node = nodes[pickRank % nodes.length];
        f.targets = [node.id];
        await node.kill9();
        break;
      }
      case 'sigstop': {
        const l = await this.leader();
        const node = pickRank % 2 === 0 && l && this.byId(l) ? this.byId(l) : nodes[pickRank % nodes.length];
        f.targets = [node.id];
        f.detail = node.id === l ? 'leader' : '';
        node.sigstop();
        break;
      }
      case 'restart-all': {
        const all = this.all();
        f.targets = all.map((x) => x.id);
        await Promise.all(all.map((x) => x.kill9()));
        f.restart = all;
        break;
      }
      default: throw new Error(`unknown fault ${kind}`);
    }
    return f;
  }

  async heal(f) {
    await this.c.net.healAll();
    for (const x of this.all()) if (x.frozen) x.sigcont();
    if (f.kind === 'kill9') for (const id of f.targets) { const x = this.byId(id); if (x && !x.running) x.launch(); }
    // Not a joiner removed meanwhile (removeJoiner retires it).
    if (f.kind === 'restart-all') for (const x of f.restart) if (!x.running && !x.retired) x.launch();
    delete f.restart;
    f.t1 = Date.now();
  }

  // Runs faults until stop(); returns when the last one is healed.
  async run() {
    let round = [];
    await sleep(this.rng.int(1000, 3000));
    while (!this.stopping) {
      if (round.length === 0) round = this.rng.shuffle(KINDS);
      const kind = round.shift();
      const hold = this.rng.int(this.holdMs[0], this.holdMs[1]);
      const gap = this.rng.int(this.gapMs[0], this.gapMs[1]);
      let f;
      try {
        f = await this.apply(kind);
      } catch (e) {
        f = { kind, t0: Date.now(), targets: [], detail: `apply failed: ${e.message}` };
      }
      this.current = f;
      this.faults.push(f);
      this.log(`fault ${this.faults.length}: ${kind} on [${f.targets}] ${f.detail} for ${hold} ms`);
      await this.sleepUnlessStopping(hold);
      await this.heal(f);
      this.current = null;
      await this.sleepUnlessStopping(gap);
    }
  }

  async sleepUnlessStopping(ms) {
    const end = Date.now() + ms;
    while (!this.stopping && Date.now() < end) await sleep(Math.min(100, end - Date.now()));
  }

  // Every 2 s, the configuration every live initial voter reports
  // (/cluster/status nodes): [{t, node, ids}]. The checker holds them
  // against the membership changes that succeeded.
  async probeMembers(everyMs = 2000) {
    this.probes = [];
    while (!this.stopping) {
      await Promise.all(this.c.nodes.filter((x) => x.live).map(async (x) => {
        try {
          const st = await x.status(1000);
          this.probes.push({
            t: Date.now(), node: x.id, term: st.term, commit: st.commit_index, configIndex: st.config_index, ids: st.nodes.map((m) => m.id),
          });
        } catch { /* unreachable now */ }
      }));
      await this.msleep(everyMs);
    }
  }

  // Membership: add a fresh node (new id each time, the spare namespace),
  // hold it while faults run, remove it, stop it. Until stop().
  async runMembership() {
    if (!this.membership) return;
    const rng = this.mrng;
    let nextId = this.n + 1;
    await this.msleep(rng.int(4000, 10000));
    while (!this.stopping) {
      const id = nextId++;
      const hold = rng.int(6000, 15000);
      const gap = rng.int(8000, 25000);
      const j = this.c.makeJoiner(id);
      this.joiner = j;
      j.launch();
      // Retried while the node asked cannot be reached or knows no leader
      // (another fault is running); any other refusal stands.
      for (let attempt = 1; attempt <= 5 && !this.stopping; attempt++) {
        const add = await this.ctl(['add', String(id), j.raftAddr]);
        this.changes.push({ op: 'add', id, attempt, ...add });
        this.log(`membership: add ${id} (attempt ${attempt}): ${add.ok ? 'ok' : 'FAILED'} in ${add.ms} ms ${add.out}`);
        if (add.ok || !/cannot reach|no leader|quorum|busy/i.test(add.out)) break;
        await sleep(1000);
      }
      await this.msleep(hold);
      await this.removeJoiner();
      await this.msleep(gap);
    }
  }

  async msleep(ms) {
    const end = Date.now() + ms;
    while (!this.stopping && Date.now() < end) await sleep(Math.min(200, end - Date.now()));
  }

  // Removes the current joiner (retrying while faults make it fail), then
  // stops it. Returns true when it is out of the configuration.
  async removeJoiner(deadlineMs = 60000) {
    const j = this.joiner;
    if (!j) return true;
    const end = Date.now() + deadlineMs;
    let done = false;
    while (!done && Date.now() < end) {
      const r = await this.ctl(['remove', String(j.id)]);
      this.changes.push({ op: 'remove', id: j.id, ...r });
      this.log(`membership: remove ${j.id}: ${r.ok ? 'ok' : 'FAILED'} in ${r.ms} ms ${r.out}`);
      if (r.ok || /no such node|not found|not a member/i.test(r.out)) done = true;
      else await sleep(1000);
    }
    if (done) {
      j.retired = true;
      // Evidence for the records: does any live node still list it?
      await sleep(1000);
      for (const x of this.c.nodes.filter((y) => y.live)) {
        try {
          const st = await x.status(1000);
          if (st.nodes.some((m) => m.id === j.id)) {
            this.changes.push({ op: 'lingering', id: j.id, node: x.id, t0: Date.now(), nodes: st.nodes });
            this.log(`membership: node ${x.id} still lists removed node ${j.id}: ${JSON.stringify(st.nodes.map((m) => [m.id, m.role]))}`);
          }
        } catch { /* unreachable now */ }
      }
      await j.stop();
      fs.rmSync(j.dataDir, { recursive: true, force: true });
      this.joiner = null;
    }
    return done;
  }

  async ctl(args) {
    const t0 = Date.now();
    const live = this.c.nodes.filter((x) => x.live);
    const node = live.length ? live[this.mrng.int(0, live.length - 1)] : this.c.nodes[0];
    const r = await this.c.ctl(['--server', node.base, ...args]);
    const out = `${r.stdout}${r.stderr}`.trim().replace(/\s+/g, ' ').slice(0, 300);
    return { ok: r.code === 0, code: r.code, ms: Date.now() - t0, via: node.id, out, t0 };
  }

  stop() { this.stopping = true; }
}
