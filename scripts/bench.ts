// `outpost bench`: measures the lookup path against its baselines in one run, on one store — the filter
// probe beside a prepared SQLite point query and bloom-filters' own has(), a mixed batch, the real signed
// import path (provider build → importPackage → filters, in a process of its own) with peak RSS, start from persisted filters, and
// (with the HTTP hook, scripts/bench-http.ts) HTTP figures beside a bare node:http server. Indicators are
// shaped like the real lists (real values from ../shared/data when present, topped up with synthetic ones
// of the same shapes), so figures do not flatter short keys. Every phase is bounded in time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import type { IndicatorType } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { normalize } from '../lookup/normalize.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { trustAdd } from '../sync/trust.ts';
import { mulberry32 as rng } from './prng.ts';
import type { InProcFigures, InProcInput } from './bench-inproc.ts';
import type { ImportFigures, ImportInput } from './bench-import.ts';
import { runChild } from './bench-child.ts';

/** What the HTTP phase gets: a data dir holding the imported store, values to ask for, and the run's bounds. */
export interface HttpBenchInput {
  cfg: Config;
  dataDir: string;
  /** Normalized values that are not listed (GET misses) and a 1 %-hit mixed list (NDJSON batch). */
  misses: string[];
  mixed: string[];
  /** Seconds per timed HTTP phase. */
  seconds: number;
  /** Imports a delta package while lookups run (the "lookups during an apply" figure); null to skip. */
  delta: { tar: string; count: number } | null;
  say: (line: string) => void;
}

export type HttpBench = (input: HttpBenchInput) => Promise<Record<string, number | null>>;

export interface BenchOptions {
  size: number;
  json: boolean;
  out: (line: string) => void;
  /** HTTP figures (scripts/bench-http.ts benchHttp); http_rps and raw_http_rps print null without it. */
  http?: HttpBench | null;
  /** Filter false-positive target (config filterFpRate). */
  fpRate?: number;
  /** Seconds spent in each timed loop (bounded run time). */
  secondsPerFigure?: number;
  /** Indicators changed by the delta applied during HTTP lookups (default min(1M, size/10)); 0 skips it. */
  deltaSize?: number;
  /** Keep the bench's store (its data dir) instead of removing it, to serve it and load-test it yourself. */
  keep?: boolean;
}

type Pair = [IndicatorType, string];

const SHARE: [IndicatorType, number][] = [
  ['ipv4', 0.55], ['ipv4-cidr', 0.02], ['domain', 0.2], ['url', 0.15], ['md5', 0.03], ['sha256', 0.05],
];


function dataDir(): string | null {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const d = path.resolve(here, '../../shared/data');
  return fs.existsSync(d) ? d : null;
}

