// The one generation follower of every serving process (appliance/filter-follow.ts) against a real store
// with real signed packages: it knows whether a filter file is coming for a generation. A full apply
// announces its file in the transaction that moves the generation and writes it after COMMIT: a poll in
// between waits and then adopts the file (no build of its own). A delta announces none: the serving
// process builds at once, and an HTTP worker (not a builder) waits for that process's file instead of
// building too. An announced file that never comes (writer crashed after COMMIT) is built after the wait;
// an apply that fails to write its file withdraws the announcement.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { FILTER_WAIT_MS, GenerationFollower } from '../appliance/filter-follow.ts';
import { createLogger } from '../appliance/log.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { filterFileAnnounced, filterFileOf, storeFingerprint } from '../lookup/filters.ts';
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
    pkgs.v4 = await build(4, [source('s4', [...level3, ...tfOnly.slice(0, 12000)])]);
    pkgs.v5 = await build(5, [source('s5', [...level3, ...tfOnly.slice(0, 16000)])]);
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

  it('delta: nothing announced, so the serving process builds at once and the worker adopts its file instead of building', async () => {
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

  it('crash after COMMIT: an announced file that never comes is built after the bounded wait', async () => {
    const r = await importPackage(cfg, db, pkgs.v4.path);
    expect(r).toMatchObject({ type: 'full', generation: 4 });
    expect(filterFileAnnounced(db, 4)).toBe(true);
    fs.rmSync(fileOf(4)); // the writer died before writing it
    expect(await follower.poll()).toBe('waiting');
    clock += FILTER_WAIT_MS - 1;
    expect(await follower.poll()).toBe('waiting');
    expect(engine.generation).toBe(3);
    clock += 1;
    expect(await follower.poll()).toBe('built');
    expect(engine.generation).toBe(4);
    expect(matched(engine, tfOnly[10_000])).toBe(true);
    expect(fs.existsSync(fileOf(4))).toBe(true);
    expect(logLines.some((l) => l.includes('persisted filters did not come'))).toBe(true);
    expect(await worker.poll()).toBe('file');
    expect(workerEngine.generation).toBe(4);
  }, 120_000);

  it('an apply that cannot write its file withdraws the announcement: the serving process builds at once', async () => {
    fs.rmSync(filterDir, { recursive: true, force: true });
    fs.writeFileSync(filterDir, 'not a directory'); // writing the filter file fails
    try {
      const r = await importPackage(cfg, db, pkgs.v5.path);
      expect(r).toMatchObject({ type: 'full', generation: 5 });
      expect(filterFileAnnounced(db, 5)).toBe(false);
      expect(await follower.poll()).toBe('built');
      expect(engine.generation).toBe(5);
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
});
