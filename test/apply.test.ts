// The fast full-package apply (sync/apply.ts applyFull): lines of the plain canonical form are inserted in
// batches and hashed as bytes; any other accepted form is applied from its parsed value and the state is
// recomputed from the rows, so the state checked always covers what was applied. The apply worker also
// builds the new generation's filters from the lines it applies plus the other feeds' rows; they must be
// bit-for-bit the filters the engine would build from the store, and a lying manifest only costs the file.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import type { Indicator, Manifest } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { buildFilters, filterFileOf, loadFilters, storeFingerprint, toParts } from '../lookup/filters.ts';
import { OutpostError } from '../appliance/errors.ts';
import { plainLine, startApply, stateFromDb } from '../sync/apply.ts';
import { stagePackage } from '../sync/package-reader.ts';
import { verifyPackage } from '../sync/verify.ts';
import { importPackage } from '../sync/import.ts';
import { keyIdOf } from '../sync/keys.ts';
import { StateHasher, canonicalLine, serializeManifest } from '../sync/package-writer.ts';
import { canonicalIndicator, compareIndicators, indicatorToRow } from '../sync/records.ts';
import { trustAdd } from '../sync/trust.ts';
import { dbDigest, tmpDir } from './helpers.ts';
import { grow, makeKeys, realIndicators, writeFull } from './sync-b-fixture.ts';

/** A signed full package whose data file holds exactly `text` (lines as given, not rewritten). */
async function craft(key: crypto.KeyObject, file: string, feed: string, version: number, text: string, over: Partial<Manifest> = {}): Promise<string> {
  const raw = Buffer.from(text, 'utf8');
  const gz = zlib.gzipSync(raw);
  const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Indicator);
  const byType: Record<string, number> = {};
  for (const l of lines) byType[l.t] = (byType[l.t] ?? 0) + 1;
  const state = new StateHasher();
  if (!over.state) for (const l of lines) state.update(canonicalIndicator(l));
  const now = Math.floor(Date.now() / 1000) * 1000;
  const m: Manifest = {
    format: 'outpost-package/1', feed, kind: 'block', type: 'full', version,
    created: new Date(now).toISOString(), expires: new Date(now + 86_400_000).toISOString(),
    key_id: keyIdOf(crypto.createPublicKey(key)), state: over.state ?? state.digest(), defaults: {},
    counts: { total: lines.length, by_type: byType },
    files: [{ name: 'indicators-0001.ndjson.gz', role: 'indicators', sha256: crypto.createHash('sha256').update(gz).digest('hex'), size: gz.length, uncompressed_size: raw.length, count: lines.length }],
    ...over,
  } as Manifest;
  return packSigned(key, file, m, [['indicators-0001.ndjson.gz', gz]]);
}

/** Signs manifest `m` and writes it, its signature and the data files, in that order, as the package `file`. */
async function packSigned(key: crypto.KeyObject, file: string, m: Manifest, data: (readonly [string, Buffer])[]): Promise<string> {
  const bytes = serializeManifest(m);
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  for (const [name, d] of [['manifest.json', bytes], ['manifest.sig', crypto.sign(null, bytes, key)], ...data] as const) {
    await new Promise<void>((res, rej) => pack.entry({ name, mtime: new Date(0) }, d, (e) => (e ? rej(e) : res())));
  }
  pack.finalize();
  await ended;
  fs.writeFileSync(file, Buffer.concat(chunks));
  return file;
}

