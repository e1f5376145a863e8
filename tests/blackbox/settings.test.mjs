// Cluster settings: the limits that decide whether a push applies are set
// through the log, so nodes started with different flags still apply the
// same log alike. The first leader proposes its flags at bootstrap; later
// `driftctl config set` changes a setting on every node.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createRoom, httpSend } from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere, waitSameReplay } from './lib/cluster.mjs';
import { ctlOk, ctlFails } from './lib/admin.mjs';

const T = { timeout: 120000 };
const ROOM_BYTES = { 1: '4096', 2: '2048', 3: '1048576' };

describe('cluster settings', () => {
  const ctx = useCluster({
    size: 3, name: 'settings', nodeArgs: (id) => ['--max-room-bytes', ROOM_BYTES[id]],
  });

  test('nodes started with different --max-room-bytes apply the same history', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room);
    const value = 'v'.repeat(400);
    const answers = [];
    for (let i = 0; i < 12; i++) {
      const r = await httpSend(c.base(c.ids[i % 3]), room, { type: 'push', key: 'k', value: `${i}:${value}`, action: { type: 'append' } });
      answers.push(r.status);
    }
    // The cluster setting is the first leader's flag (not necessarily the
    // current leader's), the same on every node.
    const st = (await ctlOk(['--json', 'config'], { server: c.base(c.ids.find((id) => id !== leader)) })).json();
    const s = Object.fromEntries(st.settings.map((x) => [x.name, x]));
    const limit = s.max_room_bytes.value;
    assert.equal(s.max_room_bytes.set, true);
    assert.ok(Object.values(ROOM_BYTES).map(Number).includes(limit), `max_room_bytes ${limit} is one node's flag`);
    const accepted = answers.filter((x) => x === 200).length;
    // About limit / 400 bytes of values fit, whichever node took the push.
    if (limit >= 12 * 420) assert.equal(accepted, 12, `answers ${answers}`);
    else {
      assert.ok(accepted >= Math.floor(limit / 420) - 1 && accepted <= Math.ceil(limit / 400),
        `${accepted} pushes of 400 B accepted under ${limit} (answers ${answers})`);
    }
    const data = await waitSameReplay(c, room, 'k');
    assert.equal(data.length, accepted, 'every node holds exactly the accepted pushes');
    for (const id of c.ids) {
      if (Number(ROOM_BYTES[id]) !== limit) {
        assert.match(c.node(id).output(), new RegExp(`event=setting_differs name=max_room_bytes cluster=${limit} flag=${ROOM_BYTES[id]}`));
      }
    }
  });

  test('driftctl config set changes a setting on every node; bad names and values are refused', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const follower = c.ids.find((id) => id !== leader);
    const { room } = await createRoom(c.base(leader));
    await waitRoomEverywhere(c, room);
    await ctlOk(['config', 'set', 'max_room_bytes', '65536'], { server: c.base(follower) });
    for (const id of c.ids) {
      const st = (await ctlOk(['--json', 'config'], { server: c.base(id) })).json();
      assert.equal(st.settings.find((x) => x.name === 'max_room_bytes').value, 65536, `node ${id}`);
    }
    const value = 'v'.repeat(4000);
    for (let i = 0; i < 9; i++) {
      const r = await httpSend(c.base(c.ids[i % 3]), room, { type: 'push', key: 'k', value: `${i}:${value}`, action: { type: 'append' } });
      assert.equal(r.status, 200, `push ${i} of 4 KB under 64 KiB: ${r.text}`);
    }
    await waitSameReplay(c, room, 'k', { until: (d) => d.length === 9 });
    await ctlFails(['config', 'set', 'max_rooms', '0'], { server: c.base(leader) }, { match: /max_rooms: want an integer 1\.\./ });
    await ctlFails(['config', 'set', 'no_such_thing', '5'], { server: c.base(leader) }, { match: /unknown setting/ });
  });
});
