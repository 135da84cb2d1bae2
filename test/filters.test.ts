// Bloom filters: sizing, exactness of the fast probe against bloom-filters itself, no false negatives on
// real list data, observed false-positive rate, persistence and the worker build.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb, type DB } from '../appliance/db.ts';
import type { IndicatorType } from '../appliance/types.ts';
import {
  addValue, blockedFpRate, blockedShape, buildFilters, buildFiltersFrom, buildFiltersInWorker, createFilter, filterSize, loadFilters, parseV4, probe,
  probeV4, probeV4Net, serializeFilters, v4Network, type FilterSet,
} from '../lookup/filters.ts';
import { HASH_OUT, hashDomainKeys, hashRange, MAX_DOMAIN_KEYS } from '../lookup/hash.ts';
import { cidrKey, normalize, parentDomains } from '../lookup/normalize.ts';
import { mulberry32 as rng } from '../scripts/prng.ts';

const DATA = path.resolve(__dirname, '../../shared/data');

/** Normalized (type, value) pairs from the real lists, first column of each line, comments stripped. */
function realValues(): [IndicatorType, string][] {
  const files: [string, (line: string) => string | null][] = [
    ['ipsum/ipsum.txt', (l) => l.split('\t')[0]],
    ['threatfox/ips.txt', (l) => l],
    ['firehol/firehol_level1.netset', (l) => l],
    ['maltrail/mass_scanner_cidr.txt', (l) => l.split('#')[0]],
    ['signature-base/hash-iocs.txt', (l) => l.split(';')[0]],
    ['signature-base/c2-iocs.txt', (l) => l.split(';')[0]],
    ['eset/nukesped_lazarus/samples.sha256', (l) => l],
    ['urlhaus/urls.csv', (l) => /^(?:"[^"]*"|[^,]*),([^,]+),/.exec(l)?.[1] ?? null],
    ...['emotet', 'remcos', 'lummac2', 'cobaltstrike', 'asyncrat', 'apt_lazarus'].map(
      (f) => [`maltrail/malware/${f}.txt`, (l: string) => l] as [string, (line: string) => string | null],
    ),
  ];
  const seen = new Set<string>();
  const out: [IndicatorType, string][] = [];
  for (const [file, pick] of files) {
    for (const line of fs.readFileSync(path.join(DATA, file), 'utf8').split('\n')) {
      const t = line.trim();
      if (!t || t.startsWith('#')) continue;
      const raw = pick(t)?.trim();
      if (!raw) continue;
      const n = normalize(raw);
      if (!n.ok) continue; // malformed real lines are the normalizer's tests' business
      const key = `${n.type} ${n.value}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push([n.type, n.value]);
    }
  }
  return out;
}


let values: [IndicatorType, string][];
let set: FilterSet;
let tmp: string;

beforeAll(() => {
  values = realValues();
  set = buildFiltersFrom(values, 0.001, 7);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-filters-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('sizing', () => {
  it('sizes blocked filters from the count and the rate: the fewest bits per value whose blocked FP rate is ≤ p', () => {
    expect(filterSize(1_000_000, 0.001)).toEqual({ m: 15_488_512, k: 9 });
    expect(filterSize(1000, 0.01)).toEqual({ m: 10_240, k: 6 });
    expect(filterSize(0, 0.001)).toEqual({ m: 512, k: 1 });
    for (const p of [0.1, 0.01, 0.001, 0.0001]) {
      const { bitsPerValue, k } = blockedShape(p);
      expect(blockedFpRate(bitsPerValue, k)).toBeLessThanOrEqual(p * (1 + 1e-9));
      // over the unblocked optimum −ln p / (ln 2)² (1.08× at the default 0.001), within the 1.2× allowed
      const theory = -Math.log(p) / (Math.LN2 * Math.LN2);
      expect(bitsPerValue / theory).toBeGreaterThan(1);
      expect(bitsPerValue / theory).toBeLessThan(1.2);
      // no other k does it with fewer bits
      for (let kk = 1; kk <= 20; kk++) expect(blockedFpRate(bitsPerValue * 0.999, kk)).toBeGreaterThan(p);
    }
    const f = createFilter('domain', 50_000, 0.001);
    expect(f.m % 512).toBe(0);
    expect(f.m / 50_000).toBeCloseTo(15.49, 1);
    expect(f.filter._size).toBe(f.m);
    expect(f.filter._nbHashes).toBe(9);
  });

  it('refuses a rate outside (0, 1)', () => {
    expect(() => filterSize(10, 0)).toThrow(/E_CONFIG|between 0 and 1/);
    expect(() => filterSize(10, 1)).toThrow(/between 0 and 1/);
  });
});

describe('fast probe equals bloom-filters', () => {
  it('sets exactly the bits BloomFilter.add() sets, and answers as BloomFilter.has()', () => {
    const sample = values.slice(0, 20_000).map(([, v]) => v);
    const viaLib = createFilter('url', sample.length, 0.01);
    const viaFast = createFilter('url', sample.length, 0.01);
    for (const v of sample) {
      viaLib.filter.add(v);
      addValue(viaFast, v);
    }
    expect(Buffer.compare(Buffer.from(viaLib.bits), Buffer.from(viaFast.bits))).toBe(0);
    const r = rng(1);
    for (let i = 0; i < 5000; i++) {
      const probeValue = i % 2 ? sample[i] : `x${Math.floor(r() * 1e9)}.example`;
      expect(probe(viaFast, probeValue)).toBe(viaLib.filter.has(probeValue));
    }
  });
});

describe('keys hashed as numbers', () => {
  for (const type of ['ipv4', 'ipv4-cidr'] as const) {
    it(`a ${type} filter: the fast add and probe equal BloomFilter.add() and has() on the text`, () => {
      const sample = values.filter(([t]) => t === type).slice(0, 20_000).map(([, v]) => v);
      expect(sample.length).toBeGreaterThan(type === 'ipv4' ? 10_000 : 1_000);
      const viaLib = createFilter(type, sample.length, 0.01);
      const viaFast = createFilter(type, sample.length, 0.01);
      expect(viaFast.keys).toBe(type === 'ipv4' ? 'v4' : 'v4net');
      for (const v of sample) {
        viaLib.filter.add(v);
        addValue(viaFast, v);
      }
      expect(Buffer.compare(Buffer.from(viaLib.bits), Buffer.from(viaFast.bits))).toBe(0);
      const r = rng(2);
      let hits = 0;
      for (let i = 0; i < 5000; i++) {
        const n = i % 2 ? parseV4(sample[i % sample.length].split('/')[0]) : Math.floor(r() * 2 ** 32);
        const prefix = type === 'ipv4' ? 32 : Number(sample[i % sample.length].split('/')[1] ?? 24);
        const net = v4Network(n, prefix);
        const text = type === 'ipv4' ? `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}` : cidrKey(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}`, 4, prefix);
        const fast = type === 'ipv4' ? probeV4(viaFast, n) : probeV4Net(viaFast, net, prefix);
        expect(fast).toBe(viaLib.filter.has(text));
        expect(probe(viaFast, text)).toBe(fast);
        if (fast) hits++;
      }
      expect(hits).toBeGreaterThanOrEqual(2500); // every listed one is found
    });
  }

  it('a text key in an address filter (never stored: values are canonical) is still hashed, as its text', () => {
    const f = createFilter('ipv4', 10, 0.01);
    addValue(f, 'not-an-address');
    expect(probe(f, 'not-an-address')).toBe(true);
    expect(f.filter.has('not-an-address')).toBe(true);
  });
});

