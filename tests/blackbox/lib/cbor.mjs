// CBOR for the black-box tests. Decoding uses cbor-web (the library the real
// driftdb client uses). Encoding has two flavours:
//  - clientEncode: exactly what the real driftdb client sends (cbor-web, which
//    tags a Uint8Array with tag 64 and a BigInt with a bignum tag);
//  - encode: a minimal plain encoder with precise control (a Uint8Array is a
//    plain byte string, a BigInt a major type 0/1 integer up to 64 bits, every
//    non-integral number a float64).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const CBOR = require('cbor-web');

export function clientEncode(value) {
  return Buffer.from(CBOR.encode(value));
}

export function decode(input) {
  return CBOR.decode(input);
}

export function encode(value) {
  const out = [];
  const pushBuf = (b) => { for (const x of b) out.push(x); };
  const head = (major, n) => {
    const big = BigInt(n);
    const m = major << 5;
    if (big < 24n) out.push(m | Number(big));
    else if (big < 0x100n) out.push(m | 24, Number(big));
    else if (big < 0x10000n) { const b = Buffer.alloc(2); b.writeUInt16BE(Number(big)); out.push(m | 25); pushBuf(b); }
    else if (big < 0x100000000n) { const b = Buffer.alloc(4); b.writeUInt32BE(Number(big)); out.push(m | 26); pushBuf(b); }
    else if (big < 0x10000000000000000n) { const b = Buffer.alloc(8); b.writeBigUInt64BE(big); out.push(m | 27); pushBuf(b); }
    else throw new RangeError('CBOR head too large');
  };
  const walk = (v) => {
    if (v === null || v === undefined) out.push(0xf6);
    else if (v === false) out.push(0xf4);
    else if (v === true) out.push(0xf5);
    else if (typeof v === 'bigint') { if (v >= 0n) head(0, v); else head(1, -1n - v); }
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) { if (v >= 0) head(0, v); else head(1, -1 - v); }
      else { const b = Buffer.alloc(8); b.writeDoubleBE(v); out.push(0xfb); pushBuf(b); }
    } else if (typeof v === 'string') { const b = Buffer.from(v, 'utf8'); head(3, b.length); pushBuf(b); }
    else if (v instanceof Uint8Array) { head(2, v.length); pushBuf(v); }
    else if (Array.isArray(v)) { head(4, v.length); for (const x of v) walk(x); }
    else if (typeof v === 'object') {
      const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
      head(5, entries.length);
      for (const [k, x] of entries) { walk(k); walk(x); }
    } else throw new TypeError(`cannot CBOR-encode ${typeof v}`);
  };
  walk(value);
  return Buffer.from(out);
}
