// The dashboard at /ui (src/net/ui.c, src/net/ui/), end to end in a real
// headless browser: Debian's chromium driven by playwright-core, against a
// 3-node cluster with a cluster key and an admin token.
//
// - HTTP: the embedded files with their Content-Type, CSP, ETag (304),
//   404 under /ui, 405; CORS of /admin/* only for the members' origins.
// - The page on a follower shows the three nodes and the leader; with the
//   token it lists rooms; its room inspector (a debug=true WebSocket) shows
//   the pushes a client sends to another node; a membership change
//   (transfer) is refused without the token and done with it, the leader is
//   demoted (leadership moved first) and promoted back; after kill -9
//   of the leader it shows the dead node down and the new leader within a
//   few seconds.
//
// A screenshot of each state goes to $BUILD/test-artifacts/ui/ (next to
// DRIFTD_BIN; UI_ARTIFACTS overrides); the path is printed. Skipped with
// the reason when chromium is missing (scripts/deps.sh installs it).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { createRoom, httpRequest, RawClient, waitFor, DRIFTD_BIN } from './lib/harness.mjs';
import { useCluster, waitRoomEverywhere } from './lib/cluster.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const NO_CHROMIUM = fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} not found (scripts/deps.sh installs chromium)`;
const ARTIFACTS = process.env.UI_ARTIFACTS
  ?? path.join(path.dirname(path.resolve(DRIFTD_BIN ?? 'build/driftd')), 'test-artifacts', 'ui');
const T = { timeout: 120000, skip: NO_CHROMIUM };
// The page polls every second and calls a node down after 1.5 s without an
// answer; the cluster elects within 2 election timeouts (500 ms here).
const SHOWN_WITHIN_MS = 8000;

