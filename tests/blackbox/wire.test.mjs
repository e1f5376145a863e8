// Wire rules the HTTP/WebSocket layer (our patched libwebsockets, see
// deploy/patches/libwebsockets/) enforces before driftd sees a request or a
// frame, tried over raw sockets:
// - request header fields that do not fit the header table (100 KB of them,
//   or more header lines than it has slots) are answered 431 Request Header
//   Fields Too Large, then the connection is closed (RFC 6585 section 5);
//   a WebSocket upgrade request too, and over TLS. Stock lws 4.1 closed
//   without a word.
// - an unmasked frame from a client is answered with a close frame 1002 and
//   the connection ends at once, its payload never handled (RFC 6455
//   sections 5.1, 7.1.7). Stock lws 4.1 handled it as if it were masked.
// After each, the node still answers /healthz and serves a normal client.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

import {
  useDriftd, shutdownTest, createRoom, httpRequest, RawClient, waitFor, trustCA,
} from './lib/harness.mjs';
import { makeCerts } from './lib/certs.mjs';

const T = { timeout: 60000 };

// A raw TCP (or TLS, given a CA) connection that records what it receives
// and when it ends.
class Raw {
  static open(port, ca) {
    return new Promise((resolve, reject) => {
      const r = new Raw();
      r.sock = ca ? tls.connect({ host: '127.0.0.1', port, ca }, () => resolve(r))
        : net.connect(port, '127.0.0.1', () => resolve(r));
      r.sock.once('error', reject);
      r.sock.on('data', (d) => { r.data = Buffer.concat([r.data, d]); });
      // A reset after the answer (we were still sending) is fine: what
      // counts is what arrived before the end.
      r.sock.on('error', (e) => { r.error = e.code; });
      r.sock.on('close', () => { r.isClosed = true; });
    });
  }

  constructor() {
    this.data = Buffer.alloc(0);
    this.isClosed = false;
    this.error = null;
  }

  send(b) { this.sock.write(b); }
  destroy() { this.sock.destroy(); }
  text() { return this.data.toString('latin1'); }
  async waitClosed(what, timeoutMs = 10000) {
    await waitFor(() => this.isClosed, timeoutMs, `${what}: the server to close the connection`);
  }
}

