// Bloom filters over the store: one per indicator type, plus network filters and a per-/16 prefix index,
// so a value that is not listed is answered in memory without touching SQLite. Filters are bloom-filters'
// BloomFilter objects with our FastHashing; `probe*` read their bit arrays directly with the same index
// scheme (no per-call arrays). Built from one streaming scan, persisted per generation, buildable in a worker.
import fs from 'node:fs';
import path from 'node:path';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { startWorker } from '../appliance/worker.ts';
import Database from 'better-sqlite3';
import { createRequire } from 'node:module';
import { getMeta, setMeta, type DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { IndicatorType } from '../appliance/types.ts';
import { BLOCK_BITS, FastHashing, HASH_OUT, hashRange, hashV4, hashV4Net, positionWord, streamSeeds } from './hash.ts';

// The one class we use, not the package index (dist/api.js), which also loads every other structure and
// lodash: ~60–100 ms more to start each thread that builds or loads filters (docs/performance.md).
const BloomFilter = (createRequire(import.meta.url)('bloom-filters/dist/bloom/bloom-filter.js') as typeof import('bloom-filters/dist/bloom/bloom-filter.js')).default;
type BloomFilterT = InstanceType<typeof BloomFilter>;

/** Types with an exact-value filter. Networks have their own (`ipv4-cidr`, `ipv6-cidr`). */
export const FILTER_TYPES: readonly IndicatorType[] = [
  'ipv4', 'ipv6', 'ipv4-cidr', 'ipv6-cidr', 'domain', 'url', 'md5', 'sha1', 'sha256', 'email',
];

/**
 * How a filter's keys are hashed: `text` hashes the key's characters (hashRange); `v4` hashes an IPv4
 * address as its 32-bit number (hashV4) and `v4net` an IPv4 network as its numbers (hashV4Net), so an
 * address lookup never hashes text. A `v4`/`v4net` key that is not canonical IPv4 text falls back to `text`.
 */
export type KeyScheme = 'text' | 'v4' | 'v4net';

/** The key scheme of a filter of this type (format /4 on). */
export function keySchemeOf(type: IndicatorType): KeyScheme {
  return type === 'ipv4' ? 'v4' : type === 'ipv4-cidr' ? 'v4net' : 'text';
}

/**
 * Hashes a key of filter scheme `keys` into HASH_OUT (what every probe, add and the library's own
 * add()/has() use, through the scheme's FastHashing in HASHING).
 */
function hashKey(keys: KeyScheme, value: string, s1: number, s2: number): void {
  if (keys === 'v4') {
    const n = parseV4(value);
    if (n >= 0) return hashV4(n, s1, s2);
  } else if (keys === 'v4net') {
    const slash = value.indexOf('/');
    const net = slash > 0 ? parseV4(value, 0, slash) : -1;
    const prefix = net >= 0 ? parseV4Prefix(value, slash + 1) : -1;
    if (prefix >= 0) return hashV4Net(net, prefix, s1, s2);
  }
  hashRange(value, 0, value.length, s1, s2);
}

/** The prefix length `0`..`32` written canonically at s[start..end), else -1. */
export function parseV4Prefix(s: string, start: number): number {
  const len = s.length - start;
  if (len < 1 || len > 2) return -1;
  const a = s.charCodeAt(start) - 48;
  if (a < 0 || a > 9) return -1;
  if (len === 1) return a;
  const b = s.charCodeAt(start + 1) - 48;
  if (a === 0 || b < 0 || b > 9) return -1;
  const p = a * 10 + b;
  return p <= 32 ? p : -1;
}

/** bloom-filters' hashing per key scheme: the library's own add()/has() set and test what probe() does. */
const HASHING: Record<KeyScheme, FastHashing> = {
  text: new FastHashing(),
  v4: new FastHashing((key, s1, s2) => hashKey('v4', key, s1, s2)),
  v4net: new FastHashing((key, s1, s2) => hashKey('v4net', key, s1, s2)),
};

/** One Bloom filter with what the fast probe needs at hand. */
export interface TypedFilter {
  type: IndicatorType;
  /** How its keys are hashed (keySchemeOf(type)). */
  keys: KeyScheme;
  filter: BloomFilterT;
  /** The filter's bit array (BitSet.array): bit i is `bits[i >> 3] & (1 << (i & 7))`. */
  bits: Uint8Array;
  m: number;
  /** m / BLOCK_BITS: the value's block is `first hash % blocks` (lookup/hash.ts, blocked index scheme). */
  blocks: number;
  k: number;
  seed: number;
  s1: number;
  s2: number;
  /** Values added (rows of this type, counted across feeds). */
  count: number;
}

export interface FilterSet {
  generation: number;
  fpRate: number;
  /** Identifies the store content the set was built from (generation, row count, feed versions). */
  fingerprint: string;
  builtAt: string;
  buildMs: number;
  filters: Map<IndicatorType, TypedFilter>;
  /** Prefix lengths present among listed networks, ascending. */
  prefixes4: number[];
  prefixes6: number[];
  /**
   * IPv4 prefix index: for each /16 bucket (ip >>> 16), bit (p - 1) is set when some listed network of
   * length p (1..32) overlaps the bucket. An IP lookup probes only those prefix lengths — usually none.
   */
  v4Index: Uint32Array;
  /**
   * IPv4 /24 blocks (2 MiB, one bit per ip >>> 8): set when a listed address lies in the block or a listed
   * network of length 16..32 overlaps it. A clear bit rules out the exact address and every prefix from 16
   * to 32 with one read of this bitmap, before any filter probe: at 10M indicators (5.5M addresses) about
   * 70 % of the /24s are clear, and the exact-address filter is 10 MiB of cache and TLB misses. (At millions
   * of indicators nearly every /16 holds some listed /24, so the /16 index alone would send most addresses
   * to a network probe.)
   */
  v4Blocks: Uint8Array;
  /** A listed 0.0.0.0/0 (bit 0 of the index means /1). */
  v4HasZero: boolean;
  /**
   * The authorities (`host[:port]`, urlAuthorityEnd) of listed URLs, at URL_HOST_FP_RATE: a URL whose
   * authority is not in it has none of its URL keys listed, so a lookup probes its one key here instead of
   * 2–6 URL keys (the URL, without query, path prefixes), each a cache miss in a filter of many MiB. An index
   * like v4Index and v4Blocks: a false positive costs only the URL-key probes it would have made anyway.
   */
  urlHosts: TypedFilter;
  /** Network rows whose value was not in canonical `net/prefix` form (they cannot be matched by address). */
  nonCanonical: number;
}

// ---------------------------------------------------------------- sizing and the fast probe

/**
 * False-positive rate of a blocked filter (BLOCK_BITS-bit blocks) with c bits per value and k bits per
 * value: a block holds a Poisson(BLOCK_BITS / c) number of values, and a value that is not listed is a false
 * positive when its k bits in its block are all set.
 */
export function blockedFpRate(c: number, k: number): number {
  const lambda = BLOCK_BITS / c;
  const jMax = Math.ceil(lambda + 12 * Math.sqrt(lambda) + 30);
  let logP = -lambda; // log of Poisson(j; λ), from j = 0
  const logEmpty = Math.log1p(-1 / BLOCK_BITS); // log of the chance one set bit misses a given position
  let sum = 0;
  for (let j = 0; j <= jMax; j++) {
    if (j > 0) logP += Math.log(lambda / j);
    sum += Math.exp(logP) * Math.pow(1 - Math.exp(j * k * logEmpty), k);
  }
  return sum;
}

const shapes = new Map<number, { bitsPerValue: number; k: number }>();

/** The fewest bits per value (and its k) whose blocked false-positive rate is at most p. */
export function blockedShape(p: number): { bitsPerValue: number; k: number } {
  let best = shapes.get(p);
  if (best) return best;
  // The best k is near log2(1/p) (log2(1/p) + 0..1 for p = 0.1 … 1e-6); search a range around it.
  const l = Math.log2(1 / p);
  for (let k = Math.max(1, Math.floor(0.5 * l)); k <= Math.ceil(1.3 * l) + 2; k++) {
    let lo = 0.5;
    let hi = 4 * (-Math.log(p) / (Math.LN2 * Math.LN2)) + 8;
    if (blockedFpRate(hi, k) > p) continue;
    for (let i = 0; i < 32; i++) {
      const mid = (lo + hi) / 2;
      if (blockedFpRate(mid, k) > p) lo = mid;
      else hi = mid;
    }
    if (!best || hi < best.bitsPerValue) best = { bitsPerValue: hi, k };
  }
  best ??= { bitsPerValue: 4 * (-Math.log(p) / (Math.LN2 * Math.LN2)) + 8, k: 1 };
  shapes.set(p, best);
  return best;
}

/**
 * Size for n values at false-positive rate p, in whole blocks: the fewest bits per value whose blocked
 * false-positive rate (blockedFpRate) is at most p, with its k. At p = 0.001 that is 15.5 bits and k = 9,
 * 1.08× the −ln p / (ln 2)² = 14.4 bits of a filter whose bits are spread over the whole array.
 */
export function filterSize(n: number, p: number): { m: number; k: number } {
  if (!(p > 0 && p < 1)) throw new OutpostError('E_CONFIG', `filter false-positive rate must be between 0 and 1, got ${p}`);
  if (n <= 0) return { m: BLOCK_BITS, k: 1 };
  const { bitsPerValue, k } = blockedShape(p);
  return { m: Math.max(1, Math.ceil((n * bitsPerValue) / BLOCK_BITS)) * BLOCK_BITS, k };
}

function wrap(type: IndicatorType, filter: BloomFilterT, count: number, keys = keySchemeOf(type)): TypedFilter {
  filter._hashing = HASHING[keys];
  const [s1, s2] = streamSeeds(filter.seed);
  if (filter._size % BLOCK_BITS !== 0) throw new OutpostError('E_FORMAT', `a ${type} filter of ${filter._size} bits is not a whole number of ${BLOCK_BITS}-bit blocks`);
  return { type, keys, filter, bits: filter._filter.array, m: filter._size, blocks: filter._size / BLOCK_BITS, k: filter._nbHashes, seed: filter.seed, s1, s2, count };
}

/** `keys`: the key scheme, by default the type's (the URL authority index hashes text whatever its type). */
export function createFilter(type: IndicatorType, n: number, p: number, keys = keySchemeOf(type)): TypedFilter {
  const { m, k } = filterSize(n, p);
  return wrap(type, new BloomFilter(m, k), n, keys);
}

/*
 * The indexes of FastHashing.getIndexes (lookup/hash.ts, blockedIndexes): the value's block is
 * `HASH_OUT[0] % blocks`, bit i within it is 9 bits of positionWord(HASH_OUT[1], i / 3). The loops below read
 * and set them in place (no array); a test checks the bits and answers equal the library's add()/has().
 */

/**
 * True when hash pair (h1, h2) may be in the filter. Reads all k bits and ANDs them, without an early
 * exit: for a value that is not listed the first bit is set about half the time, so a branch on each bit
 * is mispredicted about as often, and the misprediction resolves only when the block arrives from memory
 * (~230 ns at 10M indicators, where the filters are far larger than the caches). Until then nothing after
 * it counts, so each lookup's filter read waited for the one before. With one branch on the result, which
 * is nearly always false, the CPU goes on into the next probe and the next lookup while the block loads:
 * the 10M mixed miss loop went from 438–466 to 352–379 ns (docs/performance.md).
 */
export function testHashed(f: TypedFilter, h1: number, h2: number): boolean {
  const bits = f.bits;
  const base = (h1 % f.blocks) << 6; // byte offset of the block (64 bytes)
  let w = h2;
  let acc = 1;
  for (let i = 0, r = 0; i < f.k; i++, r++) {
    if (r === 3) {
      r = 0;
      w = positionWord(h2, i / 3);
    }
    const p = (w >>> (9 * r)) & 511;
    acc &= bits[base + (p >>> 3)] >>> (p & 7);
  }
  return (acc & 1) !== 0;
}

function setHashed(f: TypedFilter, h1: number, h2: number): void {
  const bits = f.bits;
  const base = (h1 % f.blocks) << 6;
  let w = h2;
  for (let i = 0, r = 0; i < f.k; i++, r++) {
    if (r === 3) {
      r = 0;
      w = positionWord(h2, i / 3);
    }
    const p = (w >>> (9 * r)) & 511;
    bits[base + (p >>> 3)] |= 1 << (p & 7);
  }
}

/** Same answer as `f.filter.has(value)`, without allocation. */
export function probe(f: TypedFilter, value: string): boolean {
  hashKey(f.keys, value, f.s1, f.s2);
  return testHashed(f, HASH_OUT[0], HASH_OUT[1]);
}

/** Probes the text key s[start, end) of a `text` filter — a domain's parents, a URL's prefixes — without slicing. */
export function probeRange(f: TypedFilter, value: string, start: number, end: number): boolean {
  hashRange(value, start, end, f.s1, f.s2);
  return testHashed(f, HASH_OUT[0], HASH_OUT[1]);
}

/** Probes the `v4` filter for the IPv4 address `n` (unsigned 32-bit). */
export function probeV4(f: TypedFilter, n: number): boolean {
  hashV4(n, f.s1, f.s2);
  return testHashed(f, HASH_OUT[0], HASH_OUT[1]);
}

/** Probes the `v4net` filter for the IPv4 network `net/prefix` given as numbers. */
export function probeV4Net(f: TypedFilter, net: number, prefix: number): boolean {
  hashV4Net(net, prefix, f.s1, f.s2);
  return testHashed(f, HASH_OUT[0], HASH_OUT[1]);
}

/** Same effect as `f.filter.add(value)`, without allocation (bulk builds add millions of values). */
export function addValue(f: TypedFilter, value: string): void {
  hashKey(f.keys, value, f.s1, f.s2);
  setHashed(f, HASH_OUT[0], HASH_OUT[1]);
}

/** False-positive rate of the URL authority index (FilterSet.urlHosts): a hit only lets the URL keys be probed. */
export const URL_HOST_FP_RATE = 0.01;

/**
 * End of the authority of a canonical URL that starts at `start` (just after `://`): the first '/', '?' or
 * '#' after it, else the end. The same on build and lookup, so the index has no false negatives.
 */
export function urlAuthorityEnd(url: string, start: number): number {
  for (let i = start; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 47 || c === 63 || c === 35) return i;
  }
  return url.length;
}