describe('dashboard /ui', () => {
  const ctx = useCluster({ size: 3, name: 'ui' });
  let browser = null;
  let page = null;
  let pageNode = null; // the follower whose /ui the page shows
  const pageErrors = [];

  before(async () => {
    if (NO_CHROMIUM) return;
    fs.rmSync(ARTIFACTS, { recursive: true, force: true }); // no stale shots
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    console.log(`# dashboard screenshots: ${ARTIFACTS}`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // CI runs as root, where chromium's sandbox cannot start.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  });

  after(async () => {
    if (browser) await browser.close();
  });

  async function shot(name) {
    const file = path.join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.log(`# screenshot: ${file}`);
  }

  // The page's own view of the leader ('' while it shows none).
  const shownLeader = () => page.getAttribute('#leader', 'data-leader');
  const rowState = (id) => page.getAttribute(`#nodes tbody tr[data-node="${id}"]`, 'data-state', { timeout: 1000 }).catch(() => null);

  test('serves the embedded files with their headers, 304, 404 and 405', T, async () => {
    const c = ctx.cluster;
    const base = c.base(1);
    const r = await httpRequest(`${base}/ui`);
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/html; charset=utf-8$/);
    const csp = r.headers['content-security-policy'];
    assert.ok(csp, 'no CSP');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    for (const id of c.ids) {
      assert.ok(csp.includes(`http://${c.httpAddr(id)}`), `CSP lacks node ${id}: ${csp}`);
    }
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['cache-control'], 'no-cache');
    assert.equal(r.headers['access-control-allow-origin'], undefined, '/ui needs no CORS');
    assert.doesNotMatch(r.text, /<script>|<script [^>]*>[^<]/, 'inline script in index.html');
    assert.doesNotMatch(r.text, / style="/, 'inline style in index.html');
    const etag = r.headers.etag;
    assert.match(etag, /^"[0-9a-f]{16}"$/);

    assert.equal((await httpRequest(`${base}/ui/`)).text, r.text);
    const again = await httpRequest(`${base}/ui/index.html`, { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    assert.equal(again.text, '');

    const js = await httpRequest(`${base}/ui/app.js`);
    assert.equal(js.status, 200);
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.notEqual(js.headers.etag, etag);
    const css = await httpRequest(`${base}/ui/style.css`);
    assert.equal(css.headers['content-type'], 'text/css; charset=utf-8');

    for (const p of ['/ui/nope.js', '/ui/app.js/x', '/ui/app.js.map', '/ui/.env', `/ui/${'a'.repeat(300)}`]) {
      const nf = await httpRequest(`${base}${p}`);
      assert.equal(nf.status, 404, `${p}: ${nf.status}`);
    }
    assert.equal((await httpRequest(`${base}/ui`, { method: 'POST', body: 'x' })).status, 405);
    assert.equal((await httpRequest(`${base}/uix`)).status, 404);
  });

  test('the admin API: CORS only for the members\' origins, closed without the token', T, async () => {
    const c = ctx.cluster;
    const url = `${c.base(1)}/admin/status`;
    const auth = { Authorization: `Bearer ${c.adminToken}` };
    const from2 = `http://${c.httpAddr(2)}`;
    let r = await httpRequest(url, { headers: { ...auth, Origin: from2 } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['access-control-allow-origin'], from2);
    assert.equal(r.headers.vary, 'Origin');
    r = await httpRequest(url, { headers: { ...auth, Origin: 'http://evil.example' } });
    assert.equal(r.headers['access-control-allow-origin'], undefined);
    r = await httpRequest(url, { method: 'OPTIONS', headers: { Origin: from2, 'Access-Control-Request-Headers': 'authorization' } });
    assert.equal(r.headers['access-control-allow-origin'], from2);
    assert.match(r.headers['access-control-allow-headers'], /authorization/);
    r = await httpRequest(url, { headers: { Origin: from2 } });
    assert.equal(r.status, 401);
    // The client API stays open to every origin.
    r = await httpRequest(`${c.base(1)}/cluster/status`, { headers: { Origin: 'http://evil.example' } });
    assert.equal(r.headers['access-control-allow-origin'], '*');
  });

  test('the page shows three nodes and the leader', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    pageNode = c.ids.find((id) => id !== leader);
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // A node that is down fails its polls: expected. Anything else
      // (a CSP refusal, a script error) is not.
      if (m.type() === 'error' && !/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE/.test(m.text())) {
        pageErrors.push(`console: ${m.text()}`);
      }
    });
    await page.goto(`${c.base(pageNode)}/ui`);
    await waitFor(async () => {
      const states = await Promise.all(c.ids.map(rowState));
      return states.filter((s) => s === 'leader').length === 1
        && states.filter((s) => s === 'follower').length === 2
        && (await shownLeader()) === String(leader);
    }, 15000, 'the page to show 3 nodes and the leader', 100);
    assert.equal(await page.locator('#nodes tbody tr').count(), 3);
    // Lag comes from the leader's match indexes: shown for every node.
    await waitFor(async () => {
      const lags = await page.$$eval('#nodes tbody tr', (trs) => trs.map((tr) => tr.children[8].textContent));
      return lags.every((l) => /^\d+$/.test(l));
    }, 10000, 'a lag for every node', 100);
    await shot('1-cluster');
    assert.deepEqual(pageErrors, []);
  });

  test('with the token: rooms listed; the inspector tails pushes sent to another node', T, async () => {
    const c = ctx.cluster;
    const other = c.ids.find((id) => id !== pageNode);
    const { room } = await createRoom(c.base(other));
    await waitRoomEverywhere(c, room);

    assert.equal(await page.textContent('#rooms-state'), '(enter the admin token to list rooms)');
    await page.fill('#token', c.adminToken);
    await page.click('#token-form button[type=submit]');
    assert.equal(await page.inputValue('#token'), '', 'the token stays in the input');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('driftd.adminToken')), c.adminToken);
    assert.ok(!page.url().includes(c.adminToken), 'token in the URL');
    await page.locator(`#room-table tr[data-room="${room}"] button`).click({ timeout: 10000 });
    await waitFor(async () => (await page.getAttribute('#inspector', 'data-tailing')) === room,
      10000, 'the inspector to connect', 50);

    // A client on another node pushes; every push shows up in the log.
    const client = await RawClient.connect(c.socketUrl(other, room), { label: 'ui pusher' });
    const N = 40;
    for (let i = 1; i <= N; i++) {
      client.push('cursor', { x: i, y: i * 2 }, 'append');
      if (i % 10 === 0) await client.roundTrip();
    }
    await client.roundTrip();
    await waitFor(async () => (await page.locator('#inspect-log li.push').count()) >= N,
      10000, `${N} pushes in the inspector`, 100);
    const lastSeq = await page.getAttribute('#inspect-keys tr[data-key="cursor"]', 'data-key')
      .then(() => page.textContent('#inspect-keys tr[data-key="cursor"] td:nth-child(2)'));
    assert.equal(Number(lastSeq), N);
    assert.equal(await page.textContent('#inspect-keys tr[data-key="cursor"] td:nth-child(3)'), JSON.stringify({ x: N, y: 2 * N }));
    const top = await page.textContent('#inspect-log li.push');
    assert.ok(top.includes(`#${N} "cursor" = {"x":${N},"y":${2 * N}}`), top);

    // Steady pushes until the cluster rate plot shows them.
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        client.push('rate', i, 'replace');
        await client.roundTrip();
      }
    })();
    try {
      // A few seconds of samples, so the screenshot shows lines.
      await waitFor(async () => Number(await page.textContent('#v-pushes')) > 0
        && (await page.textContent('#v-p99')) !== '-'
        && Number(await page.getAttribute('#plot-pushes', 'data-points')) >= 6,
      20000, 'a push rate and p99 on the plots', 100);
      await waitFor(async () => Number(await page.textContent(`#room-table tr[data-room="${room}"] td:nth-child(6)`)) > 0,
        15000, 'the room\'s activity in the list', 100);
    } finally {
      stop = true;
      await writer;
    }
    await shot('2-rooms-inspector-rates');
    assert.deepEqual(pageErrors, []);
  });

  test('membership: a transfer is refused without the token, done with it; the leader demoted and promoted', T, async () => {
    const c = ctx.cluster;
    const leader = await c.waitLeader();
    const target = c.ids.find((id) => id !== leader && id !== pageNode);

    await page.click('#token-forget');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('driftd.adminToken')), null);
    await page.fill('#m-transfer input[name=id]', String(target));
    await page.click('#m-transfer button');
    await waitFor(async () => (await page.getAttribute('#m-result', 'data-ok')) === 'false', 10000, 'the refusal', 50);
    assert.equal(await page.getAttribute('#m-result', 'data-status'), '401');
    await shot('3-membership-refused');
    assert.equal(await c.leaderIndex(), leader, 'the leader changed without a token');

    await page.fill('#token', c.adminToken);
    await page.click('#token-form button[type=submit]');
    await page.click('#m-transfer button');
    await waitFor(async () => (await page.getAttribute('#m-result', 'data-ok')) === 'true', 20000, 'the transfer', 50);
    await c.waitLeader({ ids: c.ids });
    await waitFor(async () => (await shownLeader()) === String(target), SHOWN_WITHIN_MS, `node ${target} shown as leader`, 100);
    assert.equal(await c.leaderIndex(), target);
    await shot('4-membership-transferred');

    // Demoting the leader: the page moves leadership away first (the node
    // answers is_leader otherwise), then demotes; then promotes it back.
    const roleOf = async (id) => (await c.status(pageNode)).nodes.find((n) => n.id === id)?.role;
    await page.fill('#m-role input[name=id]', String(target));
    await page.selectOption('#m-role select[name=role]', 'standby');
    await page.click('#m-role button');
    await waitFor(async () => (await page.getAttribute('#m-result', 'data-ok')) !== '', 30000, 'the demotion', 50);
    const demoted = await page.textContent('#m-result');
    assert.equal(await page.getAttribute('#m-result', 'data-ok'), 'true', demoted);
    assert.match(demoted, /leadership moved to node \d+; /);
    await waitFor(async () => (await roleOf(target)) === 'standby', 10000, `node ${target} a standby`);
    await waitFor(async () => (await page.textContent(`#nodes tr[data-node="${target}"] td:nth-child(2)`)) === 'standby',
      SHOWN_WITHIN_MS, 'the standby on the page', 100);
    await shot('5-membership-demoted-leader');
    await page.selectOption('#m-role select[name=role]', 'voter');
    await page.click('#m-role button');
    await waitFor(async () => (await page.getAttribute('#m-result', 'data-ok')) !== '', 40000, 'the promotion', 50);
    assert.equal(await page.getAttribute('#m-result', 'data-ok'), 'true', await page.textContent('#m-result'));
    await waitFor(async () => (await roleOf(target)) === 'voter', 10000, `node ${target} a voter again`);
    assert.deepEqual(pageErrors, []);
  });

  test('after kill -9 of the leader: the dead node down and the new leader, within seconds', T, async () => {
    const c = ctx.cluster;
    let old = await c.waitLeader();
    if (old === pageNode) {
      // The page's own node must survive: leadership goes elsewhere first.
      const to = c.ids.find((id) => id !== pageNode);
      const r = await httpRequest(`${c.base(old)}/admin/transfer`, {
        method: 'POST', headers: { Authorization: `Bearer ${c.adminToken}` }, body: { id: to },
      });
      assert.equal(r.status, 200, r.text);
      old = await c.waitLeader({ exclude: [pageNode] });
    }
    const t0 = Date.now();
    await c.kill9(old);
    let newLeader = null;
    await waitFor(async () => {
      if ((await rowState(old)) !== 'down') return false;
      const shown = await shownLeader();
      if (!shown || shown === String(old)) return false;
      newLeader = Number(shown);
      return (await rowState(newLeader)) === 'leader';
    }, SHOWN_WITHIN_MS, 'the dead node down and a new leader on the page', 100);
    const took = Date.now() - t0;
    console.log(`# kill -9 of node ${old} to the page showing it down and node ${newLeader} leading: ${took} ms`);
    assert.equal(await c.waitLeader(), newLeader, 'the page names another leader than the cluster');
    assert.match(await page.textContent(`#nodes tr[data-node="${old}"] td.state`), /^down/);
    await shot('6-leader-killed');
    assert.deepEqual(pageErrors, []);
  });
});
