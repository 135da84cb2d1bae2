// Fast seeded hashing for the Bloom filters: a pair of independent 32-bit hashes over UTF-16 code units
// (murmur3-style blocks),
// computed in one pass with no allocation, plugged into bloom-filters through its Hashing extension point.
// bloom-filters' default (xxhash64 over a Buffer) costs ~11 µs per has(); this costs tens of nanoseconds.
import { createRequire } from 'node:module';
import type { HashableInput, TwoHashes } from 'bloom-filters/dist/hashing/hashing.js';

// The base class from its own module: the package index also loads lodash and every other structure.
const Hashing = (createRequire(import.meta.url)('bloom-filters/dist/hashing/hashing.js') as typeof import('bloom-filters/dist/hashing/hashing.js')).default;

/**
 * Output slots of the allocation-free hash functions below: [first, second], both unsigned 32-bit.
 * Callers read them right after a call; nothing else writes them in between (single-threaded).
 */
export const HASH_OUT = new Uint32Array(2);

// Mixing constants as int32 (small integers to V8: no heap-number conversions in the loops).
const C1 = 0xcc9e2d51 | 0;
const C2 = 0x1b873593 | 0;
const C3 = 0x85ebca6b | 0;
const C4 = 0xc2b2ae35 | 0;
const C5 = 0x27d4eb2d | 0;
const N1 = 0xe6546b64 | 0;
const N2 = 0x52dce729 | 0;

/** murmur3's finalizer: full avalanche, so `% m` sees well-mixed low and high bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, C3);
  h ^= h >>> 13;
  h = Math.imul(h, C4);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Turns the library's (possibly > 2^32) numeric seed into the two 32-bit stream seeds, as hashTwice does (seed+1, seed+2). */
export function streamSeeds(seed: number): [number, number] {
  return [fmix32(((seed + 1) % 0x100000000) >>> 0), fmix32(((seed + 2) % 0x100000000) >>> 0 ^ 0x9e3779b9)];
}

// Murmur3-style, two UTF-16 code units per 32-bit block: the per-block dependency chain is short, so a
// 64-char hash costs about as much as a 32-char FNV. The two streams use different block-mixing constants
// and rotations, so a collision in one is independent of the other: together they behave like a 64-bit
// hash, which keeps the filter's false-positive rate at its design value even for millions of entries.
//
// The blocks are taken from the END of the range (pairs s[end-1], s[end-2], then s[end-3], s[end-4], …; an
// odd first character is the tail): every suffix of a string is hashed on the way to the whole string, so
// one pass over a domain yields the hash of the domain and of each parent (hashDomainKeys). Filter files
// of format /4 and later use this order (lookup/filters.ts).

/** Mixes one block (two code units) into stream 1. */
function mix1(h1: number, k: number): number {
  let k1 = Math.imul(k, C1);
  k1 = Math.imul((k1 << 15) | (k1 >>> 17), C2);
  h1 ^= k1;
  return (Math.imul((h1 << 13) | (h1 >>> 19), 5) + N1) | 0;
}

/** Mixes one block (two code units) into stream 2. */
function mix2(h2: number, k: number): number {
  let k2 = Math.imul(k, C3);
  k2 = Math.imul((k2 << 17) | (k2 >>> 15), C4);
  h2 ^= k2;
  return (Math.imul((h2 << 15) | (h2 >>> 17), 5) + N2) | 0;
}

/** The tail (one code unit) of stream 1, without the block step. */
function tail1(h1: number, c: number): number {
  const k1 = Math.imul(c, C1);
  return h1 ^ Math.imul((k1 << 15) | (k1 >>> 17), C2);
}

function tail2(h2: number, c: number): number {
  const k2 = Math.imul(c, C3);
  return h2 ^ Math.imul((k2 << 17) | (k2 >>> 15), C4);
}

/** Stream 1's final value for a key of `len` code units (murmur3's length step and finalizer). */
function final1(h1: number, len: number): number {
  return fmix32(h1 ^ len);
}

function final2(h2: number, len: number): number {
  return fmix32(h2 ^ Math.imul(len, C5));
}

