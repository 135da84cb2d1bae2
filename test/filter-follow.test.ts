// The one generation follower of every serving process (appliance/filter-follow.ts) against a real store
// with real signed packages: it knows whether a filter file is coming for a generation. A full apply
// announces its file in the transaction that moves the generation and writes it after COMMIT: a poll in
// between waits and then adopts the file (no build of its own). A delta extends the previous generation's
// persisted set and announces it the same way; without that set it announces none: the serving process
// builds at once, and an HTTP worker (not a builder) waits for that process's file instead of building
// too. An announced file that never comes (writer crashed after COMMIT) is built after the wait; an apply
// that fails to write its file withdraws the announcement.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { FILTER_WAIT_MS, GenerationFollower } from '../appliance/filter-follow.ts';
import { createLogger } from '../appliance/log.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { blockedShape, buildFilters, filterFileAnnounced, filterFileOf, loadFilters, probe, storeFingerprint, withinFpBound, writeFilterFile } from '../lookup/filters.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { trustAdd } from '../sync/trust.ts';
import { DATA, readLines, tmpDir } from './helpers.ts';

describe('generation follower (appliance/filter-follow.ts)', () => {
  const work = tmpDir('outpost-follow-');
  const dataDir = path.join(work, 'var');
  const filterDir = path.join(dataDir, 'filters');
  const level3 = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter((l) => l && !l.startsWith('#'));
  const threatfox = readLines(path.join(DATA, 'threatfox/ips.txt')).filter((l) => l && !l.startsWith('#'));
  const l3 = new Set(level3);
  const tfOnly = threatfox.filter((v) => !l3.has(v));
  let key: ReturnType<typeof generateKeyPair>;
  let cfg: Config;
  let db: DB;
  let ro: DB;
  const logLines: string[] = [];
  const log = createLogger('info', { write: (s: string) => void logLines.push(s) });
  let clock = 1_000_000;
  const now = () => clock;
  // The serving process (builder) and an HTTP worker's (not a builder), each with its own engine.
  let engine: LookupEngine;
  let workerEngine: LookupEngine;
  let follower: GenerationFollower;
  let worker: GenerationFollower;
  const pkgs: Record<string, Awaited<ReturnType<typeof buildPackage>>> = {};

  const source = (name: string, lines: string[]) => {
    const f = path.join(work, `${name}.txt`);
    fs.writeFileSync(f, lines.join('\n') + '\n');
    return f;
  };
  const fileOf = (gen: number) => filterFileOf(filterDir, gen);
  const inode = (file: string) => fs.statSync(file).ino;
  const matched = (e: LookupEngine, v: string) => e.lookup(v).matches.length > 0;

  beforeAll(async () => {
    key = generateKeyPair(path.join(work, 'keys'));
    const out = path.join(work, 'pk');
    const build = (version: number, files: string[], base?: string) =>
      buildPackage({ feed: 'threats', keyPath: key.privatePath, outDir: out, files, version, category: 'malware', base });
    pkgs.v1 = await build(1, [source('s1', level3)]);
    pkgs.v2 = await build(2, [source('s2', [...level3, ...tfOnly.slice(0, 4000)])], pkgs.v1.path);
    pkgs.v3 = await build(3, [source('s3', [...level3, ...tfOnly.slice(0, 8000)])], pkgs.v2.path);
    // v3 → v3x: 1,000 removed, 2,000 added.
    pkgs.v3x = await build(4, [source('s3x', [...level3, ...tfOnly.slice(1000, 10_000)])], pkgs.v3.path);
    // v3x → v3y: 100 added.
    pkgs.v3y = await build(5, [source('s3y', [...level3, ...tfOnly.slice(1000, 10_100)])], pkgs.v3x.path);
    pkgs.v4 = await build(6, [source('s4', [...level3, ...tfOnly.slice(0, 12000)])]);
    pkgs.v5 = await build(7, [source('s5', [...level3, ...tfOnly.slice(0, 16000)])]);
    pkgs.v6 = await build(8, [source('s6', [...level3, ...tfOnly.slice(0, 17000)])]);
    db = openDb(dataDir);
    trustAdd(db, key.publicPath);
    cfg = loadConfig({ dataDir });
    await importPackage(cfg, db, pkgs.v1.path);
    ro = openDb(dataDir, { readonly: true });
    engine = new LookupEngine(db, { fpRate: cfg.filterFpRate });
    workerEngine = new LookupEngine(ro, { fpRate: cfg.filterFpRate });
    follower = new GenerationFollower({ engine, db, fpRate: cfg.filterFpRate, log, builder: true, now });
    worker = new GenerationFollower({ engine: workerEngine, db: ro, fpRate: cfg.filterFpRate, log, builder: false, now });
    expect(engine.generation).toBe(1);
    expect(await follower.poll()).toBe('current');
  }, 120_000);

  afterAll(async () => {
    await follower?.close();
    await worker?.close();
    ro?.close();
    db?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('full apply: a poll before the file is written waits (old generation answers), then adopts the file without building', async () => {
    const r = await importPackage(cfg, db, pkgs.v2.path);
    expect(r).toMatchObject({ type: 'full', generation: 2 });
    expect(filterFileAnnounced(db, 2)).toBe(true);
    // The moment between the apply's COMMIT and its file write: the file is not there yet.
    const file = fileOf(2);
    const held = `${file}.held`;
    fs.renameSync(file, held);
    expect(await follower.poll()).toBe('waiting');
    expect(engine.generation).toBe(1);
    expect(matched(engine, tfOnly[0])).toBe(false);
    expect(matched(engine, level3[0])).toBe(true);
    expect(fs.existsSync(file), 'the follower built and persisted the filters itself').toBe(false);
    // The apply's write lands.
    fs.renameSync(held, file);
    const written = inode(file);
    expect(await follower.poll()).toBe('file');
    expect(engine.generation).toBe(2);
    expect(matched(engine, tfOnly[0])).toBe(true);
    // A build would have persisted its own set (a new file by rename): the apply's file is untouched.
    expect(inode(file)).toBe(written);
    expect(logLines.some((l) => l.includes('"filters":"file"') && l.includes('"generation":2'))).toBe(true);
    // The worker loads the same file.
    expect(await worker.poll()).toBe('file');
    expect(workerEngine.generation).toBe(2);
    expect(inode(file)).toBe(written);
  }, 120_000);

  it('delta without the previous set: nothing announced, so the serving process builds at once and the worker adopts its file instead of building', async () => {
    fs.rmSync(fileOf(2)); // e.g. a data dir restored without its filters
    const r = await importPackage(cfg, db, pkgs.v3.delta!.path);
    expect(r).toMatchObject({ type: 'delta', generation: 3 });
    expect(filterFileAnnounced(db, 3)).toBe(false);
    expect(fs.existsSync(fileOf(3))).toBe(false);
    // The worker polls first: it waits for the primary's file (no build of its own), old generation answering.
    expect(await worker.poll()).toBe('waiting');
    expect(workerEngine.generation).toBe(2);
    expect(fs.existsSync(fileOf(3))).toBe(false);
    // The serving process builds on its first poll, without waiting, and persists the file.
    expect(await follower.poll()).toBe('built');
    expect(engine.generation).toBe(3);
    expect(matched(engine, tfOnly[6000])).toBe(true);
    expect(fs.existsSync(fileOf(3))).toBe(true);
    const built = inode(fileOf(3));
    expect(await worker.poll()).toBe('file');
    expect(workerEngine.generation).toBe(3);
    expect(matched(workerEngine, tfOnly[6000])).toBe(true);
    expect(inode(fileOf(3))).toBe(built);
  }, 120_000);

  it('delta with the previous set: the apply extends it with what it adds and announces it; both followers adopt the file', async () => {
    const prev = loadFilters(fileOf(3));
    const r = await importPackage(cfg, db, pkgs.v3x.delta!.path);
    expect(r).toMatchObject({ type: 'delta', generation: 4, added: 2000, removed: 1000 });
    expect(filterFileAnnounced(db, 4)).toBe(true);
    const ext = loadFilters(fileOf(4));
    expect(ext.fingerprint).toBe(storeFingerprint(db).fingerprint);
    // The previous set's bits, plus the additions': same sizes, 2,000 more counted, no bit of the old set lost.
    const [a, b] = [prev.filters.get('ipv4')!, ext.filters.get('ipv4')!];
    expect([b.m, b.k, b.seed]).toEqual([a.m, a.k, a.seed]);
    expect(b.count).toBe(a.count + 2000);
    expect(a.bits.every((byte, i) => (byte & b.bits[i]) === byte)).toBe(true);
    expect(a.bits.some((byte, i) => byte !== b.bits[i])).toBe(true);
    expect(withinFpBound(ext)).toBe(true);
    const written = inode(fileOf(4));
    expect(await follower.poll()).toBe('file');
    expect(engine.generation).toBe(4);
    expect(inode(fileOf(4))).toBe(written); // adopted, not rebuilt
    expect(matched(engine, tfOnly[9000])).toBe(true); // added
    expect(matched(engine, tfOnly[500])).toBe(false); // removed: its bits stay, the store says no
    expect(matched(engine, tfOnly[5000])).toBe(true); // kept
    expect(engine.lookup(tfOnly[500]).verdict).not.toBe('malicious');
    expect(await worker.poll()).toBe('file');
    expect(workerEngine.generation).toBe(4);
    expect(matched(workerEngine, tfOnly[9000])).toBe(true);
    expect(fs.existsSync(fileOf(3))).toBe(false); // older files go with the new one
  }, 120_000);

  it('a delta after a purge extends the set with the rows it brings back, not only with its additions', async () => {
    // An expiry purge took 10 kept rows out, and the generation's set was persisted without them.
    const revived = tfOnly.slice(5000, 5010);
    const cols = 'type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra';
    for (const v of revived) {
      db.prepare(`INSERT INTO indicators_expired(${cols}) SELECT ${cols} FROM indicators WHERE type = 'ipv4' AND value = ?`).run(v);
      expect(db.prepare("DELETE FROM indicators WHERE type = 'ipv4' AND value = ?").run(v).changes).toBe(1);
    }
    writeFilterFile(buildFilters(db, cfg.filterFpRate), filterDir);
    const rebuilt = loadFilters(fileOf(4)).filters.get('ipv4')!;
    expect(revived.filter((v) => probe(rebuilt, v)).length, 'at most one false positive among 10').toBeLessThanOrEqual(1);
    const r = await importPackage(cfg, db, pkgs.v3y.delta!.path);
    expect(r).toMatchObject({ type: 'delta', generation: 5, added: 100, removed: 0 });
    expect(filterFileAnnounced(db, 5)).toBe(true);
    const ext = loadFilters(fileOf(5));
    expect(ext.filters.get('ipv4')!.count).toBe(rebuilt.count + 110); // 100 added, 10 revived
    for (const v of [...revived, tfOnly[10_050]]) expect(probe(ext.filters.get('ipv4')!, v), v).toBe(true);
    expect(await follower.poll()).toBe('file');
    expect(engine.generation).toBe(5);
    for (const v of revived) expect(matched(engine, v), v).toBe(true);
    expect(await worker.poll()).toBe('file');
  }, 120_000);

  it('a set extended past its false-positive bound is not persisted: the serving process builds', () => {
    const set = loadFilters(fileOf(5));
    expect(withinFpBound(set)).toBe(true);
    const f = set.filters.get('ipv4')!;
    // Filled to the bits per value at which the rate doubles (and a little past): no longer within bound.
    const { bitsPerValue } = blockedShape(set.fpRate);
    f.count = Math.ceil(f.m / bitsPerValue);
    expect(withinFpBound(set)).toBe(true);
    f.count = Math.ceil((2 * f.m) / bitsPerValue);
    expect(withinFpBound(set)).toBe(false);
    expect(withinFpBound(set, 1e6)).toBe(true);
  });

  it('crash after COMMIT: an announced file that never comes is built after the bounded wait', async () => {
    const r = await importPackage(cfg, db, pkgs.v4.path);
    expect(r).toMatchObject({ type: 'full', generation: 6 });
    expect(filterFileAnnounced(db, 6)).toBe(true);
    fs.rmSync(fileOf(6)); // the writer died before writing it
    expect(await follower.poll()).toBe('waiting');
    clock += FILTER_WAIT_MS - 1;
    expect(await follower.poll()).toBe('waiting');
    expect(engine.generation).toBe(5);
    clock += 1;
    expect(await follower.poll()).toBe('built');
    expect(engine.generation).toBe(6);
    expect(matched(engine, tfOnly[10_000])).toBe(true);
    expect(fs.existsSync(fileOf(6))).toBe(true);
    expect(logLines.some((l) => l.includes('persisted filters did not come'))).toBe(true);
    expect(await worker.poll()).toBe('file');
    expect(workerEngine.generation).toBe(6);
  }, 120_000);

  it('an apply that cannot write its file withdraws the announcement: the serving process builds at once', async () => {
    fs.rmSync(filterDir, { recursive: true, force: true });
    fs.writeFileSync(filterDir, 'not a directory'); // writing the filter file fails
    try {
      const r = await importPackage(cfg, db, pkgs.v5.path);
      expect(r).toMatchObject({ type: 'full', generation: 7 });
      expect(filterFileAnnounced(db, 7)).toBe(false);
      expect(await follower.poll()).toBe('built');
      expect(engine.generation).toBe(7);
      expect(matched(engine, tfOnly[14_000])).toBe(true);
    } finally {
      fs.rmSync(filterDir, { force: true });
    }
  }, 120_000);

  it('a serving start accepts the persisted set without counting rows; the follower checks the count and rebuilds on a mismatch', async () => {
    // The store holds v5; an engine without checkRowsLater builds its filters and persists them.
    const gen = engine.generation;
    expect(new LookupEngine(db, { fpRate: cfg.filterFpRate }).generation).toBe(gen);
    expect(fs.existsSync(fileOf(gen))).toBe(true);
    const quick = new LookupEngine(db, { fpRate: cfg.filterFpRate, checkRowsLater: true });
    expect(quick.generation).toBe(gen);
    expect(quick.rowsUnchecked).toBe(true);
    const f1 = new GenerationFollower({ engine: quick, db, fpRate: cfg.filterFpRate, log, builder: true, now });
    try {
      const reloads = quick.stats().reloads;
      expect(await f1.poll()).toBe('checked'); // same rows: nothing rebuilt
      expect(quick.rowsUnchecked).toBe(false);
      expect(quick.stats().reloads).toBe(reloads);
      expect(await f1.poll()).toBe('current');
    } finally {
      await f1.close();
    }
    // Rows deleted without a new generation (an expiry purge stopped between its batches).
    const gone = tfOnly[15_000];
    expect(db.prepare("DELETE FROM indicators WHERE type = 'ipv4' AND value = ?").run(gone).changes).toBe(1);
    try {
      const full = new LookupEngine(db, { fpRate: cfg.filterFpRate, filterDir: null });
      expect(full.filters.fingerprint).toBe(storeFingerprint(db).fingerprint); // the whole check refuses the file
      const stale = new LookupEngine(db, { fpRate: cfg.filterFpRate, checkRowsLater: true });
      expect(stale.rowsUnchecked).toBe(true); // accepted on generation and feeds: it still holds every stored key
      expect(stale.filters.fingerprint).not.toBe(storeFingerprint(db).fingerprint);
      expect(matched(stale, gone)).toBe(false); // the store has the last word
      expect(matched(stale, tfOnly[14_000])).toBe(true);
      const f2 = new GenerationFollower({ engine: stale, db, fpRate: cfg.filterFpRate, log, builder: true, now });
      try {
        expect(await f2.poll()).toBe('built');
        expect(stale.rowsUnchecked).toBe(false);
        expect(stale.filters.fingerprint).toBe(storeFingerprint(db).fingerprint);
        expect(logLines.some((l) => l.includes('do not match the store (row count)'))).toBe(true);
        expect(await f2.poll()).toBe('current');
      } finally {
        await f2.close();
      }
    } finally {
      db.prepare("INSERT INTO indicators(type, value, feed, kind) VALUES ('ipv4', ?, 'threats', 'block')").run(gone);
    }
  }, 120_000);

  it('closing during a poll drops the check in flight: nothing is built or written after close', async () => {
    // serve closes its follower on shutdown while the start's row check may still be in the loader thread;
    // the dropped load must not read as "check failed, build the filters" (a build writes into the data dir).
    const quick = new LookupEngine(db, { fpRate: cfg.filterFpRate, checkRowsLater: true });
    expect(quick.rowsUnchecked).toBe(true);
    const f = new GenerationFollower({ engine: quick, db, fpRate: cfg.filterFpRate, log, builder: true, now });
    const files = () => fs.readdirSync(filterDir).map((n) => `${n}:${fs.statSync(path.join(filterDir, n)).mtimeMs}`).sort();
    const before = files();
    const reloads = quick.stats().reloads;
    const warnings = logLines.length;
    const step = f.poll(); // the loader thread is starting (~1 s of module loading): close comes first
    await f.close();
    expect(await step).toBe('current');
    expect(await f.poll()).toBe('current'); // a closed follower starts nothing
    expect(quick.stats().reloads).toBe(reloads);
    expect(quick.rowsUnchecked).toBe(true);
    expect(files()).toEqual(before);
    expect(logLines.slice(warnings).filter((l) => l.includes('building them'))).toEqual([]);
  }, 60_000);
  it('an announced file is taken on generation and feed versions: no row count at the swap', async () => {
    const r = await importPackage(cfg, db, pkgs.v6.path);
    expect(r).toMatchObject({ type: 'full', generation: 8 });
    expect(filterFileAnnounced(db, 8)).toBe(true);
    // Rows deleted after the writer's COMMIT without a new generation (an expiry purge between batches):
    // the row count no longer matches the file's, which still holds every stored key.
    const gone = tfOnly[16_500];
    expect(db.prepare("DELETE FROM indicators WHERE type = 'ipv4' AND value = ?").run(gone).changes).toBe(1);
    try {
      expect(loadFilters(fileOf(8)).fingerprint).not.toBe(storeFingerprint(db).fingerprint);
      const written = inode(fileOf(8));
      expect(await follower.poll()).toBe('file');
      expect(engine.generation).toBe(8);
      expect(engine.rowsUnchecked).toBe(false);
      expect(inode(fileOf(8))).toBe(written); // taken as it is, not rebuilt
      expect(matched(engine, gone)).toBe(false); // the store has the last word
      expect(matched(engine, tfOnly[16_900])).toBe(true);
      expect(await follower.poll()).toBe('current');
    } finally {
      db.prepare("INSERT INTO indicators(type, value, feed, kind) VALUES ('ipv4', ?, 'threats', 'block')").run(gone);
    }
  }, 120_000);
});
