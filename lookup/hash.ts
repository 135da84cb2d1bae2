// Fast seeded hashing for the Bloom filters: a pair of independent 32-bit hashes over UTF-16 code units,
// computed in one pass with no allocation, plugged into bloom-filters through its Hashing extension point.
// bloom-filters' default (xxhash64 over a Buffer) costs ~11 µs per has(); this costs tens of nanoseconds.
import bloomFilters from 'bloom-filters';
import type { HashableInput, TwoHashes } from 'bloom-filters/dist/hashing/hashing.js';

const { Hashing } = bloomFilters;

/**
 * Output slots of the allocation-free hash functions below: [first, second], both unsigned 32-bit.
 * Callers read them right after a call; nothing else writes them in between (single-threaded).
 */
export const HASH_OUT = new Uint32Array(2);

/** murmur3's finalizer: full avalanche, so `% m` sees well-mixed low and high bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Turns the library's (possibly > 2^32) numeric seed into the two 32-bit stream seeds, as hashTwice does (seed+1, seed+2). */
export function streamSeeds(seed: number): [number, number] {
  return [fmix32(((seed + 1) % 0x100000000) >>> 0), fmix32(((seed + 2) % 0x100000000) >>> 0 ^ 0x9e3779b9)];
}

// The two streams use different multipliers (FNV-1a's prime; murmur2's m with a right-shift feedback) so a
// collision in one is independent of the other: together they behave like a 64-bit hash, which keeps the
// filter's false-positive rate at its design value even for millions of entries.

/** Hashes s[start, end) with the two seeds into HASH_OUT. */
export function hashRange(s: string, start: number, end: number, seed1: number, seed2: number): void {
  let h1 = seed1 ^ 0x811c9dc5;
  let h2 = seed2;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  const len = end - start;
  HASH_OUT[0] = fmix32(h1 ^ len);
  HASH_OUT[1] = fmix32(h2 ^ Math.imul(len, 0x27d4eb2d));
}

/** Hashes a whole string into HASH_OUT. */
export function hashString(s: string, seed1: number, seed2: number): void {
  hashRange(s, 0, s.length, seed1, seed2);
}

/**
 * Hashes the canonical text of an IPv4 network, `a.b.c.d/p`, without building the string: identical
 * to hashString(`${a}.${b}.${c}.${d}/${p}`). An IP lookup probes one key per listed prefix length,
 * so skipping the string building matters.
 */
export function hashV4Net(net: number, prefix: number, seed1: number, seed2: number): void {
  let h1 = seed1 ^ 0x811c9dc5;
  let h2 = seed2;
  let len = 0;
  for (let part = 0; part < 5; part++) {
    let v: number;
    if (part < 4) v = (net >>> (24 - 8 * part)) & 0xff;
    else v = prefix;
    if (part > 0) {
      const sep = part < 4 ? 46 /* . */ : 47; /* / */
      h1 = Math.imul(h1 ^ sep, 0x01000193);
      h2 = Math.imul(h2 ^ sep, 0x5bd1e995);
      h2 ^= h2 >>> 15;
      len++;
    }
    if (v >= 100) {
      const c = 48 + ((v / 100) | 0);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
      len++;
    }
    if (v >= 10) {
      const c = 48 + (((v / 10) | 0) % 10);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
      h2 ^= h2 >>> 15;
      len++;
    }
    const c = 48 + (v % 10);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
    len++;
  }
  HASH_OUT[0] = fmix32(h1 ^ len);
  HASH_OUT[1] = fmix32(h2 ^ Math.imul(len, 0x27d4eb2d));
}

function asString(element: HashableInput): string {
  if (typeof element === 'string') return element;
  // Only strings are stored; other inputs are hashed by their UTF-8 text so the class stays total.
  return Buffer.from(element as ArrayBuffer).toString('utf8');
}

/**
 * bloom-filters' documented extension point: BloomFilter.add()/has() call `getIndexes`, which calls
 * `hashTwice(element, seed)` and derives k indexes by enhanced double hashing. Overriding hashTwice
 * (and serialize, for the library's single-hash helpers) swaps the hash and keeps the library's index
 * scheme, bit layout and export format. hashTwice computes both values in one pass instead of calling
 * serialize twice.
 */
export class FastHashing extends Hashing {
  override serialize(element: HashableInput, seed?: number): number {
    const [s1, s2] = streamSeeds(seed ?? 0);
    hashString(asString(element), s1, s2);
    return HASH_OUT[0];
  }

  override hashTwice(value: HashableInput, seed?: number): TwoHashes {
    const [s1, s2] = streamSeeds(seed ?? 0);
    hashString(asString(value), s1, s2);
    return { first: HASH_OUT[0], second: HASH_OUT[1] };
  }
}