describe('full-package apply', () => {
  const work = tmpDir('outpost-apply-');
  const dataDir = path.join(work, 'data');
  let cfg: Config;
  let db: DB;
  let keys: ReturnType<typeof makeKeys>;
  let real: Indicator[];

  beforeAll(async () => {
    keys = makeKeys(path.join(work, 'keys'));
    real = await realIndicators();
    cfg = loadConfig({ dataDir, noDemo: true, logLevel: 'warn', startCheck: 'off' });
    db = openDb(dataDir);
    trustAdd(db, keys.pubPath, { label: 'test' });
  }, 120_000);
  afterAll(() => {
    db.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const filterDir = () => path.join(dataDir, 'filters');
  /** The worker's persisted set: for the current store content, bit-for-bit what a build from the store gives. */
  const expectPrebuiltFilters = () => {
    const { generation, fingerprint } = storeFingerprint(db);
    const file = filterFileOf(filterDir(), generation);
    expect(fs.existsSync(file), `no ${file}`).toBe(true);
    const pre = loadFilters(file);
    expect(pre.fingerprint).toBe(fingerprint);
    const fromStore = toParts(buildFilters(db, cfg.filterFpRate));
    const mine = toParts(pre);
    expect(mine.header.filters).toEqual(fromStore.header.filters);
    expect({ ...mine.header, builtAt: 0, buildMs: 0 }).toEqual({ ...fromStore.header, builtAt: 0, buildMs: 0 });
    mine.arrays.forEach((a, i) => expect(Buffer.compare(Buffer.from(a), Buffer.from(fromStore.arrays[i])), `array ${i}`).toBe(0));
    // Older generations' files are removed.
    expect(fs.readdirSync(filterDir()).filter((f) => f !== path.basename(file) && f.startsWith('filters-'))).toEqual([]);
  };

  it('builds the next generation\'s filters with the apply, equal to a build from the store, across feeds', async () => {
    const a1 = await writeFull(keys.key, path.join(work, 'out'), 'alpha', 1, grow(real, 40_000, 'a'));
    await importPackage(cfg, db, a1.path);
    expectPrebuiltFilters();
    // A second feed: its filters hold the first feed's rows too (read from the store in the same transaction).
    const b1 = await writeFull(keys.key, path.join(work, 'out'), 'beta', 1, real.filter((_, i) => i % 3 === 0));
    await importPackage(cfg, db, b1.path);
    expectPrebuiltFilters();
    // The first feed replaced: its old rows are gone from the filters, the other feed's stay.
    const a2 = await writeFull(keys.key, path.join(work, 'out'), 'alpha', 2, grow(real.filter((_, i) => i % 2 === 0), 30_000, 'c'));
    await importPackage(cfg, db, a2.path);
    expectPrebuiltFilters();
    const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, worker: false });
    expect(engine.generation).toBe(storeFingerprint(db).generation);
    const listed = real.find((x, i) => i % 3 === 0 && x.t === 'ipv4')!;
    expect(engine.lookup(listed.v).matches.map((m) => m.feed)).toContain('beta');
  }, 180_000);

  it('plain canonical lines are recognised without JSON.parse; anything else goes the general way', () => {
    expect(plainLine('{"t":"ipv4","v":"1.2.3.4"}')).toEqual(['ipv4', '1.2.3.4']);
    expect(plainLine('{"t":"url","v":"http://x.com/a?b=c"}')).toEqual(['url', 'http://x.com/a?b=c']);
    for (const l of ['{"v":"1.2.3.4","t":"ipv4"}', '{"t":"ipv4","v":"1.2.3.\\u0034"}', '{"t":"ipv4","v":"1.2.3.4","conf":5}', '{"t":"ipv4","v":"1.2.3.4"} ', '{"t":"ip\\"v4","v":"x"}', '{"t":"ipv4","v":"a"b"}', '{"t":"ipv4","v":"\t"}']) {
      expect(plainLine(l), l).toBeNull();
    }
    // Whatever plainLine accepts is exactly the canonical line of what it returns.
    for (const x of real.slice(0, 2000)) {
      const line = canonicalLine({ t: x.t, v: x.v });
      expect(plainLine(line)).toEqual([x.t, x.v]);
    }
  });

  it('the state recomputed from the store is the hash of the canonical lines, for every kind of row and either read order', () => {
    // A store of its own: rows with every attribute, values JSON must escape, and plain rows; the feed is
    // read in primary-key order while it holds most of the store, through its index once it does not.
    const sdb = openDb(path.join(work, 'state-store'));
    try {
      const rows: Indicator[] = [
        { t: 'domain', v: 'plain.example' },
        { t: 'domain', v: 'attrs.example', cat: 'c2', conf: 70, fs: '2026-01-02T03:04:05Z', ls: '2026-02-03T04:05:06Z', exp: '2027-01-01T00:00:00Z' },
        { t: 'domain', v: 'extra.example', ports: [443, 8443], tags: ['b', 'a'], ctx: { z: 1, a: { y: [1, 'x'], b: null } } },
        { t: 'domain', v: 'empty-cat.example', cat: '' },
        { t: 'url', v: 'http://q.example/a"b\\c' },
        { t: 'url', v: 'http://ctl.example/\u0001\u001f\t' },
        { t: 'url', v: 'http://uni.example/ä€😀\u2028' },
        { t: 'ipv4', v: '198.51.100.7', conf: 0 },
        ...Array.from({ length: 50 }, (_, i): Indicator => ({ t: 'ipv4', v: `203.0.113.${i}` })),
      ];
      const insert = sdb.prepare('INSERT INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra) VALUES (@type, @value, @feed, @kind, @category, @confidence, @first_seen, @last_seen, @expires_at, @extra)');
      for (const ind of rows) insert.run(indicatorToRow(ind, 'mixed', 'block'));
      const expected = new StateHasher();
      for (const ind of [...rows].map(canonicalIndicator).sort(compareIndicators)) expected.update(ind);
      const want = expected.digest();
      const feedRow = sdb.prepare("INSERT INTO feeds(name, kind, version, state, package_sha256, key_id, created, expires, applied_at, generation, count) VALUES (?, 'block', 1, '', '', '', '', '', '', 1, ?)");
      feedRow.run('mixed', rows.length);
      expect(stateFromDb(sdb, 'mixed')).toBe(want);
      // Another feed four times larger: the same state through the index.
      for (let i = 0; i < 4 * rows.length; i++) insert.run(indicatorToRow({ t: 'ipv4', v: `192.0.2.${i % 256}` + (i >= 256 ? `${i}` : '') }, 'other', 'block'));
      feedRow.run('other', 4 * rows.length);
      expect(stateFromDb(sdb, 'mixed')).toBe(want);
      // And it is the state of those rows, not of any rows: one attribute changed, another state.
      sdb.prepare("UPDATE indicators SET confidence = 71 WHERE value = 'attrs.example'").run();
      expect(stateFromDb(sdb, 'mixed')).not.toBe(want);
    } finally {
      sdb.close();
    }
  });

  it('accepted lines in another form are applied from their value and the state is recomputed from the rows', async () => {
    const lines = [
      '{"t":"ipv4","v":"198.51.100.1"}',
      '{"v":"198.51.100.2","t":"ipv4"}', // key order
      '{"t":"ipv4","v":"198.51.100.\\u0033"}', // escaped digit
      '{"t":"ipv4","v":"198.51.100.4","fs":"2026-01-01T00:00:00.000Z","unknown":1}', // non-canonical date, unknown key
    ];
    const text = lines.join('\n') + '\n';
    const ok = await craft(keys.key, path.join(work, 'odd.tar'), 'odd', 1, text);
    const r = await importPackage(cfg, db, ok);
    expect(r.total).toBe(4);
    expect(stateFromDb(db, 'odd')).toBe(r.manifest.state);
    expect(db.prepare("SELECT value, first_seen FROM indicators WHERE feed = 'odd' ORDER BY value").all()).toEqual([
      { value: '198.51.100.1', first_seen: null }, { value: '198.51.100.2', first_seen: null },
      { value: '198.51.100.3', first_seen: null }, { value: '198.51.100.4', first_seen: Date.parse('2026-01-01T00:00:00Z') / 1000 },
    ]);
    expectPrebuiltFilters();
    // Signing the hash of those raw bytes instead does not pass: the bytes are not what was applied.
    const bytesState = crypto.createHash('sha256').update(text).digest('hex');
    const bad = await craft(keys.key, path.join(work, 'odd2.tar'), 'odd', 2, text, { state: bytesState });
    await expect(importPackage(cfg, db, bad)).rejects.toMatchObject({ code: 'E_STATE' });
    expect(stateFromDb(db, 'odd')).toBe(r.manifest.state);
  }, 60_000);

  it('a manifest whose per-type counts lie still applies, but leaves no prebuilt filters (the engine builds them)', async () => {
    const text = '{"t":"domain","v":"example-lie.com"}\n{"t":"ipv4","v":"203.0.113.9"}\n';
    const lie = await craft(keys.key, path.join(work, 'lie.tar'), 'lie', 1, text, { counts: { total: 2, by_type: { ipv4: 2 } } });
    const r = await importPackage(cfg, db, lie);
    expect(r.total).toBe(2);
    expect(fs.existsSync(filterFileOf(filterDir(), r.generation!))).toBe(false);
    const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, worker: false });
    expect(engine.lookup('example-lie.com').matches.map((m) => m.feed)).toEqual(['lie']);
  }, 60_000);

  it('a plain line with a value that is not canonical, or out of order, is E_FORMAT and nothing changes', async () => {
    const before = db.prepare('SELECT count(*) AS n FROM indicators').get();
    for (const text of ['{"t":"ipv4","v":"198.51.100.01"}\n', '{"t":"ipv4","v":"198.51.100.9"}\n{"t":"ipv4","v":"198.51.100.10"}\n']) {
      const p = await craft(keys.key, path.join(work, 'bad.tar'), 'odd', 3, text, { state: 'a'.repeat(64) });
      await expect(importPackage(cfg, db, p)).rejects.toMatchObject({ code: 'E_FORMAT' });
    }
    expect(db.prepare('SELECT count(*) AS n FROM indicators').get()).toEqual(before);
  }, 60_000);
});

