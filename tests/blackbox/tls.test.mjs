// TLS on the client port (--tls-cert/--tls-key: https:// and wss:// only)
// and on the forward links between nodes (checked against --peer-ca), with
// certificates this test makes with the openssl command line: a CA and one
// node certificate for 127.0.0.1. The real driftdb client connects over
// wss:// to a follower and its writes reach the leader over a TLS link.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

import {
  createRoom, httpRequest, httpSend, trustCA, dbConnect, recordDb, waitFor, StateListener, RawClient,
} from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere, waitSameReplay } from './lib/cluster.mjs';
import { makeCerts } from './lib/certs.mjs';

const T = { timeout: 120000 };

async function fetchStatus(c, id) {
  return (await httpRequest(`${c.base(id)}/cluster/status`)).json();
}

const certs = makeCerts();
trustCA(fs.readFileSync(certs.ca));

describe('TLS: client port and forward links', () => {
  const ctx = useCluster({
    size: 3, name: 'tls', args: ['--tls-cert', certs.cert, '--tls-key', certs.key, '--peer-ca', certs.ca],
  });

  test('every node speaks https and wss only, and room URLs say so', T, async () => {
    const c = ctx.cluster;
    await c.waitLeader();
    for (const id of c.ids) {
      assert.match(c.base(id), /^https:/);
      assert.equal((await httpRequest(`${c.base(id)}/healthz`)).status, 200);
      // Plain HTTP on the same port gets no HTTP answer.
      await assert.rejects(httpRequest(`http://127.0.0.1:${c.httpPorts[id - 1]}/healthz`, { timeoutMs: 3000 }));
    }
    const r = await createRoom(c.base(1));
    assert.match(r.socket_url, /^wss:\/\/127\.0\.0\.1:\d+\/room\/.+\/connect$/);
    assert.match(r.http_url, /^https:\/\/127\.0\.0\.1:\d+\/room\/.+\/send$/);
  });

  test('the real driftdb client over wss:// on a follower; its writes reach the leader over a TLS link', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const [f1, f2] = c.ids.filter((id) => id !== leader);
    const { room } = await createRoom(c.base(f1));
    await waitRoomEverywhere(c, room);
    const db1 = await dbConnect(c.socketUrl(f1, room));
    const db2 = await dbConnect(c.socketUrl(f2, room), true);
    const seen = [];
    const msgs2 = recordDb(db2);
    const s2 = new StateListener({ db: db2, key: 'state', callback: (v) => seen.push(v) });
    s2.subscribe();
    await waitFor(() => msgs2.some((m) => m.type === 'init'), 5000, 'init over wss');
    const s1 = new StateListener({ db: db1, key: 'state', callback: () => {} });
    s1.subscribe();
    s1.setStateOptimistic({ over: 'tls', n: 1 });
    await waitFor(() => seen.some((v) => v?.over === 'tls'), 10000, 'the state to cross the cluster');
    const data = await waitSameReplay(c, room, 'state', { until: (d) => d.length === 1 });
    assert.deepEqual(data[0].value.v, { over: 'tls', n: 1 }); // StateListener wraps it: {i, v}
    s1.destroy();
    s2.destroy();
    assert.match(c.node(f1).output(), /event=fwd_link_connected leader=\d+ addr=127\.0\.0\.1:\d+/);
  });

  test('a follower that does not trust the leader\'s certificate cannot forward', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const victim = c.ids.find((id) => id !== leader);
    const d = c.node(victim);
    const saved = d.args;
    await d.stopClean();
    d.args = saved.map((a) => (a === certs.ca ? certs.other : a));
    await d.launch();
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room, c.ids.filter((id) => id !== victim));
    await waitFor(async () => (await fetchStatus(c, victim)).applied_index >= (await fetchStatus(c, leader)).commit_index,
      10000, 'the distrusting follower to apply the room (raft still reaches it)');
    const r = await httpSend(c.base(victim), room, { type: 'push', key: 'k', value: 1, action: { type: 'append' } }, { timeoutMs: 20000 });
    assert.equal(r.status >= 500, true, `a push through it fails: ${r.status} ${r.text}`);
    // Its reads need the leader too (read barrier): "retry", never "not found".
    const info = await httpRequest(`${c.base(victim)}/room/${room}`, { timeoutMs: 20000 });
    assert.equal(info.status, 503, `a read through it: ${info.status} ${info.text}`);
    await waitFor(() => /event=fwd_link_failed leader=\d+ addr=\S+ why="connect: [^"]*SSL/.test(d.output()), 5000, 'the TLS failure in its log');
    await d.stopClean();
    d.args = saved;
    await d.launch();
    const ok = await httpSend(c.base(victim), room, { type: 'push', key: 'k', value: 2, action: { type: 'append' } });
    assert.equal(ok.status, 200, ok.text);
  });
});