/** Hashes s[start, end) with the two seeds into HASH_OUT. */
export function hashRange(s: string, start: number, end: number, seed1: number, seed2: number): void {
  let h1 = seed1 | 0;
  let h2 = seed2 | 0;
  let i = end;
  for (; i - start >= 2; i -= 2) {
    const k = s.charCodeAt(i - 1) | (s.charCodeAt(i - 2) << 16);
    h1 = mix1(h1, k);
    h2 = mix2(h2, k);
  }
  finish(s, start, end, i, h1, h2);
}

/** The end of hashRange() once the blocks of s[i, end) are mixed in: s[start] as the tail when i > start. */
function finish(s: string, start: number, end: number, i: number, h1: number, h2: number): void {
  if (i > start) {
    const c = s.charCodeAt(start);
    h1 = tail1(h1, c);
    h2 = tail2(h2, c);
  }
  HASH_OUT[0] = final1(h1, end - start);
  HASH_OUT[1] = final2(h2, end - start);
}

/** Hashes a whole string into HASH_OUT. */
export function hashString(s: string, seed1: number, seed2: number): void {
  hashRange(s, 0, s.length, seed1, seed2);
}

/** Most keys hashDomainKeys() gives: a host name has at most 127 labels (253 characters). */
export const MAX_DOMAIN_KEYS = 128;

/**
 * The keys a domain d = s[start, end) is matched under, hashed in one pass from its end: each parent of two
 * or more labels (shortest first: `example.com`, then `b.example.com`, …) and last d itself. Key j's hash
 * pair is `out[2j], out[2j+1]` and it starts at `starts[j]` (it ends at `end`); equal to hashRange() of that
 * range. Returns the number of keys. The same as hashing d and each parent in turn, at the cost of one.
 */
export function hashDomainKeys(s: string, start: number, end: number, seed1: number, seed2: number, out: Uint32Array, starts: Int32Array): number {
  let h1 = seed1 | 0;
  let h2 = seed2 | 0;
  let n = 0;
  let dots = 0; // dots passed: the first from the right only ends the top-level label (no key)
  let i = end;
  for (; i - start >= 2; i -= 2) {
    const c1 = s.charCodeAt(i - 1);
    const c2 = s.charCodeAt(i - 2);
    // The state covers s[i, end). A dot just before i ends the suffix s[i, end); a dot one further
    // ends s[i - 1, end), which is the state plus c1 as its tail.
    if (c1 === 46) {
      if (dots++ !== 0 && n < MAX_DOMAIN_KEYS - 1) {
        out[2 * n] = final1(h1, end - i);
        out[2 * n + 1] = final2(h2, end - i);
        starts[n++] = i;
      }
    } else if (c2 === 46) {
      if (dots++ !== 0 && n < MAX_DOMAIN_KEYS - 1) {
        out[2 * n] = final1(tail1(h1, c1), end - i + 1);
        out[2 * n + 1] = final2(tail2(h2, c1), end - i + 1);
        starts[n++] = i - 1;
      }
    }
    const k = c1 | (c2 << 16);
    h1 = mix1(h1, k);
    h2 = mix2(h2, k);
  }
  finish(s, start, end, i, h1, h2);
  out[2 * n] = HASH_OUT[0];
  out[2 * n + 1] = HASH_OUT[1];
  starts[n++] = start;
  return n;
}

/**
 * Hashes an IPv4 address given as an unsigned 32-bit number into HASH_OUT: the key of the `ipv4` filter
 * (format /4 on). An address is a number, so its key is too: two murmur3 finalizer rounds per stream instead
 * of hashing its text, which also spares a URL's or a lookup's address host from being sliced or re-read.
 */
export function hashV4(n: number, seed1: number, seed2: number): void {
  HASH_OUT[0] = fmix32(fmix32((n ^ seed1) | 0) ^ C5);
  HASH_OUT[1] = fmix32(fmix32((Math.imul(n, C1) ^ seed2) | 0) + N2);
}

/**
 * The key of IPv4 network `net/prefix` (numbers) in the `ipv4-cidr` filter, into HASH_OUT: the address's
 * hash with the prefix length mixed in, so an address and its networks of each length are different keys.
 */