const upgradeHeaders = () => [
  'Upgrade: websocket', 'Connection: Upgrade',
  `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
  'Sec-WebSocket-Version: 13',
];

function request(path, headers) {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
}

// Sends a request, waits for the end of the connection, checks the 431.
async function expect431(port, req, what, ca) {
  const r = await Raw.open(port, ca);
  try {
    r.send(req);
    await r.waitClosed(what);
    const text = r.text();
    assert.match(text, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/,
      `${what}: got ${JSON.stringify(text.slice(0, 200))} (socket error ${r.error})`);
    const [head, body] = text.split('\r\n\r\n');
    assert.match(head, /\r\nconnection: close(\r\n|$)/i);
    const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
    assert.equal(body, 'request header fields too large\n');
    assert.equal(Buffer.byteLength(body), len, 'content-length matches the body');
  } finally {
    r.destroy();
  }
}

// The node is unharmed: /healthz, and a normal (masking) client in a room.
async function stillServes(base) {
  assert.equal((await httpRequest(`${base}/healthz`)).status, 200, '/healthz after the attempt');
  const { socket_url: url } = await createRoom(base);
  const c = await RawClient.connect(url, { label: 'a normal client' });
  c.push('k', { ok: true });
  await c.roundTrip();
  const init = await c.get('k');
  assert.deepEqual(init.data.map((d) => d.value), [{ ok: true }]);
  await c.close();
}

// A client frame: masked unless told otherwise.
function frame(opcode, payload, { masked = true } = {}) {
  assert.ok(payload.length < 126);
  const head = Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = crypto.randomBytes(4);
  return Buffer.concat([head, mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))]);
}

describe('wire rules: oversized request headers (431), unmasked client frames (1002)', () => {
  const ctx = useDriftd({ name: 'wire' });
  const big = `X-Big: ${'a'.repeat(100 * 1024)}`;

  test('a request with a 100 KB header gets 431, then the connection closes', T, async () => {
    await expect431(ctx.srv.httpPort, request('/healthz', [big]), 'GET with 100 KB header');
    await stillServes(ctx.srv.base);
  });

  test('a WebSocket upgrade with a 100 KB header gets 431, not 101', T, async () => {
    const { room } = await createRoom(ctx.srv.base);
    await expect431(ctx.srv.httpPort, request(`/room/${room}/connect`, [...upgradeHeaders(), big]),
      'upgrade with 100 KB header');
    await stillServes(ctx.srv.base);
  });

  test('more header lines than the header table has slots (small in bytes) get 431', T, async () => {
    // 300 short lines of a known header, 3 KB in all: each takes a slot.
    const lines = Array.from({ length: 300 }, (_, i) => `Accept: x${i}`);
    await expect431(ctx.srv.httpPort, request('/healthz', lines), '300 Accept lines');
    await stillServes(ctx.srv.base);
  });

  test('an unmasked client frame is answered with close 1002; its payload is never handled', T, async () => {
    const { room } = await createRoom(ctx.srv.base);
    const r = await Raw.open(ctx.srv.httpPort);
    try {
      r.send(request(`/room/${room}/connect`, upgradeHeaders()));
      await waitFor(() => r.text().includes('\r\n\r\n') || r.isClosed, 5000, 'the handshake answer');
      const head = r.text().slice(0, r.text().indexOf('\r\n\r\n') + 4);
      assert.match(head, /^HTTP\/1\.1 101 /, head);
      const skip = Buffer.byteLength(head, 'latin1');
      // A valid driftd message: handled, it would be answered with a pong.
      r.send(frame(1, Buffer.from(JSON.stringify({ type: 'ping', nonce: 7 })), { masked: false }));
      await waitFor(() => r.data.length >= skip + 4 || r.isClosed, 5000, 'a frame from the server');
      const f = r.data.subarray(skip);
      assert.equal(f[0], 0x88, `first frame after the handshake: ${f.toString('latin1')}`);
      const len = f[1] & 0x7f;
      assert.ok(len >= 2 && len < 126 && (f[1] & 0x80) === 0, 'an unmasked close frame with a code');
      await waitFor(() => r.data.length >= skip + 2 + len || r.isClosed, 5000, 'the whole close frame');
      const close = r.data.subarray(skip + 2, skip + 2 + len);
      assert.equal(close.readUInt16BE(0), 1002, 'close code 1002 (protocol error)');
      assert.match(close.subarray(2).toString(), /unmasked/);
      assert.equal(r.data.length, skip + 2 + len, 'nothing but the close frame (no pong)');
      // Failed, not a close handshake: the server ends the connection
      // without waiting for our close (lws would wait 5 s for one).
      await r.waitClosed('after the close frame', 3000);
      assert.equal(r.data.length, skip + 2 + len, 'still nothing but the close frame');
    } finally {
      r.destroy();
    }
    await stillServes(ctx.srv.base);
  });

  shutdownTest(ctx);
});

describe('wire rules over TLS', () => {
  const certs = makeCerts('driftd-wire-');
  const ca = fs.readFileSync(certs.ca);
  trustCA(ca);
  after(() => fs.rmSync(certs.dir, { recursive: true, force: true }));
  const ctx = useDriftd({ name: 'wire-tls', args: ['--tls-cert', certs.cert, '--tls-key', certs.key] });

  test('a request with a 100 KB header gets 431 through TLS too', T, async () => {
    await expect431(ctx.srv.httpPort, request('/healthz', [`X-Big: ${'a'.repeat(100 * 1024)}`]),
      'TLS GET with 100 KB header', ca);
    assert.equal((await httpRequest(`${ctx.srv.base}/healthz`)).status, 200, '/healthz after the attempt');
  });

  shutdownTest(ctx);
});
