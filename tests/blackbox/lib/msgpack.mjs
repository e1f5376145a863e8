// Minimal msgpack encoder/decoder for the black-box tests (no npm package is
// allowed besides driftdb and ws). Covers nil, bool, int (up to 64 bits,
// BigInt beyond 2^53), float64 (and float32 on decode), str, bin, array, map.
// Decoding is strict: truncated or unknown input throws.

// Wrap a number to force the float64 encoding of an integral value.
export class F64 {
  constructor(v) { this.v = v; }
}

export function encode(value) {
  const out = [];
  const push = (...bytes) => { for (const b of bytes) out.push(b & 0xff); };
  const pushBuf = (buf) => { for (const b of buf) out.push(b); };
  const be = (n, width) => {
    const b = Buffer.alloc(width);
    if (width === 1) b.writeUInt8(n);
    else if (width === 2) b.writeUInt16BE(n);
    else if (width === 4) b.writeUInt32BE(n);
    pushBuf(b);
  };
  const f64 = (x) => { const b = Buffer.alloc(8); b.writeDoubleBE(x); push(0xcb); pushBuf(b); };
  const int = (n) => {
    // n: number (safe integer) or bigint
    const big = BigInt(n);
    if (big >= 0n) {
      if (big < 128n) push(Number(big));
      else if (big < 0x100n) { push(0xcc); be(Number(big), 1); }
      else if (big < 0x10000n) { push(0xcd); be(Number(big), 2); }
      else if (big < 0x100000000n) { push(0xce); be(Number(big), 4); }
      else if (big < 0x10000000000000000n) {
        const b = Buffer.alloc(8); b.writeBigUInt64BE(big); push(0xcf); pushBuf(b);
      } else throw new RangeError('integer too large for msgpack');
    } else {
      if (big >= -32n) push(0xe0 | (Number(big) + 32));
      else if (big >= -128n) { const b = Buffer.alloc(1); b.writeInt8(Number(big)); push(0xd0); pushBuf(b); }
      else if (big >= -32768n) { const b = Buffer.alloc(2); b.writeInt16BE(Number(big)); push(0xd1); pushBuf(b); }
      else if (big >= -2147483648n) { const b = Buffer.alloc(4); b.writeInt32BE(Number(big)); push(0xd2); pushBuf(b); }
      else if (big >= -(2n ** 63n)) { const b = Buffer.alloc(8); b.writeBigInt64BE(big); push(0xd3); pushBuf(b); }
      else throw new RangeError('integer too small for msgpack');
    }
  };
  const str = (s) => {
    const b = Buffer.from(s, 'utf8');
    if (b.length < 32) push(0xa0 | b.length);
    else if (b.length < 0x100) { push(0xd9); be(b.length, 1); }
    else if (b.length < 0x10000) { push(0xda); be(b.length, 2); }
    else { push(0xdb); be(b.length, 4); }
    pushBuf(b);
  };
  const walk = (v) => {
    if (v === null || v === undefined) push(0xc0);
    else if (v === false) push(0xc2);
    else if (v === true) push(0xc3);
    else if (v instanceof F64) f64(v.v);
    else if (typeof v === 'bigint') int(v);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) int(v); else f64(v);
    } else if (typeof v === 'string') str(v);
    else if (v instanceof Uint8Array) {
      if (v.length < 0x100) { push(0xc4); be(v.length, 1); }
      else if (v.length < 0x10000) { push(0xc5); be(v.length, 2); }
      else { push(0xc6); be(v.length, 4); }
      pushBuf(v);
    } else if (Array.isArray(v)) {
      if (v.length < 16) push(0x90 | v.length);
      else if (v.length < 0x10000) { push(0xdc); be(v.length, 2); }
      else { push(0xdd); be(v.length, 4); }
      for (const x of v) walk(x);
    } else if (typeof v === 'object') {
      const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
      if (entries.length < 16) push(0x80 | entries.length);
      else if (entries.length < 0x10000) { push(0xde); be(entries.length, 2); }
      else { push(0xdf); be(entries.length, 4); }
      for (const [k, x] of entries) { walk(k); walk(x); }
    } else throw new TypeError(`cannot msgpack-encode ${typeof v}`);
  };
  walk(value);
  return Buffer.from(out);
}

export function decode(input) {
  const buf = Buffer.from(input.buffer ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : input);
  let pos = 0;
  const need = (n) => {
    if (pos + n > buf.length) throw new RangeError(`msgpack: truncated at ${pos} (need ${n})`);
  };
  const u8 = () => { need(1); return buf[pos++]; };
  const u16 = () => { need(2); const v = buf.readUInt16BE(pos); pos += 2; return v; };
  const u32 = () => { need(4); const v = buf.readUInt32BE(pos); pos += 4; return v; };
  const bytes = (n) => { need(n); const v = buf.subarray(pos, pos + n); pos += n; return v; };
  const norm = (big) => (big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : big);
  const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(item()); return a; };
  const map = (n) => {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = item();
      o[typeof k === 'string' ? k : String(k)] = item();
    }
    return o;
  };
  const item = () => {
    const t = u8();
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xf0) === 0x80) return map(t & 0x0f);
    if ((t & 0xf0) === 0x90) return arr(t & 0x0f);
    if ((t & 0xe0) === 0xa0) return bytes(t & 0x1f).toString('utf8');
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return new Uint8Array(bytes(u8()));
      case 0xc5: return new Uint8Array(bytes(u16()));
      case 0xc6: return new Uint8Array(bytes(u32()));
      case 0xca: { need(4); const v = buf.readFloatBE(pos); pos += 4; return v; }
      case 0xcb: { need(8); const v = buf.readDoubleBE(pos); pos += 8; return v; }
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: { need(8); const v = buf.readBigUInt64BE(pos); pos += 8; return norm(v); }
      case 0xd0: { need(1); const v = buf.readInt8(pos); pos += 1; return v; }
      case 0xd1: { need(2); const v = buf.readInt16BE(pos); pos += 2; return v; }
      case 0xd2: { need(4); const v = buf.readInt32BE(pos); pos += 4; return v; }
      case 0xd3: { need(8); const v = buf.readBigInt64BE(pos); pos += 8; return norm(v); }
      case 0xd9: return bytes(u8()).toString('utf8');
      case 0xda: return bytes(u16()).toString('utf8');
      case 0xdb: return bytes(u32()).toString('utf8');
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new TypeError(`msgpack: unsupported type byte 0x${t.toString(16)} at ${pos - 1}`);
    }
  };
  const v = item();
  if (pos !== buf.length) throw new RangeError(`msgpack: ${buf.length - pos} trailing bytes`);
  return v;
}