/** Real normalized values per type from the shared lists (empty when the lists are absent). */
export function realSamples(): Map<IndicatorType, string[]> {
  const out = new Map<IndicatorType, string[]>();
  const root = dataDir();
  if (!root) return out;
  const files: [string, (l: string) => string | undefined][] = [
    ['ipsum/ipsum.txt', (l) => l.split('\t')[0]],
    ['threatfox/ips.txt', (l) => l],
    ['maltrail/mass_scanner_cidr.txt', (l) => l.split('#')[0]],
    ['firehol/firehol_level1.netset', (l) => l],
    ['signature-base/hash-iocs.txt', (l) => l.split(';')[0]],
    ['eset/nukesped_lazarus/samples.sha256', (l) => l],
    ['eset/nukesped_lazarus/samples.md5', (l) => l],
    ['urlhaus/urls.csv', (l) => /^(?:"[^"]*"|[^,]*),([^,]+),/.exec(l)?.[1]],
    ...['lummac2', 'remcos', 'cobaltstrike', 'asyncrat', 'emotet', 'apt_lazarus'].map(
      (f) => [`maltrail/malware/${f}.txt`, (l: string) => l] as [string, (l: string) => string | undefined],
    ),
  ];
  const seen = new Set<string>();
  for (const [file, pick] of files) {
    const p = path.join(root, file);
    if (!fs.existsSync(p)) continue;
    for (const line of fs.readFileSync(p, 'utf8').split('\n')) {
      const t = line.trim();
      if (!t || t.startsWith('#')) continue;
      const raw = pick(t)?.trim();
      if (!raw) continue;
      const n = normalize(raw);
      if (!n.ok || seen.has(n.value)) continue;
      // Broad real networks are kept out: the bench's networks are /24s like the mass-scanner list.
      if (n.type === 'ipv4-cidr' && !n.value.endsWith('/24')) continue;
      seen.add(n.value);
      let list = out.get(n.type);
      if (!list) out.set(n.type, (list = []));
      list.push(n.value);
    }
  }
  return out;
}

const HEX = '0123456789abcdef';
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Synthetic values in the shapes of the real lists (hosts from real TLDs, real URL path shapes). */
function makeGenerator(r: () => number, real: Map<IndicatorType, string[]>) {
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
  const tlds = [...new Set((real.get('domain') ?? []).map((d) => d.slice(d.lastIndexOf('.') + 1)))];
  if (tlds.length === 0) tlds.push('com', 'net', 'org', 'ru', 'xyz', 'top', 'info');
  const paths = (real.get('url') ?? []).map((u) => u.slice(u.indexOf('/', u.indexOf('://') + 3))).filter((p) => p.length > 1);
  if (paths.length === 0) paths.push('/bin.sh', '/i', '/wp-content/x.php', '/download/update.exe');
  const label = (min: number, max: number) => {
    const n = min + Math.floor(r() * (max - min + 1));
    let s = '';
    for (let i = 0; i < n; i++) s += ALNUM[Math.floor(r() * (i === 0 ? 26 : 36))];
    return s;
  };
  const octet = () => Math.floor(r() * 256);
  const ip = () => `${1 + Math.floor(r() * 222)}.${octet()}.${octet()}.${octet()}`;
  const domain = () => (r() < 0.3 ? `${label(3, 8)}.` : '') + `${label(5, 14)}.${pick(tlds)}`;
  const hex = (n: number) => {
    let s = '';
    for (let i = 0; i < n; i++) s += HEX[Math.floor(r() * 16)];
    return s;
  };
  return (type: IndicatorType): string => {
    switch (type) {
      case 'ipv4': return ip();
      case 'ipv4-cidr': return `${1 + Math.floor(r() * 222)}.${octet()}.${octet()}.0/24`;
      case 'domain': return domain();
      case 'url': return `http://${r() < 0.4 ? `${ip()}:${1024 + Math.floor(r() * 60000)}` : domain()}${pick(paths)}`;
      case 'md5': return hex(32);
      case 'sha256': return hex(64);
      default: return hex(40);
    }
  };
}

/**
 * `count` normalized values that are not listed (and pass the filters: a false positive is a hit's cost,
 * not a miss's), in the data set's type mix (networks aside), from a generator of their own (seed 7).
 */
export function notListedPairs(engine: LookupEngine, real: Map<IndicatorType, string[]>, count: number, listed?: Set<string>): Pair[] {
  const rm = rng(7);
  const genMiss = makeGenerator(rm, real);
  const pairs: Pair[] = [];
  while (pairs.length < count) {
    const x = rm();
    let acc = 0;
    let type: IndicatorType = 'ipv4';
    for (const [t, sh] of SHARE) if (t !== 'ipv4-cidr' && x < (acc += sh / 0.98)) { type = t; break; }
    const n = normalize(genMiss(type), type);
    if (n.ok && !listed?.has(n.value) && !engine.mayMatch(n.type, n.value)) pairs.push([n.type, n.value]);
  }
  return pairs;
}

/** `size` distinct normalized indicators: real ones first (shuffled), then synthetic of each type's share. */
function makeIndicators(size: number, real: Map<IndicatorType, string[]>, gen: (t: IndicatorType) => string, r: () => number): { pairs: Pair[]; listed: Set<string> } {
  const listed = new Set<string>();
  const pairs: Pair[] = [];
  for (const [type, share] of SHARE) {
    const want = Math.round(size * share);
    const pool = (real.get(type) ?? []).slice();
    for (let i = pool.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [pool[i], pool[j]] = [pool[j], pool[i]];
    }
    let got = 0;
    for (const v of pool) {
      if (got >= want) break;
      if (listed.has(v)) continue;
      listed.add(v);
      pairs.push([type, v]);
      got++;
    }
    for (let tries = 0; got < want && tries < want * 4; tries++) {
      const n = normalize(gen(type), type);
      if (!n.ok || n.type !== type || listed.has(n.value)) continue;
      listed.add(n.value);
      pairs.push([type, n.value]);
      got++;
    }
  }
  return { pairs, listed };
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** A full garbage collection now (V8's gc(), exposed for this one call; a no-op where refused). */
function collectGarbage(): void {
  try {
    v8.setFlagsFromString('--expose-gc');
    (vm.runInNewContext('gc') as () => void)();
  } catch {
    // not essential: the collector runs on its own
  }
}

/** Writes values one per line (a plain list, as a provider would feed `provider build`). */
async function writeList(file: string, values: Iterable<string>): Promise<void> {
  const out = fs.createWriteStream(file);
  let chunk = '';
  for (const v of values) {
    chunk += v + '\n';
    if (chunk.length > 1 << 20) {
      if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
      chunk = '';
    }
  }
  out.end(chunk);
  await new Promise((r) => out.once('finish', r));
}

export async function runBench(opts: BenchOptions): Promise<Record<string, number | null>> {
  const size = Math.max(1000, Math.floor(Number(opts.size) || 200_000));
  const fpRate = opts.fpRate ?? 0.001;
  const secs = opts.secondsPerFigure ?? 1;
  const say = (line: string) => {
    if (!opts.json) opts.out(line);
    else process.stderr.write(line + '\n');
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-bench-'));
  const dataDir = path.join(dir, 'data');
  const work = path.join(dir, 'provider');
  fs.mkdirSync(work);
  let db: DB | null = null;
  try {
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    say(`outpost bench: ${fmt(size)} indicators, filter target FP rate ${fpRate}, node ${process.version}, ${os.cpus().length} × ${cpu}, ${fmt(os.totalmem() / 2 ** 30, 0)} GiB, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
    const r = rng(20261123);
    const real = realSamples();
    say(real.size ? `shapes and ${fmt([...real.values()].reduce((a, l) => a + l.length, 0))} real values from ../shared/data` : 'no ../shared/data: synthetic values only');
    const gen = makeGenerator(r, real);
    // `let`: the generated data set (GiBs at 10M) is let go before the timed loops, see below.
    let { pairs, listed } = makeIndicators(size, real, gen, r);
    const total = pairs.length;

    // ---- 1. The real import path: a signed package built by the provider tooling, verified, applied in a
    //      worker thread (one transaction), then the filters built and persisted — what a new appliance does.
    const cfg = loadConfig({ dataDir, noDemo: true, logLevel: 'warn', rateLimitRps: 0, host: '127.0.0.1', port: 0, filterFpRate: fpRate, startCheck: 'off' });
    const key = generateKeyPair(work, 'bench');
    const listFile = path.join(work, 'bench.txt');
    await writeList(listFile, (function* () { for (const [, v] of pairs) yield v; })());
    const tB = performance.now();
    const built = await buildPackage({ feed: 'bench', keyPath: key.privatePath, outDir: work, files: [listFile], category: 'malware', confidence: 80, version: 1 });
    const providerMs = performance.now() - tB;
    say(`provider build: ${fmt(built.manifest.counts.total)} indicators signed in ${fmt(providerMs)} ms (${fmt(fs.statSync(built.path).size / 1048576, 1)} MiB package)`);
    db = openDb(dataDir);
    trustAdd(db, key.publicPath, { label: 'bench' });
    db.close();
    db = null;
    // Imported in a fresh process of its own (scripts/bench-import.ts), as `outpost import` runs: its peak
    // RSS is the import's, not this process's data set.
    const importInput = path.join(dir, 'import.json');
    fs.writeFileSync(importInput, JSON.stringify({ cfg, tarPath: built.path } satisfies ImportInput));
    const imp = await runChild<ImportFigures>(new URL('./bench-import.ts', import.meta.url), importInput, 'import');
    db = openDb(dataDir);
    const { applyMs, readyMs: buildMs, cpuMs: importCpuMs, peakRssMb: importPeakMb } = imp;
    const importPerS = imp.total / ((applyMs + buildMs) / 1000);
    const importPerCpuS = imp.total / (importCpuMs / 1000);
    say(`import: ${fmt(imp.total)} indicators verified + applied + filters built in ${fmt(applyMs)} ms, filters ready in a new engine ${fmt(buildMs)} ms later (${fmt(imp.filterBytes / 1048576, 1)} MiB); peak RSS of the importing process ${fmt(importPeakMb)} MiB; ${fmt(importCpuMs)} ms CPU (all threads)`);
    say(`import_per_s ${fmt(importPerS)} indicators/s  (signed package: verify + parse + apply + filters; ${fmt(importPerCpuS)} per CPU-second)`);

    // ---- 2. Start from persisted filters: a new engine on the same store loads the generation's file.
    const tS = performance.now();
    const engine = new LookupEngine(db, { fpRate, worker: false });
    const startMs = performance.now() - tS;
    const filterFile = path.join(dataDir, 'filters', `filters-${engine.generation}.bin`);
    const filterFileBytes = fs.existsSync(filterFile) ? fs.statSync(filterFile).size : 0;
    let theoryBytes = 0;
    for (const f of engine.filters.filters.values()) theoryBytes += (f.count * -Math.log(fpRate)) / (Math.LN2 * Math.LN2) / 8;
    // The filters proper against theory; the indexes in front of them (/16 masks, /24 bitmap, URL authority
    // filter) are reported beside them.
    const indexBytes = engine.filters.v4Index.byteLength + engine.filters.v4Blocks.byteLength + engine.filters.urlHosts.bits.byteLength;
    const filterBitsBytes = engine.stats().filterBytes - indexBytes;
    say(`start from persisted filters: ${fmt(startMs, 1)} ms (file ${fmt(filterFileBytes / 1048576, 1)} MiB; bit arrays ${fmt(filterBitsBytes / 1048576, 2)} MiB = ${fmt(filterBitsBytes / theoryBytes, 3)}× the theoretical −n·ln p/(ln 2)² bits; indexes ${fmt(indexBytes / 1048576, 2)} MiB)`);

    const missPairs = notListedPairs(engine, real, 50_000, listed);
    const missValues = missPairs.map(([, v]) => v);

    // What the timed loops need from the data set: listed IPv4 values (for the library comparison) and a
    // sample of listed values (the batch's hits); then the delta for the HTTP phase (the provider tooling).
    const ipListedCount = pairs.reduce((a, [t]) => a + (t === 'ipv4' ? 1 : 0), 0);
    const ipListed: string[] = [];
    for (const [t, v] of pairs) if (t === 'ipv4' && ipListed.push(v) >= 200_000) break;
    const hitPool: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      const [t, v] = pairs[Math.floor(r() * pairs.length)];
      if (t !== 'ipv4-cidr') hitPool.push(v); // a network is not a lookup value
    }
    const deltaSize = Math.min(opts.deltaSize ?? Math.min(1_000_000, Math.floor(size / 10)), Math.floor(total / 2));
    let delta: { tar: string; count: number } | null = null;
    if (opts.http && deltaSize > 0) {
      // The next version of the feed: deltaSize/2 indicators dropped, deltaSize/2 new ones.
      const drop = Math.floor(deltaSize / 2);
      const dropped = new Set<number>();
      while (dropped.size < drop) dropped.add(Math.floor(r() * pairs.length));
      const fresh: string[] = [];
      for (let tries = 0; fresh.length < deltaSize - drop && tries < deltaSize * 4; tries++) {
        const x = r();
        const type: IndicatorType = x < 0.6 ? 'ipv4' : x < 0.8 ? 'domain' : x < 0.95 ? 'url' : 'sha256';
        const n = normalize(gen(type), type);
        if (n.ok && !listed.has(n.value)) {
          listed.add(n.value);
          fresh.push(n.value);
        }
      }
      const nextFile = path.join(work, 'bench-next.txt');
      await writeList(nextFile, (function* () {
        for (let i = 0; i < pairs.length; i++) if (!dropped.has(i)) yield pairs[i][1];
        yield* fresh;
      })());
      const tD = performance.now();
      const next = await buildPackage({ feed: 'bench', keyPath: key.privatePath, outDir: path.join(work, 'next'), files: [nextFile], category: 'malware', confidence: 80, version: 2, base: built.path });
      say(`delta for the HTTP phase: ${fmt(next.delta!.added)} added, ${fmt(next.delta!.removed)} removed (built in ${fmt(performance.now() - tD)} ms)`);
      delta = { tar: next.delta!.path, count: next.delta!.added + next.delta!.removed };
    }
    // The bench's values and their Set are ~2 GiB of heap at 10M: let them go and collect once before the
    // timed phases (this process is also the HTTP phase's cluster primary).
    pairs = [];
    listed = new Set();
    collectGarbage();
    const heapAfterMb = process.memoryUsage().heapUsed / 1048576;

    // ---- 3. In-process figures, in a fresh process on the same store (scripts/bench-inproc.ts): it opens the
    //      store and loads the persisted filters as a serving process does; see there for why not here.
    const batch: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      if (i % 100 === 0) batch.push(hitPool[Math.floor(r() * hitPool.length)]);
      else batch.push(missValues[Math.floor(r() * missValues.length)]);
    }
    const inputFile = path.join(dir, 'inproc.json');
    fs.writeFileSync(inputFile, JSON.stringify({ dataDir, fpRate, secs, missPairs, batch, ipListed, ipListedCount } satisfies InProcInput));
    const { lookupMissNs, byType, sqlitePointNs, engineMissNs, libDefaultNs, libFastNs, probeNs, batchPerS, hitShare, rssMb: inprocRssMb } = await runChild<InProcFigures>(new URL('./bench-inproc.ts', import.meta.url), inputFile, 'in-process figures');
    const rssMb = process.memoryUsage().rss / 1048576;

    say('');
    say(`lookup_miss_ns      ${fmt(lookupMissNs, 1)} ns   filter stage, normalized value not listed (ipv4 ${fmt(byType.ipv4 ?? 0, 1)}, domain ${fmt(byType.domain ?? 0, 1)}, url ${fmt(byType.url ?? 0, 1)}, sha256 ${fmt(byType.sha256 ?? 0, 1)})`);
    say(`sqlite_point_ns     ${fmt(sqlitePointNs, 1)} ns   prepared point query, same table, same values  → filter is ${fmt(sqlitePointNs / lookupMissNs, 1)}× faster`);
    say(`engine_miss_ns      ${fmt(engineMissNs, 1)} ns   full lookup() of a missing value (normalize + filter + result)  → ${fmt(sqlitePointNs / engineMissNs, 2)}× the SQLite query alone`);
    say(`bloom has() default ${fmt(libDefaultNs, 1)} ns   bloom-filters' own hashing (xxhash64)  → our probe is ${fmt(libDefaultNs / probeNs, 0)}× faster`);
    say(`bloom has() fast    ${fmt(libFastNs, 1)} ns   bloom-filters' has() with our hashing  → direct probe ${fmt(libFastNs / probeNs, 1)}× faster`);
    say(`bloom probe         ${fmt(probeNs, 1)} ns   direct read of the same bit array`);
    say(`batch_values_per_s  ${fmt(batchPerS)} values/s   lookupMany, mixed types, ${fmt(hitShare * 100, 1)}% hits, one core  (${fmt(1e9 / batchPerS, 0)} ns/value)`);
    say(`rss_mb              ${fmt(rssMb, 0)} MiB   whole bench process (after letting the generated data set go; JS heap in use then ${fmt(heapAfterMb, 0)} MiB); the process of the in-process figures: ${fmt(inprocRssMb, 0)} MiB`);

    const result: Record<string, number | null> = {
      size: total,
      lookup_miss_ns: round(lookupMissNs, 1),
      sqlite_point_ns: round(sqlitePointNs, 1),
      sqlite_vs_miss_ratio: round(sqlitePointNs / lookupMissNs, 1),
      engine_miss_ns: round(engineMissNs, 1),
      bloom_has_default_ns: round(libDefaultNs, 1),
      bloom_has_fasthash_ns: round(libFastNs, 1),
      bloom_probe_ns: round(probeNs, 1),
      batch_values_per_s: Math.round(batchPerS),
      import_per_s: Math.round(importPerS),
      import_per_cpu_s: Math.round(importPerCpuS),
      import_cpu_ms: Math.round(importCpuMs),
      import_peak_rss_mb: round(importPeakMb, 1),
      provider_build_ms: Math.round(providerMs),
      apply_ms: Math.round(applyMs),
      filter_build_ms: Math.round(buildMs),
      filter_load_ms: round(startMs, 1),
      filter_bytes: engine.stats().filterBytes,
      filter_vs_theory: round(filterBitsBytes / theoryBytes, 3),
      filter_index_bytes: indexBytes,
      rss_mb: round(rssMb, 1),
      inproc_rss_mb: round(inprocRssMb, 1),
      http_rps: null,
      raw_http_rps: null,
    };

    // ---- 4. HTTP (scripts/bench-http.ts): the store is handed over; this process lets go of it first.
    db.close();
    db = null;
    // Consumer exports of a fresh store would be generated by serve in the background on first start and
    // compete with the HTTP figures; a serving appliance has them already, so mark them as present.
    fs.mkdirSync(path.join(dataDir, 'exports'), { recursive: true });
    fs.writeFileSync(path.join(dataDir, 'exports', 'exports.json'), '{}\n');
    if (opts.http) {
      const mixed = batch.slice();
      const h = await opts.http({ cfg, dataDir, misses: missValues, mixed, seconds: Math.max(2, secs * 3), delta, say });
      Object.assign(result, h);
    } else {
      say('http_rps            n/a   (no HTTP bench hook in this run)');
    }
    if (opts.json) opts.out(JSON.stringify(result));
    return result;
  } finally {
    db?.close();
    if (opts.keep && fs.existsSync(path.join(dataDir, 'outpost.db'))) {
      // Only the store stays: the provider's list, package and key (GiBs at 10M) go.
      for (const name of fs.readdirSync(dir)) if (name !== 'data') fs.rmSync(path.join(dir, name), { recursive: true, force: true });
      say(`store kept in ${dataDir}; serve it with`);
      say(`  OUTPOST_DATA_DIR=${dataDir} OUTPOST_NO_DEMO=1 OUTPOST_HTTP_WORKERS=auto npx outpost serve`);
      say(`  and make a token for your load generator: OUTPOST_DATA_DIR=${dataDir} npx outpost token create --name load`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

// Direct run: `npx tsx scripts/bench.ts [--json] [--size n]`.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--size');
  const { benchHttp } = await import('./bench-http.ts');
  await runBench({ size: i >= 0 ? Number(args[i + 1]) : 200_000, json: args.includes('--json'), out: (l) => console.log(l), http: args.includes('--no-http') ? null : benchHttp });
}