// ---------------------------------------------------------------- IPv4 helpers

/** Parses canonical dotted IPv4 text to an unsigned 32-bit number; -1 if it is not a.b.c.d with 0-255 parts. */
export function parseV4(s: string, start = 0, end = s.length): number {
  let acc = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      acc = acc * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return -1;
    } else return -1;
  }
  if (dots !== 3 || digits === 0) return -1;
  return acc * 256 + part;
}

export function v4Text(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Network address of ip/prefix as an unsigned number. */
export function v4Network(ip: number, prefix: number): number {
  if (prefix <= 0) return 0;
  return (ip & (-1 << (32 - prefix))) >>> 0;
}

export const V4_BLOCK_BYTES = 1 << 21;

/** Marks /24 block `block` (ip >>> 8) in the v4Blocks bitmap. */
function markV4Block(blocks: Uint8Array, block: number): void {
  blocks[block >>> 3] |= 1 << (block & 7);
}

/** Whether the /24 of address `ip` is marked in the v4Blocks bitmap (FilterSet.v4Blocks). */
export function v4BlockMarked(blocks: Uint8Array, ip: number): boolean {
  return (blocks[ip >>> 11] & (1 << ((ip >>> 8) & 7))) !== 0;
}

function markV4Index(index: Uint32Array, blocks: Uint8Array, net: number, prefix: number): void {
  if (prefix >= 16) {
    index[net >>> 16] |= 1 << (prefix - 1);
    const first = net >>> 8;
    const end = first + (prefix >= 24 ? 1 : 1 << (24 - prefix));
    for (let b = first; b < end; b++) markV4Block(blocks, b);
    return;
  }
  const first = net >>> 16;
  const count = 1 << (16 - prefix);
  for (let b = first; b < first + count; b++) index[b] |= 1 << (prefix - 1);
}

// ---------------------------------------------------------------- building

/** A filter set being built: create with newBuilder, add every stored (type, value), then finishBuild. */
export interface FilterBuilder {
  set: FilterSet;
  p4: Set<number>;
  p6: Set<number>;
  started: number;
}

/** `counts`: values per type the filters are sized for (rows of that type across feeds). */
export function newBuilder(counts: Map<string, number>, fpRate: number, generation = 0, fingerprint = ''): FilterBuilder {
  const filters = new Map<IndicatorType, TypedFilter>();
  for (const type of FILTER_TYPES) filters.set(type, createFilter(type, counts.get(type) ?? 0, fpRate));
  return {
    set: {
      generation, fpRate, fingerprint, builtAt: new Date().toISOString(), buildMs: 0, filters,
      prefixes4: [], prefixes6: [], v4Index: new Uint32Array(65536), v4Blocks: new Uint8Array(V4_BLOCK_BYTES), v4HasZero: false, nonCanonical: 0,
      // Sized for one authority per listed URL (an upper bound: many URLs share a host).
      urlHosts: createFilter('url', counts.get('url') ?? 0, URL_HOST_FP_RATE, 'text'),
    },
    p4: new Set(),
    p6: new Set(),
    started: performance.now(),
  };
}

/** Adds one stored (type, value). Adding a value twice (several feeds) is harmless. */
export function addIndicator(b: FilterBuilder, type: string, value: string): void {
  const f = b.set.filters.get(type as IndicatorType);
  if (!f) return; // a type this build does not know: never matched, so nothing to filter
  if (type === 'ipv4-cidr') {
    const slash = value.indexOf('/');
    const net = slash > 0 ? parseV4(value, 0, slash) : -1;
    const prefix = slash > 0 ? Number(value.slice(slash + 1)) : NaN;
    if (net < 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > 32 || v4Network(net, prefix) !== net || `${v4Text(net)}/${prefix}` !== value) {
      b.set.nonCanonical++;
    } else {
      b.p4.add(prefix);
      if (prefix === 0) b.set.v4HasZero = true;
      else markV4Index(b.set.v4Index, b.set.v4Blocks, net, prefix);
      hashV4Net(net, prefix, f.s1, f.s2); // addValue() would parse it again
      setHashed(f, HASH_OUT[0], HASH_OUT[1]);
      return;
    }
  } else if (type === 'ipv6-cidr') {
    const prefix = Number(value.slice(value.indexOf('/') + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > 128 || value.indexOf('/') < 0) b.set.nonCanonical++;
    else b.p6.add(prefix);
  } else if (type === 'ipv4') {
    const n = parseV4(value);
    if (n >= 0) {
      markV4Block(b.set.v4Blocks, n >>> 8);
      hashV4(n, f.s1, f.s2); // addValue() would parse it again
      setHashed(f, HASH_OUT[0], HASH_OUT[1]);
      return;
    }
  } else if (type === 'url') {
    const sep = value.indexOf('://');
    if (sep >= 0) {
      hashRange(value, sep + 3, urlAuthorityEnd(value, sep + 3), b.set.urlHosts.s1, b.set.urlHosts.s2);
      setHashed(b.set.urlHosts, HASH_OUT[0], HASH_OUT[1]);
    }
  }
  addValue(f, value);
}

/** Completes the set; generation and fingerprint name the store content it was built from. */
export function finishBuild(b: FilterBuilder, generation = b.set.generation, fingerprint = b.set.fingerprint): FilterSet {
  b.set.generation = generation;
  b.set.fingerprint = fingerprint;
  b.set.prefixes4 = [...b.p4].sort((x, y) => x - y);
  b.set.prefixes6 = [...b.p6].sort((x, y) => x - y);
  b.set.buildMs = Math.round(performance.now() - b.started);
  return b.set;
}

/**
 * How far a set extended by deltas (extendPersisted) may drift: each of its filters stays within this many
 * times its target false-positive rate for the values it holds, removed ones included (a Bloom filter
 * cannot forget a value; a removed value that still passes is a false positive, confirmed away in SQLite
 * like any other). Past that, the writer leaves the set alone and a serving process builds one from the store.
 */
export const EXTEND_FP_FACTOR = 2;

/**
 * The previous generation's persisted set, as a builder the new generation's additions go into: a delta
 * applies in one transaction, and hashing its added values into a copy of the last set costs a fraction of
 * a second where a build from the store reads and hashes every indicator (~20 s at 10M on this 2-core VM).
 * Null when there is no such file, it cannot be read, or it was not built for the store as it is now (the
 * generation, the feed versions and the rate: storeFingerprintWithoutRows, the check a serving process
 * accepts a set on at its start; a purge in between only removed rows, which the set may keep).
 * Call inside the writer's transaction, before it changes anything.
 */
export function extendPersisted(db: DB, dir: string, fpRate: number): FilterBuilder | null {
  const { generation, fingerprint } = storeFingerprintWithoutRows(db);
  const file = filterFileOf(dir, generation);
  let set: FilterSet;
  try {
    set = loadFilters(file);
  } catch {
    return null; // none (ENOENT), unreadable or another format: the serving processes build instead
  }
  if (set.generation !== generation || set.fpRate !== fpRate || withoutRows(set.fingerprint) !== fingerprint) return null;
  set.builtAt = new Date().toISOString();
  return { set, p4: new Set(set.prefixes4), p6: new Set(set.prefixes6), started: performance.now() };
}

/** Adds a value to an extended set and counts it (a full build counts nothing here: it sized each filter for its count). */
export function extendIndicator(b: FilterBuilder, type: string, value: string): void {
  const f = b.set.filters.get(type as IndicatorType);
  if (!f) return;
  f.count++;
  if (type === 'url') b.set.urlHosts.count++;
  addIndicator(b, type, value);
}

/** Whether every filter of an extended set is still within EXTEND_FP_FACTOR of its target rate. */
export function withinFpBound(set: FilterSet, factor = EXTEND_FP_FACTOR): boolean {
  const fits = (f: TypedFilter, p: number) => f.count === 0 || blockedFpRate(f.m / f.count, f.k) <= factor * p;
  for (const f of set.filters.values()) if (!fits(f, set.fpRate)) return false;
  return fits(set.urlHosts, URL_HOST_FP_RATE);
}

/** What identifies the store content: a persisted set is reused only when this matches. */
export function storeFingerprint(db: DB, knownRows?: number): { generation: number; fingerprint: string } {
  const generation = Number((db.prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string } | undefined)?.value ?? 0);
  // `knownRows`: the caller counted the rows in this same transaction (the apply worker), saving a scan.
  const rows = knownRows ?? (db.prepare('SELECT count(*) AS n FROM indicators').get() as { n: number }).n;
  const feeds = db.prepare('SELECT name, version FROM feeds ORDER BY name').all() as { name: string; version: number }[];
  return { generation, fingerprint: `${generation}:${rows}:${feeds.map((f) => `${f.name}@${f.version}`).join(',')}` };
}

/**
 * storeFingerprint() without the row count, which costs a scan of an index of every indicator (0.1–0.3 s
 * at 10M with the file in the page cache, ~10 s without): the generation and the feed versions. Every
 * writer moves the generation with its change except an expiry purge between its batches, which only
 * deletes rows; a set accepted on this alone is therefore never missing a stored key, and serve checks
 * the row count in the background (appliance/filter-follow.ts).
 */
export function storeFingerprintWithoutRows(db: DB): { generation: number; fingerprint: string } {
  const { generation, fingerprint } = storeFingerprint(db, -1);
  return { generation, fingerprint: withoutRows(fingerprint) };
}

/** A fingerprint with its row count left out (storeFingerprintWithoutRows). */
export function withoutRows(fingerprint: string): string {
  const [generation, , ...feeds] = fingerprint.split(':');
  return `${generation}::${feeds.join(':')}`;
}

/**
 * Builds every filter from one streaming scan of the store, inside one read transaction so the
 * generation, counts and values are one consistent snapshot (WAL: writers are not blocked).
 */
export function buildFilters(db: DB, fpRate: number): FilterSet {
  const run = db.transaction(() => {
    const { generation, fingerprint } = storeFingerprint(db);
    const counts = new Map<string, number>();
    for (const r of db.prepare('SELECT type, count(*) AS n FROM indicators GROUP BY type').all() as { type: string; n: number }[]) {
      counts.set(r.type, r.n);
    }
    const b = newBuilder(counts, fpRate, generation, fingerprint);
    const rows = db.prepare('SELECT type, value FROM indicators').raw(true).iterate() as IterableIterator<[string, string]>;
    for (const [type, value] of rows) addIndicator(b, type, value);
    return finishBuild(b);
  });
  return run.deferred();
}

/** Builds a set from in-memory (type, value) pairs — for tests and tools that have no store. */
export function buildFiltersFrom(items: Iterable<[IndicatorType, string]>, fpRate: number, generation = 0): FilterSet {
  const list = Array.isArray(items) ? (items as [IndicatorType, string][]) : [...items];
  const counts = new Map<string, number>();
  for (const [t] of list) counts.set(t, (counts.get(t) ?? 0) + 1);
  const b = newBuilder(counts, fpRate, generation, `mem:${generation}:${list.length}`);
  for (const [t, v] of list) addIndicator(b, t, v);
  return finishBuild(b);
}

// ---------------------------------------------------------------- bulk binary form (file and worker transfer)

const MAGIC = 'OUTPOSTF';
// /2: the /24 block bitmap after the /16 index; /3: blocked filters (lookup/hash.ts), listed addresses in the
// /24 bitmap, the URL authority index; /4: text hashed from its end (one pass over a domain and its parents),
// IPv4 addresses and networks hashed as numbers (KeyScheme). An older file is rebuilt.
const FORMAT = 'outpost-filters/4';

interface Header {
  format: typeof FORMAT;
  generation: number;
  fpRate: number;
  fingerprint: string;
  builtAt: string;
  buildMs: number;
  prefixes4: number[];
  prefixes6: number[];
  v4HasZero: boolean;
  nonCanonical: number;
  filters: FilterHeader[];
  urlHosts: FilterHeader;
}

interface FilterHeader {
  type: IndicatorType;
  m: number;
  k: number;
  seed: number;
  count: number;
  bytes: number;
}

const headerOf = (f: TypedFilter): FilterHeader => ({ type: f.type, m: f.m, k: f.k, seed: f.seed, count: f.count, bytes: f.bits.byteLength });

/** A filter from its header and bit array (adopted, not copied). */
function filterFrom(fh: FilterHeader, bits: Uint8Array, keys = keySchemeOf(fh.type)): TypedFilter {
  if (bits.byteLength !== Math.ceil(fh.m / 8) || fh.k < 1) throw new OutpostError('E_FORMAT', `filter data: bad ${fh.type} filter`);
  const bf = new BloomFilter(fh.m, fh.k);
  bf.seed = fh.seed;
  bf._filter.array = bits; // the library's BitSet keeps its bits in `array`; adopt ours instead of copying
  return wrap(fh.type, bf, fh.count, keys);
}

/** Header + the raw arrays: [v4Index bytes, v4Blocks, urlHosts bits, filter bit arrays in header order]. */
export interface FilterParts {
  header: Header;
  arrays: Uint8Array[];
}

export function toParts(set: FilterSet): FilterParts {
  const filters = [...set.filters.values()];
  return {
    header: {
      format: FORMAT, generation: set.generation, fpRate: set.fpRate, fingerprint: set.fingerprint, builtAt: set.builtAt,
      buildMs: set.buildMs, prefixes4: set.prefixes4, prefixes6: set.prefixes6, v4HasZero: set.v4HasZero,
      nonCanonical: set.nonCanonical,
      filters: filters.map(headerOf),
      urlHosts: headerOf(set.urlHosts),
    },
    arrays: [new Uint8Array(set.v4Index.buffer, set.v4Index.byteOffset, set.v4Index.byteLength), set.v4Blocks, set.urlHosts.bits, ...filters.map((f) => f.bits)],
  };
}

export function fromParts(parts: FilterParts): FilterSet {
  const h = parts.header;
  if (h.format !== FORMAT || parts.arrays.length !== h.filters.length + 3 || !h.urlHosts) {
    throw new OutpostError('E_FORMAT', 'filter data is not in the expected format');
  }
  const idx = parts.arrays[0];
  if (idx.byteLength !== 65536 * 4 || idx.byteOffset % 4 !== 0) throw new OutpostError('E_FORMAT', 'filter data: bad prefix index');
  const blocks = parts.arrays[1];
  if (blocks.byteLength !== V4_BLOCK_BYTES) throw new OutpostError('E_FORMAT', 'filter data: bad /24 block index');
  const filters = new Map<IndicatorType, TypedFilter>();
  h.filters.forEach((fh, i) => filters.set(fh.type, filterFrom(fh, parts.arrays[i + 3])));
  return {
    generation: h.generation, fpRate: h.fpRate, fingerprint: h.fingerprint, builtAt: h.builtAt, buildMs: h.buildMs,
    filters, prefixes4: h.prefixes4, prefixes6: h.prefixes6,
    v4Index: new Uint32Array(idx.buffer, idx.byteOffset, 65536), v4Blocks: blocks, v4HasZero: h.v4HasZero, nonCanonical: h.nonCanonical,
    urlHosts: filterFrom(h.urlHosts, parts.arrays[2], 'text'),
  };
}

const pad8 = (n: number) => (n + 7) & ~7;

/**
 * Writes `OUTPOSTF` + u32 header length + JSON header, then each array at an 8-byte aligned offset.
 * Written to a temp file and renamed, so a reader never sees half a file.
 */
export function serializeFilters(set: FilterSet, file: string): void {
  const { header, arrays } = toParts(set);
  const hbuf = Buffer.from(JSON.stringify(header), 'utf8');
  let offset = pad8(12 + hbuf.length);
  const offsets = arrays.map((a) => {
    const o = offset;
    offset = pad8(offset + a.byteLength);
    return o;
  });
  const out = Buffer.alloc(offset);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(hbuf.length, 8);
  hbuf.copy(out, 12);
  arrays.forEach((a, i) => out.set(a, offsets[i]));
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, out, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The persisted file of a generation's filters in `dir` (the engine reads `<data dir>/filters` by default). */
export function filterFileOf(dir: string, generation: number): string {
  return path.join(dir, `filters-${generation}.bin`);
}

/**
 * meta row naming the generation whose filter file the writer that committed it is about to persist: the
 * apply of a package (full, or a delta that extended the previous set) sets it in the transaction that
 * moves the generation and writes the file right after COMMIT. A generation not named here (a delta whose
 * previous set could not be extended, a purge, an older writer) gets no file from its writer, so a serving
 * process builds its filters at once instead of waiting (appliance/filter-follow.ts).
 */
const ANNOUNCED_KEY = 'filters_announced';

/** Records, inside the writer's transaction, that `generation`'s filter file follows its COMMIT. */
export function announceFilterFile(db: DB, generation: number): void {
  setMeta(db, ANNOUNCED_KEY, String(generation));
}

/** Withdraws the announcement when writing the file failed (a follower then builds instead of waiting). */
export function withdrawFilterFile(db: DB, generation: number): void {
  db.prepare('DELETE FROM meta WHERE key = ? AND value = ?').run(ANNOUNCED_KEY, String(generation));
}

/** Whether the writer of `generation` announced its filter file. */
export function filterFileAnnounced(db: DB, generation: number): boolean {
  return getMeta(db, ANNOUNCED_KEY) === String(generation);
}

/**
 * Persists a set built outside the engine (the apply worker builds the new generation's filters from the
 * package it applies) and removes older generations' files. The engine adopts the file only when its
 * fingerprint matches the store, so a stale or foreign file is never used.
 */
export function writeFilterFile(set: FilterSet, dir: string): string {
  const file = filterFileOf(dir, set.generation);
  serializeFilters(set, file);
  for (const name of fs.readdirSync(dir)) {
    const m = /^filters-(\d+)\.bin$/.exec(name);
    if (m && Number(m[1]) < set.generation) fs.rmSync(path.join(dir, name), { force: true });
  }
  return file;
}

/** Reads a file written by serializeFilters: one read, arrays are views into it (no per-bit decoding). */
export function loadFilters(file: string): FilterSet {
  const buf = fs.readFileSync(file);
  if (buf.length < 12 || buf.toString('latin1', 0, 8) !== MAGIC) throw new OutpostError('E_FORMAT', `${file} is not an Outpost filter file`);
  const hlen = buf.readUInt32LE(8);
  if (12 + hlen > buf.length) throw new OutpostError('E_FORMAT', `${file} is truncated`);
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', 12, 12 + hlen)) as Header;
  } catch {
    throw new OutpostError('E_FORMAT', `${file} has a corrupt header`);
  }
  // Copy into a fresh ArrayBuffer when the Buffer is not 8-aligned (the Uint32 index needs 4-byte alignment).
  const base = buf.byteOffset % 8 === 0 ? buf : Buffer.from(buf);
  let offset = pad8(12 + hlen);
  const sizes = [65536 * 4, V4_BLOCK_BYTES, header.urlHosts?.bytes ?? 0, ...(header.filters ?? []).map((f) => f.bytes)];
  const arrays = sizes.map((n) => {
    if (offset + n > base.length) throw new OutpostError('E_FORMAT', `${file} is truncated`);
    const a = new Uint8Array(base.buffer, base.byteOffset + offset, n);
    offset = pad8(offset + n);
    return a;
  });
  return fromParts({ header, arrays });
}

// ---------------------------------------------------------------- building in a worker thread

const WORKER_TAG = 'outpost:build-filters';

/**
 * Builds the filters of the database file at dbPath in a worker thread (its own read-only connection),
 * transferring the bit arrays back without copying; the caller's thread keeps answering meanwhile.
 */
export function buildFiltersInWorker(dbPath: string, fpRate: number): Promise<FilterSet> {
  return new Promise((resolve, reject) => {
    const worker = startWorker(new URL(import.meta.url), { workerData: { tag: WORKER_TAG, dbPath, fpRate } });
    let settled = false;
    worker.once('message', (msg: { ok: true; parts: FilterParts } | { ok: false; code: string; message: string }) => {
      settled = true;
      if (msg.ok) {
        try {
          resolve(fromParts(msg.parts));
        } catch (e) {
          reject(e);
        }
      } else reject(new OutpostError(msg.code === 'E_FORMAT' || msg.code === 'E_CONFIG' ? msg.code : 'E_DB', msg.message));
      void worker.terminate();
    });
    worker.once('error', (e) => {
      if (!settled) reject(e);
      settled = true;
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new OutpostError('E_INTERNAL', `filter build worker exited with code ${code}`));
      settled = true;
    });
  });
}

function runWorker(): void {
  const { dbPath, fpRate } = workerData as { dbPath: string; fpRate: number };
  try {
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 10000');
    let set: FilterSet;
    try {
      set = buildFilters(db, fpRate);
    } finally {
      db.close();
    }
    const parts = toParts(set);
    // Each BitSet owns its ArrayBuffer, as does the index: transfer them all.
    parentPort!.postMessage({ ok: true, parts }, parts.arrays.map((a) => a.buffer as ArrayBuffer));
  } catch (e) {
    const err = e as { code?: string; message?: string };
    parentPort!.postMessage({ ok: false, code: typeof err.code === 'string' && err.code.startsWith('E_') ? err.code : 'E_DB', message: String(err.message ?? e) });
  }
}

if (!isMainThread && (workerData as { tag?: string } | null)?.tag === WORKER_TAG) runWorker();