describe('one pass over a domain', () => {
  it('hashes the domain and each parent of two or more labels as hashRange() hashes each alone', () => {
    const out = new Uint32Array(2 * MAX_DOMAIN_KEYS);
    const starts = new Int32Array(MAX_DOMAIN_KEYS);
    const hosts: [string, number, number][] = [];
    for (const [t, v] of values) {
      if (t === 'domain') hosts.push([v, 0, v.length]);
      else if (t === 'url') {
        // A URL's host, hashed inside the URL (how the engine probes it).
        const hs = v.indexOf('://') + 3;
        let he = v.indexOf('/', hs);
        if (he < 0) he = v.length;
        const colon = v.indexOf(':', hs);
        if (colon >= 0 && colon < he) he = colon;
        if (parseV4(v, hs, he) < 0 && v.charCodeAt(hs) !== 91) hosts.push([v, hs, he]);
      }
    }
    hosts.push(['a.b', 0, 3], ['ab.cd', 0, 5], ['a.bc.d', 0, 6], ['x.y.z.w.example.co.uk', 0, 21], [`${'a.'.repeat(130)}com`, 0, 263]);
    expect(hosts.length).toBeGreaterThan(20_000);
    let multi = 0;
    for (const [s, start, end] of hosts) {
      const d = s.slice(start, end);
      const n = hashDomainKeys(s, start, end, 0x1234, 0x5678, out, starts);
      // The keys: every suffix of two or more labels, shortest first, then d itself.
      const labels = d.split('.');
      // (At most MAX_DOMAIN_KEYS − 1 parents, the shortest: a name of 253 characters has fewer.)
      const want: string[] = [];
      for (let i = labels.length - 2; i >= 1 && want.length < MAX_DOMAIN_KEYS - 1; i--) want.push(labels.slice(i).join('.'));
      want.push(d);
      expect(n).toBe(want.length);
      for (let j = 0; j < n; j++) {
        expect(s.slice(starts[j], end)).toBe(want[j]);
        hashRange(s, starts[j], end, 0x1234, 0x5678);
        expect([out[2 * j], out[2 * j + 1]]).toEqual([HASH_OUT[0], HASH_OUT[1]]);
      }
      if (n > 2) multi++;
    }
    expect(multi).toBeGreaterThan(1000);
    // The engine takes its candidates from these keys and keeps those parentDomains() allows.
    expect(parentDomains('x.y.example.co.uk')).toContain('example.co.uk');
  });
});