describe('staging in the apply worker', () => {
  const work = tmpDir('outpost-stage-');
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('stages and verifies off the main thread: the same staged package, the same refusals, nothing left behind', async () => {
    const keys = makeKeys(path.join(work, 'keys'));
    const trusted = [{ key_id: keyIdOf(crypto.createPublicKey(keys.key)), public_pem: fs.readFileSync(keys.pubPath, 'utf8'), revoked_at: null }];
    const stagingRoot = path.join(work, 'staging');
    const limits = { maxPackageBytes: 1 << 26, maxUncompressedBytes: 1 << 26 };
    const text = ['1.2.3.4', '5.6.7.8'].map((v) => JSON.stringify({ t: 'ipv4', v })).join('\n') + '\n';
    const good = await craft(keys.key, path.join(work, 'good.tar'), 'alpha', 1, text);

    const inline = await stagePackage(good, stagingRoot, limits);
    const pending = startApply();
    try {
      const staged = await pending.stage({ tarPath: good, stagingRoot, limits, keys: trusted, now: Date.now() });
      expect(staged.manifest).toEqual(verifyPackage(inline, trusted));
      expect(staged.sha256).toBe(inline.sha256);
      expect(Buffer.isBuffer(staged.manifestBytes) && staged.manifestBytes.equals(inline.manifestBytes)).toBe(true);
      expect(Buffer.isBuffer(staged.signature) && staged.signature.equals(inline.signature)).toBe(true);
      expect([...staged.files.keys()]).toEqual([...inline.files.keys()]);
      const [name, file] = [...staged.files][0];
      expect(fs.readFileSync(file).equals(fs.readFileSync(inline.files.get(name)!))).toBe(true);
      staged.cleanup();
      expect(fs.existsSync(staged.dir)).toBe(false);
    } finally {
      pending.cancel();
      inline.cleanup();
    }

    // A flipped byte in the data: the worker's refusal arrives as the catalog's E_HASH, its staging dir removed.
    const bytes = fs.readFileSync(good);
    const at = bytes.lastIndexOf(zlib.gzipSync(Buffer.from(text)).subarray(0, 4)) + 20;
    bytes[at] ^= 0xff;
    const bad = path.join(work, 'bad.tar');
    fs.writeFileSync(bad, bytes);
    const again = startApply();
    try {
      const err = await again.stage({ tarPath: bad, stagingRoot, limits, keys: trusted, now: Date.now() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OutpostError);
      expect((err as OutpostError).code).toBe('E_HASH');
      // An untrusted key: E_UNKNOWN_KEY, from the same worker (it keeps waiting for a stage or a job).
      const err2 = await again.stage({ tarPath: good, stagingRoot, limits, keys: [], now: Date.now() }).catch((e: unknown) => e);
      expect((err2 as OutpostError).code).toBe('E_UNKNOWN_KEY');
    } finally {
      again.cancel();
    }
    expect(fs.readdirSync(stagingRoot)).toEqual([]);
  });
});

/** A signed delta whose remove and add files hold exactly the given lines, in the given order. */
async function craftDelta(key: crypto.KeyObject, file: string, base: Manifest, version: number, removes: Indicator[], adds: Indicator[], result: Indicator[]): Promise<string> {
  const state = new StateHasher();
  for (const l of [...result].map(canonicalIndicator).sort(compareIndicators)) state.update(l);
  const now = Math.floor(Date.now() / 1000) * 1000;
  const parts = ([['remove', removes], ['add', adds]] as const).map(([role, lines]) => {
    const raw = Buffer.from(lines.map((l) => canonicalLine(l) + '\n').join(''), 'utf8');
    const gz = zlib.gzipSync(raw);
    return { name: `${role}-0001.ndjson.gz`, role, gz, raw, count: lines.length };
  });
  const m = {
    format: 'outpost-package/1', feed: base.feed, kind: 'block', type: 'delta', version, base_version: base.version, base_state: base.state,
    created: new Date(now).toISOString(), expires: new Date(now + 86_400_000).toISOString(),
    key_id: keyIdOf(crypto.createPublicKey(key)), state: state.digest(), defaults: {},
    counts: { total: result.length, by_type: {} },
    files: parts.map((p) => ({ name: p.name, role: p.role, sha256: crypto.createHash('sha256').update(p.gz).digest('hex'), size: p.gz.length, uncompressed_size: p.raw.length, count: p.count })),
  } as unknown as Manifest;
  return packSigned(key, file, m, parts.map((p) => [p.name, p.gz] as const));
}

describe('delta apply: removals and additions in one merged pass', () => {
  const work = tmpDir('outpost-delta-apply-');
  const dataDir = path.join(work, 'data');
  let cfg: Config;
  let db: DB;
  let keys: ReturnType<typeof makeKeys>;
  const ip = (i: number): Indicator => ({ t: 'ipv4', v: `198.51.100.${i}` });
  const dom = (i: number): Indicator => ({ t: 'domain', v: `d${i}.example` });
  // Base: domains d10..d29 and IPs .10..29, every one with confidence 50.
  const base = [...Array.from({ length: 20 }, (_, i) => dom(10 + i)), ...Array.from({ length: 20 }, (_, i) => ip(10 + i))].map((x) => ({ ...x, conf: 50 }));
  let v1: Manifest;

  beforeAll(async () => {
    keys = makeKeys(path.join(work, 'keys'));
    cfg = loadConfig({ dataDir, noDemo: true, logLevel: 'warn', startCheck: 'off' });
    db = openDb(dataDir);
    trustAdd(db, keys.pubPath);
    const text = [...base].map(canonicalIndicator).sort(compareIndicators).map((l) => canonicalLine(l) + '\n').join('');
    const full = await craft(keys.key, path.join(work, 'v1.tar'), 'merge', 1, text);
    const r = await importPackage(cfg, db, full);
    expect(r.total).toBe(40);
    v1 = (db.prepare("SELECT name AS feed, version, state FROM feeds WHERE name = 'merge'").get() as Manifest);
  }, 60_000);

  afterAll(() => {
    db?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const confOf = (x: Indicator) => (db.prepare('SELECT confidence FROM indicators WHERE type = ? AND value = ?').get(x.t, x.v) as { confidence: number } | undefined)?.confidence;

  it('interleaved removals and additions, and a value in both roles (removed, then added anew), end in the signed state', async () => {
    // Removals and additions alternate in key order; d15 is removed and added with another confidence.
    const removes = [dom(11), dom(15), dom(20), ip(12), ip(25)];
    const adds = [dom(1), { ...dom(15), conf: 90 }, dom(165), dom(99), ip(2), ip(200)];
    const gone = new Set(removes.map((x) => `${x.t} ${x.v}`));
    const result = [...base.filter((x) => !gone.has(`${x.t} ${x.v}`)), ...adds];
    const sorted = (xs: Indicator[]) => [...xs].sort(compareIndicators);
    const d = await craftDelta(keys.key, path.join(work, 'v2.tar'), v1, 2, sorted(removes), sorted(adds), result);
    const r = await importPackage(cfg, db, d);
    expect(r).toMatchObject({ type: 'delta', added: adds.length, removed: removes.length, total: result.length });
    expect(confOf(dom(15))).toBe(90);
    expect(confOf(dom(11))).toBeUndefined();
    expect(confOf(ip(200))).toBeNull();
    expect(stateFromDb(db, 'merge')).toBe(r.state);
    v1 = { ...v1, version: 2, state: r.state } as Manifest;
  }, 60_000);

  it('a delta whose lines are out of order is E_FORMAT and changes nothing', async () => {
    const before = dbDigest(dataDir);
    const state = stateFromDb(db, 'merge');
    // Valid lines, a consistent signed result, but the additions are not sorted.
    const adds = [ip(3), ip(1)];
    const result = [...(db.prepare("SELECT type AS t, value AS v, confidence AS conf FROM indicators WHERE feed = 'merge'").all() as Indicator[]).map((x) => (x.conf === null ? { t: x.t, v: x.v } : x)), ...adds];
    const d = await craftDelta(keys.key, path.join(work, 'v3.tar'), v1, 3, [], adds, result);
    await expect(importPackage(cfg, db, d)).rejects.toMatchObject({ code: 'E_FORMAT', message: expect.stringMatching(/add-0001\.ndjson\.gz line 2: .*must be sorted/) });
    // Duplicated removals too.
    const d2 = await craftDelta(keys.key, path.join(work, 'v3b.tar'), v1, 3, [dom(12), dom(12)], [], result);
    await expect(importPackage(cfg, db, d2)).rejects.toMatchObject({ code: 'E_FORMAT' });
    expect(dbDigest(dataDir)).toBe(before);
    expect(stateFromDb(db, 'merge')).toBe(state);
  }, 60_000);
});