export function hashV4Net(net: number, prefix: number, seed1: number, seed2: number): void {
  const p = Math.imul(prefix + 1, 0x9e3779b9);
  HASH_OUT[0] = fmix32(fmix32((net ^ seed1) | 0) ^ p);
  HASH_OUT[1] = fmix32(fmix32((Math.imul(net, C1) ^ seed2) | 0) + p + N2);
}

// ---------------------------------------------------------------- blocked index scheme

/**
 * Bits per block: every bit of a value lies in one 512-bit (64-byte, one cache line) block of the filter,
 * chosen by the first hash; the second hash places the k bits inside it. A probe of a value that is not
 * listed then reads one block — one cache line, or two adjacent ones when the array is not line-aligned —
 * instead of about two lines at random places of a filter of many MiB (a cache and TLB miss each). The price
 * is a few percent more bits for the same false-positive rate (filterSize in lookup/filters.ts).
 */
export const BLOCK_BITS = 512;

/**
 * Word j of in-block positions for second hash h2: word 0 is h2 itself, later words are h2 re-mixed. Each
 * word gives three 9-bit positions (bits 0–8, 9–17, 18–26), so bit i of a value is at
 * `(word(i / 3) >>> 9·(i mod 3)) & 511` within its block.
 */
export function positionWord(h2: number, j: number): number {
  return j === 0 ? h2 : fmix32((h2 + Math.imul(j, 0x9e3779b9)) | 0);
}

/** The k bit indexes of hash pair (h1, h2) in a blocked filter of m bits (m a multiple of BLOCK_BITS). */
export function blockedIndexes(h1: number, h2: number, m: number, k: number): number[] {
  const base = (h1 % (m / BLOCK_BITS)) * BLOCK_BITS;
  const out: number[] = [];
  let w = h2;
  for (let i = 0; i < k; i++) {
    const r = i % 3;
    if (r === 0 && i > 0) w = positionWord(h2, i / 3);
    out.push(base + ((w >>> (9 * r)) & 511));
  }
  return out;
}

function asString(element: HashableInput): string {
  if (typeof element === 'string') return element;
  // Only strings are stored; other inputs are hashed by their UTF-8 text so the class stays total.
  return Buffer.from(element as ArrayBuffer).toString('utf8');
}

/**
 * bloom-filters' documented extension point: BloomFilter.add()/has() call `getIndexes(element, size, k,
 * seed)`, which by default calls `hashTwice(element, seed)` and spreads k indexes over the whole filter by
 * enhanced double hashing. Overriding hashTwice (and serialize, for the library's single-hash helpers) swaps
 * the hash; overriding getIndexes puts the k indexes in one block (blockedIndexes) when the filter's size
 * is a whole number of blocks, as every filter createFilter makes is. The library's bit layout (BitSet) and
 * export format stay as they are. hashTwice computes both values in one pass instead of calling serialize
 * twice.
 */
export class FastHashing extends Hashing {
  /** `hashKey`: how a key's text becomes its hash pair in HASH_OUT (a filter's key scheme); default its characters. */
  constructor(private readonly hashKey: (key: string, seed1: number, seed2: number) => void = hashString) {
    super();
  }

  override getIndexes(element: HashableInput, size: number, hashCount: number, seed?: number): number[] {
    if (size % BLOCK_BITS !== 0) return super.getIndexes(element, size, hashCount, seed);
    const [s1, s2] = streamSeeds(seed ?? 0);
    this.hashKey(asString(element), s1, s2);
    return blockedIndexes(HASH_OUT[0], HASH_OUT[1], size, hashCount);
  }

  override serialize(element: HashableInput, seed?: number): number {
    const [s1, s2] = streamSeeds(seed ?? 0);
    this.hashKey(asString(element), s1, s2);
    return HASH_OUT[0];
  }

  override hashTwice(value: HashableInput, seed?: number): TwoHashes {
    const [s1, s2] = streamSeeds(seed ?? 0);
    this.hashKey(asString(value), s1, s2);
    return { first: HASH_OUT[0], second: HASH_OUT[1] };
  }
}