describe('network keys', () => {
  it('the allocation-free IPv4 network probe answers exactly as probing cidrKey() text', () => {
    const nets = set.filters.get('ipv4-cidr')!;
    const ips = values.filter(([t]) => t === 'ipv4').slice(0, 3000).map(([, v]) => v);
    for (const [t, v] of values) if (t === 'ipv4-cidr') ips.push(v.split('/')[0]);
    let hits = 0;
    let disagree = 0;
    for (const ip of ips) {
      const n = parseV4(ip);
      for (let p = 1; p <= 31; p++) {
        const viaText = probe(nets, cidrKey(ip, 4, p));
        if (probeV4Net(nets, v4Network(n, p), p) !== viaText) disagree++;
        if (viaText) hits++;
      }
    }
    expect(disagree).toBe(0);
    expect(hits).toBeGreaterThan(2000); // every listed network is found from its own address
  });
});

describe('real data', () => {
  it('loads well over 200k distinct real values of every shape', () => {
    expect(values.length).toBeGreaterThan(200_000);
    const types = new Set(values.map(([t]) => t));
    for (const t of ['ipv4', 'ipv4-cidr', 'domain', 'url', 'md5', 'sha1', 'sha256'] as const) expect(types.has(t)).toBe(true);
  });

  it('has no false negatives', () => {
    let missing = 0;
    for (const [t, v] of values) if (!probe(set.filters.get(t)!, v)) missing++;
    expect(missing).toBe(0);
    expect(set.prefixes4.length).toBeGreaterThan(5);
    expect(set.prefixes4).toContain(24);
  });

  it('observes a false-positive rate within 2× of the target on 100k random non-members', () => {
    const ipv4 = set.filters.get('ipv4')!;
    const listed = new Set(values.filter(([t]) => t === 'ipv4').map(([, v]) => v));
    const r = rng(42);
    let tried = 0;
    let fp = 0;
    while (tried < 100_000) {
      const ip = `${1 + Math.floor(r() * 223)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}`;
      if (listed.has(ip)) continue;
      tried++;
      if (probe(ipv4, ip)) fp++;
    }
    const rate = fp / tried;
    // Expected ~100 of 100k; the bounds are ~5σ away, and the PRNG is seeded.
    expect(rate).toBeLessThan(2 * set.fpRate);
    expect(rate).toBeGreaterThan(set.fpRate / 2);
  });
});

