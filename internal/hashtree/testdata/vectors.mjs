// Independent computation of the FS Chunk Protocol content hash tree
// (docs/PROTOCOL.md §5.17) with @noble/hashes' BLAKE3, from the spec text.
// Run: mkdir /tmp/v && cp vectors.mjs /tmp/v && cd /tmp/v && npm install @noble/hashes@2.4.0 && node vectors.mjs
import { blake3 } from '@noble/hashes/blake3.js';
const hex = (b) => Buffer.from(b).toString('hex');
const enc = (s) => new TextEncoder().encode(s);
// Sanity: the official BLAKE3 test vector, derive_key of empty input.
const off = hex(blake3(new Uint8Array(0), { context: enc('BLAKE3 2019-12-27 16:29:52 test vectors context') }));
if (off !== '2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d') throw new Error('noble derive_key differs from official vector: ' + off);
const L = 65536;
const LEAF = enc('FS Chunk Protocol 2026-12-03 content tree leaf');
const NODE = enc('FS Chunk Protocol 2026-12-03 content tree node');
const ROOT = enc('FS Chunk Protocol 2026-12-03 content tree root');
function root(content) {
  const n = Math.max(1, Math.ceil(content.length / L));
  let level = [];
  for (let j = 0; j < n; j++) level.push(blake3(content.subarray(j * L, Math.min((j + 1) * L, content.length)), { context: LEAF }));
  const leaves = level.map(hex);
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i < level.length; i += 2) {
      if (i + 1 < level.length) { const b = new Uint8Array(64); b.set(level[i]); b.set(level[i + 1], 32); next.push(blake3(b, { context: NODE })); }
      else next.push(level[i]);
    }
    level = next;
  }
  const r = new Uint8Array(40);
  new DataView(r.buffer).setBigUint64(0, BigInt(content.length), false);
  r.set(level[0], 8);
  return { leaves, top: hex(level[0]), root: hex(blake3(r, { context: ROOT })) };
}
for (const size of [0, 1, 65536, 65537, 327680, 1000000]) {
  const c = new Uint8Array(size);
  for (let i = 0; i < size; i++) c[i] = i % 251;
  const t = root(c);
  console.log(size, t.root, size <= 65537 ? 'leaves=' + t.leaves.join(',') : 'n=' + t.leaves.length);
}