// A TLS client to a raft port; resolves with how it ended.
function tlsProbe(port, opts) {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(certs.ca), servername: undefined, ...opts });
    let got = Buffer.alloc(0);
    s.on('secureConnect', () => s.write(Buffer.from('DRIFTRF1')));
    s.on('data', (d) => { got = Buffer.concat([got, d]); });
    s.on('error', (e) => resolve({ error: e.message, got }));
    s.on('close', () => resolve({ closed: true, got }));
    s.setTimeout(8000, () => { s.destroy(); resolve({ timeout: true, got }); });
  });
}

describe('TLS: mutual TLS on raft links', () => {
  const ctx = useCluster({
    size: 3, name: 'rafttls', args: ['--peer-cert', certs.cert, '--peer-key', certs.key, '--peer-ca', certs.ca],
  });

  test('the cluster replicates and fails over with every raft link on mutual TLS', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room);
    for (let i = 0; i < 10; i++) {
      const r = await httpSend(c.base(c.ids[i % 3]), room, { type: 'push', key: 'k', value: i, action: { type: 'append' } });
      assert.equal(r.status, 200, r.text);
    }
    await waitSameReplay(c, room, 'k', { until: (d) => d.length === 10 });
    await c.kill9(leader);
    const next = await c.waitLeader({ exclude: [leader] });
    const r = await httpSend(c.base(next), room, { type: 'push', key: 'k', value: 'after failover', action: { type: 'append' } });
    assert.equal(r.status, 200, r.text);
    await c.restart(leader);
    const data = await waitSameReplay(c, room, 'k', { until: (d) => d.length === 11 });
    assert.equal(data.at(-1).value, 'after failover');
    for (const id of c.ids) assert.match(c.node(id).output(), /event=security .*raft_tls=yes/);
  });

  test('a raft port refuses plain TCP, TLS without a client certificate, and a certificate of another CA', T, async () => {
    const c = ctx.cluster;
    const port = c.raftPorts[0];
    // Our own handshake in clear text: the TLS layer drops it.
    const sock = net.connect(port, '127.0.0.1');
    let got = 0;
    sock.on('data', (d) => { got += d.length; });
    sock.on('error', () => {});
    sock.write(Buffer.concat([Buffer.from('DRIFTRF1'), Buffer.alloc(80)]));
    await waitFor(() => sock.destroyed || sock.readableEnded, 8000, 'the plain connection to be closed');
    const noCert = await tlsProbe(port, {});
    assert.ok(noCert.error || noCert.closed, JSON.stringify(noCert));
    assert.equal(noCert.got.length, 0, 'nothing answered without a certificate');
    const rogue = await tlsProbe(port, { cert: fs.readFileSync(certs.rogueCert), key: fs.readFileSync(certs.rogueKey) });
    assert.ok(rogue.error || rogue.closed, JSON.stringify(rogue));
    assert.equal(rogue.got.length, 0, 'nothing answered to a certificate of another CA');
    await waitFor(() => /event=raft_tls_refused remote=\S+ side=server why="[^"]*(certificate|alert)/i.test(c.node(1).output()), 5000, 'the refusals logged');
    assert.ok(c.running(1));
  });
});
