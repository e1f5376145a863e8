// Logging: --log-format json on a real node (every line one JSON object with
// the fixed fields and each key=value), and the log level changed at run
// time through GET/POST /admin/log and `driftctl log-level`: the level
// changes what the node logs (a WebSocket open is a debug line), an unknown
// level is 400 with a clear error and changes nothing, a node with an admin
// token wants it (401), a closed cluster's node without one answers 403.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  Driftd, createRoom, httpRequest, RawClient, closeAllClients, dumpServers, waitFor, sleep,
} from './lib/harness.mjs';
import { driftctl, ctlOk, ctlFails, dumpCtlLog } from './lib/admin.mjs';

const T = { timeout: 120000 };

// The lines of out that are log lines (the harness adds "=====" markers).
function logLines(out) {
  return out.split('\n').filter((l) => l !== '' && !l.startsWith('====='));
}

// Opens (and closes) one WebSocket session: a debug line "ws_open" on the node.
async function openSession(d) {
  const room = await createRoom(d.base);
  const c = await RawClient.connect(room.socket_url.replace(/^ws:\/\/[^/]+/, d.wsBase));
  await c.close();
  return room.room;
}

describe('--log-format json', () => {
  let d;
  after(async () => { await closeAllClients(); if (d) await d.dispose(); });

  test('every line is one JSON object with time, level, module, where and the key=value fields', T, async (t) => {
    try {
      d = await Driftd.start({ args: ['--log-format', 'json', '--log-level', 'debug'] });
      const room = await openSession(d);
      await waitFor(() => d.output().includes('"event":"ws_open"'), 5000, 'the ws_open debug line');
      const lines = logLines(d.output());
      assert.ok(lines.length > 10, `too few lines:\n${d.tail()}`);
      const objs = lines.map((l) => {
        let o;
        assert.doesNotThrow(() => { o = JSON.parse(l); }, `not JSON: ${l}`);
        assert.equal(typeof o, 'object', l);
        assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, l);
        assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level), l);
        assert.equal(typeof o.module, 'string', l);
        assert.match(o.where, /^[\w.-]+:\d+$/, l);
        for (const v of Object.values(o)) assert.equal(typeof v, 'string', l);
        return o;
      });
      const listening = objs.find((o) => o.event === 'listening');
      assert.ok(listening, 'no "listening" line');
      assert.equal(listening.http, `127.0.0.1:${d.httpPort}`);
      assert.equal(listening.module, 'net');
      const open = objs.find((o) => o.event === 'ws_open');
      assert.ok(open, 'no ws_open line');
      assert.equal(open.level, 'debug');
      assert.equal(open.room, room);
      assert.match(open.conn, /^[0-9a-f]{16}$/);
      // raft's own diagnostics (free text) arrive as "message".
      assert.ok(objs.some((o) => o.module === 'raft' && typeof o.message === 'string'), 'no raft line with a message');

      // The format changes at run time too: text lines from then on.
      const mark = d.output().length;
      const r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', body: { format: 'text' } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json(), { level: 'debug', format: 'text' });
      await openSession(d);
      await waitFor(() => /event=ws_open conn=[0-9a-f]{16} room=/.test(d.output().slice(mark)), 5000, 'a text ws_open line');
      // The change itself is one line, in the new format.
      assert.match(d.output().slice(mark), /^\d{4}-\d\d-\d\dT[\d:.]+Z WARN  net admin\.c:\d+ event=log_config log_level=debug log_format=text was_level=debug was_format=json$/m);
      await d.stopClean();
    } catch (e) {
      dumpServers(t.name);
      throw e;
    }
  });
});