describe('persistence', () => {
  it('serialize/load round trip gives identical bits and identical answers', () => {
    const file = path.join(tmp, 'filters-7.bin');
    serializeFilters(set, file);
    const t0 = performance.now();
    const loaded = loadFilters(file);
    const loadMs = performance.now() - t0;
    expect(loadMs).toBeGreaterThanOrEqual(0);
    expect(loaded.generation).toBe(7);
    expect(loaded.prefixes4).toEqual(set.prefixes4);
    expect(Buffer.compare(Buffer.from(loaded.v4Index.buffer, loaded.v4Index.byteOffset, loaded.v4Index.byteLength),
      Buffer.from(set.v4Index.buffer, set.v4Index.byteOffset, set.v4Index.byteLength))).toBe(0);
    expect(Buffer.compare(Buffer.from(loaded.v4Blocks), Buffer.from(set.v4Blocks))).toBe(0);
    for (const [f, g] of [...[...set.filters].map(([t, f]) => [f, loaded.filters.get(t)!]), [set.urlHosts, loaded.urlHosts]]) {
      expect([g.m, g.k, g.seed, g.count]).toEqual([f.m, f.k, f.seed, f.count]);
      expect(Buffer.compare(Buffer.from(g.bits), Buffer.from(f.bits))).toBe(0);
    }
    expect(set.urlHosts.bits.some((b) => b !== 0)).toBe(true);
    let missing = 0;
    for (const [t, v] of values) if (!probe(loaded.filters.get(t)!, v)) missing++;
    expect(missing).toBe(0);
    const r = rng(9);
    let disagree = 0;
    let positives = 0;
    for (let i = 0; i < 20_000; i++) {
      const v = i % 2 ? `${Math.floor(r() * 1e12).toString(16)}.test` : values[i][1];
      const want = probe(set.filters.get(values[i][0])!, v);
      if (want) positives++;
      if (probe(loaded.filters.get(values[i][0])!, v) !== want) disagree++;
      // The library's own has() agrees on the loaded filter too (same bits, same hashing).
      if (i < 2000 && loaded.filters.get(values[i][0])!.filter.has(v) !== want) disagree++;
    }
    expect(disagree).toBe(0);
    expect(positives).toBeGreaterThanOrEqual(10_000);
  });

  it('refuses a corrupt or truncated file with E_FORMAT', () => {
    const file = path.join(tmp, 'bad.bin');
    fs.writeFileSync(file, 'not a filter file at all');
    expect(() => loadFilters(file)).toThrow(/not an Outpost filter file/);
    const good = path.join(tmp, 'filters-7.bin');
    const bytes = fs.readFileSync(good);
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1000));
    expect(() => loadFilters(file)).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
  });
});

describe('building from the store', () => {
  let db: DB;
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-filters-db-'));
    db = openDb(dir);
    const ins = db.prepare("INSERT OR IGNORE INTO indicators(type, value, feed, kind) VALUES (?, ?, ?, 'block')");
    db.transaction(() => {
      values.forEach(([t, v], i) => {
        ins.run(t, v, 'feed-a');
        if (i % 10 === 0) ins.run(t, v, 'feed-b'); // the same value from a second feed
      });
      db.prepare("UPDATE meta SET value = '3' WHERE key = 'generation'").run();
    })();
  });
  afterAll(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('buildFilters streams the table and records the generation', () => {
    const s = buildFilters(db, 0.001);
    expect(s.generation).toBe(3);
    expect(s.nonCanonical).toBe(0);
    for (const [t, v] of values) expect(probe(s.filters.get(t)!, v)).toBe(true);
    expect(s.prefixes4).toEqual(set.prefixes4);
  });

  it('the worker build gives the same filters as the in-process build', async () => {
    const inProcess = buildFilters(db, 0.001);
    const viaWorker = await buildFiltersInWorker(path.join(dir, 'outpost.db'), 0.001);
    expect(viaWorker.generation).toBe(3);
    expect(viaWorker.fingerprint).toBe(inProcess.fingerprint);
    for (const [t, f] of inProcess.filters) {
      expect(Buffer.compare(Buffer.from(viaWorker.filters.get(t)!.bits), Buffer.from(f.bits))).toBe(0);
    }
  });

  it('the worker reports a missing database as an error, not a crash', async () => {
    await expect(buildFiltersInWorker(path.join(dir, 'nope.db'), 0.001)).rejects.toThrow();
  });
});
