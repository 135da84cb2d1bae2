// The in-process figures of `outpost bench` (scripts/bench.ts), measured in a fresh process of their own
// that opens the bench's store and loads its persisted filters — what a serving process does at start.
// The bench process itself generated, signed and imported the data set (GiBs at 10M): even with that data
// released and collected, the same loops ran about twice as slow there as in a fresh process on the same
// store (10M: filter stage 465–704 ns there, 220–300 ns fresh), which is the bench's history, not the
// lookup path. Every loop is bounded in time.
import bloomFilters from 'bloom-filters';
import { openDb } from '../appliance/db.ts';
import type { IndicatorType } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { createFilter, probe } from '../lookup/filters.ts';
import { childMain } from './bench-child.ts';

export interface InProcInput {
  dataDir: string;
  fpRate: number;
  /** Seconds per timed loop. */
  secs: number;
  /** Normalized values that are not listed, with their types. */
  missPairs: [IndicatorType, string][];
  /** The mixed batch (1 % listed) for lookupMany. */
  batch: string[];
  /** Listed IPv4 values (up to 200k) and how many are listed in all, for the library comparison. */
  ipListed: string[];
  ipListedCount: number;
}

export interface InProcFigures {
  lookupMissNs: number;
  byType: Record<string, number>;
  sqlitePointNs: number;
  engineMissNs: number;
  libDefaultNs: number;
  libFastNs: number;
  probeNs: number;
  batchPerS: number;
  hitShare: number;
  rssMb: number;
}

/**
 * Nanoseconds per call of `fn` over `values`, after one warm-up pass, for about `seconds`. `fn` gets each
 * value with its index, for data kept beside the values (their types). Until 2026-12-06 the mixed loops
 * took the type from a counter of their own, which the warm-up pass had moved on by 20,000: every value
 * was probed as the type of the value 20,000 places further on.
 */
export function timePerCall(values: string[], seconds: number, fn: (v: string, i: number) => unknown): number {
  let sink = 0;
  const warm = Math.min(values.length, 20_000);
  for (let i = 0; i < warm; i++) if (fn(values[i], i)) sink++;
  let calls = 0;
  const start = process.hrtime.bigint();
  const budget = BigInt(Math.round(seconds * 1e9));
  let elapsed = 0n;
  do {
    for (let i = 0; i < values.length; i++) if (fn(values[i], i)) sink++;
    calls += values.length;
    elapsed = process.hrtime.bigint() - start;
  } while (elapsed < budget);
  if (sink < 0) throw new Error('unreachable');
  return Number(elapsed) / calls;
}

export function inProcessFigures(input: InProcInput): InProcFigures {
  const { secs, fpRate, missPairs, batch, ipListed, ipListedCount } = input;
  const db = openDb(input.dataDir, { readonly: true });
  try {
    const engine = new LookupEngine(db, { fpRate, worker: false });
    const missValues = missPairs.map(([, v]) => v);
    const missTypes = missPairs.map(([t]) => t);
    // The engine's filter stage on a normalized value that is not listed (what every miss costs).
    const lookupMissNs = timePerCall(missValues, secs, (v, i) => engine.mayMatch(missTypes[i], v));
    const byType: Record<string, number> = {};
    for (const t of ['ipv4', 'domain', 'url', 'sha256'] as IndicatorType[]) {
      const vals = missPairs.filter(([tt]) => tt === t).map(([, v]) => v);
      if (vals.length) byType[t] = timePerCall(vals, secs / 4, (v) => engine.mayMatch(t, v));
    }
    // The baseline: a prepared SQLite point query on the same table for the same missing values.
    const point = db.prepare('SELECT feed, kind, category, confidence, first_seen, last_seen, expires_at, extra FROM indicators WHERE type = ? AND value = ?');
    const sqlitePointNs = timePerCall(missValues, secs, (v, i) => point.get(missTypes[i], v));
    // The full in-process lookup of a missing value (normalize + filter + result object).
    const engineMissNs = timePerCall(missValues, secs, (v) => engine.lookup(v));
    // Hashing alternatives on one filter of the same size: bloom-filters' has() with its default
    // xxhash64, has() with our FastHashing, and our direct probe.
    const ipMiss = missPairs.filter(([t]) => t === 'ipv4').map(([, v]) => v);
    const lib = bloomFilters.BloomFilter.create(Math.max(1, ipListedCount), fpRate);
    for (const v of ipListed.slice(0, 5000)) lib.add(v); // a few adds suffice: a miss's cost does not depend on fill
    const libDefaultNs = timePerCall(ipMiss.slice(0, 2000), Math.min(secs, 0.5), (v) => lib.has(v));
    const fast = createFilter('ipv4', Math.max(1, ipListedCount), fpRate);
    for (const v of ipListed) fast.filter.add(v);
    const libFastNs = timePerCall(ipMiss, secs / 2, (v) => fast.filter.has(v));
    const probeNs = timePerCall(ipMiss, secs / 2, (v) => probe(fast, v));
    // Mixed batch of values, 1% listed, through lookupMany (normalize + filters + confirmations).
    for (const res of engine.lookupMany(batch)) if (res.type === 'invalid') throw new Error(`bench value refused: ${res.value}`);
    let batches = 0;
    let hits = 0;
    const bStart = performance.now();
    do {
      for (const res of engine.lookupMany(batch)) if (res.matches.length) hits++;
      batches++;
    } while (performance.now() - bStart < secs * 1000);
    const batchPerS = (batches * batch.length) / ((performance.now() - bStart) / 1000);
    return {
      lookupMissNs, byType, sqlitePointNs, engineMissNs, libDefaultNs, libFastNs, probeNs, batchPerS,
      hitShare: hits / (batches * batch.length),
      rssMb: process.memoryUsage().rss / 1048576,
    };
  } finally {
    db.close();
  }
}

childMain<InProcInput, InProcFigures>(import.meta.url, inProcessFigures);