describe('log level at run time (admin API, driftctl)', () => {
  let d;
  let root;
  const token = crypto.randomBytes(16).toString('hex');
  after(async () => {
    await closeAllClients();
    if (d) await d.dispose();
    if (root) await fsp.rm(root, { recursive: true, force: true });
  });

  test('driftctl log-level shows and sets the level; the level changes what is logged', T, async (t) => {
    try {
      root = await fsp.mkdtemp(path.join(os.tmpdir(), 'driftd-log-'));
      const tokenFile = path.join(root, 'admin.token');
      await fsp.writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
      d = await Driftd.start({ args: ['--admin-token-file', tokenFile] });
      const opts = { server: d.base, token };

      let r = await ctlOk(['log-level'], opts);
      assert.equal(r.stdout, 'info (format text)\n');
      r = await ctlOk(['--json', 'log-level'], opts);
      assert.deepEqual(r.json(), { level: 'info', format: 'text' });

      // info: a session opens without a debug line.
      await openSession(d);
      await sleep(300);
      assert.doesNotMatch(d.output(), /event=ws_open/, 'ws_open logged at level info');

      r = await ctlOk(['log-level', 'debug'], opts);
      assert.equal(r.stdout, 'debug (format text)\n');
      assert.match(d.output(), /WARN {2}net admin\.c:\d+ event=log_config log_level=debug log_format=text was_level=info was_format=text/);
      const room = await openSession(d);
      await waitFor(() => d.output().includes(`event=ws_open`) && d.output().includes(`room=${room}`), 5000, 'ws_open at level debug');

      // warn: info and debug lines stop (a refused admin call is an info line).
      await ctlOk(['log-level', 'warn'], opts);
      let mark = d.output().length;
      await openSession(d);
      r = await httpRequest(`${d.base}/admin/log`, { headers: { Authorization: 'Bearer wrong' } });
      assert.equal(r.status, 401);
      await sleep(300);
      assert.doesNotMatch(d.output().slice(mark), /event=ws_open|event=admin_unauthorized/, 'info/debug logged at level warn');

      // back to info: the refused call is logged again.
      await ctlOk(['log-level', 'info'], opts);
      mark = d.output().length;
      r = await httpRequest(`${d.base}/admin/log`, { headers: { Authorization: 'Bearer wrong' } });
      assert.equal(r.status, 401);
      await waitFor(() => d.output().slice(mark).includes('event=admin_unauthorized'), 5000, 'admin_unauthorized at level info');

      // An unknown level: 400, a clear error, nothing changed.
      const auth = { Authorization: `Bearer ${token}` };
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', headers: auth, body: { level: 'verbose' } });
      assert.equal(r.status, 400, r.text);
      assert.deepEqual(r.json(), { error: "unknown log level 'verbose': want error, warn, info or debug", code: 'invalid' });
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', headers: auth, body: { level: 7 } });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json().code, 'invalid');
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', headers: auth, body: { level: 'debug', format: 'xml' } });
      assert.equal(r.status, 400, r.text);
      assert.match(r.json().error, /unknown log format 'xml'/);
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', headers: auth, body: {} });
      assert.equal(r.status, 400, r.text);
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', headers: auth, body: '[1]' });
      assert.equal(r.status, 400, r.text);
      await ctlFails(['log-level', 'loud'], opts, { code: 1, match: /^driftctl: unknown log level 'loud': want error, warn, info or debug$/ });
      r = await httpRequest(`${d.base}/admin/log`, { headers: auth });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json(), { level: 'info', format: 'text' }, 'a refused change changed something');

      // No token, or a wrong one: 401, nothing changed.
      r = await httpRequest(`${d.base}/admin/log`, { method: 'POST', body: { level: 'debug' } });
      assert.equal(r.status, 401, r.text);
      assert.equal(r.json().code, 'unauthorized');
      await ctlFails(['log-level', 'debug'], { server: d.base, token: '' }, { code: 1, match: /unauthorized/ });
      await ctlFails(['log-level'], { server: d.base, token: 'nope' }, { code: 1, match: /refused the admin token/ });
      r = await ctlOk(['log-level'], opts);
      assert.equal(r.stdout, 'info (format text)\n');

      // Usage: one level at most, checked before any network.
      await ctlFails(['log-level', 'debug', 'extra'], opts, { code: 2, match: /too many arguments/ });
      await d.stopClean();
    } catch (e) {
      dumpServers(t.name);
      dumpCtlLog(t.name);
      throw e;
    }
  });

  test('a closed cluster node without an admin token: 403 for GET and POST /admin/log', T, async (t) => {
    let k;
    try {
      const keyFile = path.join(root, 'cluster.key');
      await fsp.writeFile(keyFile, `${crypto.randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      k = await Driftd.start({ name: 'keyed', args: ['--cluster-key-file', keyFile] });
      let r = await httpRequest(`${k.base}/admin/log`);
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json().code, 'disabled');
      r = await httpRequest(`${k.base}/admin/log`, { method: 'POST', body: { level: 'debug' } });
      assert.equal(r.status, 403, r.text);
      r = await httpRequest(`${k.base}/admin/log`, { method: 'POST', headers: { Authorization: 'Bearer x' }, body: { level: 'debug' } });
      assert.equal(r.status, 403, r.text);
      r = await driftctl(['log-level', 'debug'], { server: k.base, token: '' });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /admin token/);
      // Still at info: a session open is not logged.
      await openSession(k);
      await sleep(300);
      assert.doesNotMatch(k.output(), /event=ws_open|event=log_config/);
      await k.stopClean();
    } catch (e) {
      dumpServers(t.name);
      throw e;
    } finally {
      if (k) await k.dispose({ clean: false });
    }
  });
});
