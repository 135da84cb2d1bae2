// Deltas on real data: full → delta → delta chains end in exactly the state of the full package of the
// same version; a delta on the wrong base is E_BASE and one whose result state differs is E_STATE, and
// neither changes the database.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { stateFromDb } from '../sync/apply.ts';
import { diffIndicators, readPackage } from '../sync/delta.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { writePackage } from '../sync/package-writer.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { trustAdd } from '../sync/trust.ts';
import { DATA, cli, dbDigest, readLines, tmpDir } from './helpers.ts';

describe('delta packages', () => {
  const work = tmpDir('outpost-delta-');
  const pk = path.join(work, 'pk');
  let key: ReturnType<typeof generateKeyPair>;
  const level3 = path.join(DATA, 'ipsum/levels/3.txt');
  let v1: Awaited<ReturnType<typeof buildPackage>>;
  let v2: Awaited<ReturnType<typeof buildPackage>>;
  let v3: Awaited<ReturnType<typeof buildPackage>>;
  const open: DB[] = [];

  const appliance = (name: string) => {
    const dataDir = path.join(work, name);
    const db = openDb(dataDir);
    open.push(db);
    trustAdd(db, key.publicPath);
    return { dataDir, db, cfg: loadConfig({ dataDir }) };
  };

  beforeAll(async () => {
    key = generateKeyPair(path.join(work, 'keys'));
    // v2: level 3 without every 5th line, plus ipsum.txt lines 2000-6000 (IPs with blacklist counts →
    // changed ctx/conf for those already listed, new ones for the rest). v3: another cut of both.
    const l3 = readLines(level3).filter((l) => l && !l.startsWith('#'));
    const ipsum = readLines(path.join(DATA, 'ipsum/ipsum.txt')).filter((l) => l && !l.startsWith('#'));
    const s2 = path.join(work, 'src2.txt');
    fs.writeFileSync(s2, [...l3.filter((_, i) => i % 5 !== 0), ...ipsum.slice(2000, 6000)].join('\n') + '\n');
    const s3 = path.join(work, 'src3.txt');
    fs.writeFileSync(s3, [...l3.filter((_, i) => i % 3 !== 0), ...ipsum.slice(4000, 9000)].join('\n') + '\n');
    v1 = await buildPackage({ feed: 'ipsum', keyPath: key.privatePath, outDir: pk, files: [level3], version: 100 });
    v2 = await buildPackage({ feed: 'ipsum', keyPath: key.privatePath, outDir: pk, files: [s2], version: 200, base: v1.path });
    // The base given is the v2 *delta*: the builder finds the full package of version 200 beside it.
    v3 = await buildPackage({ feed: 'ipsum', keyPath: key.privatePath, outDir: pk, files: [s3], version: 300, base: v2.delta!.path });
  });

  afterAll(() => {
    for (const db of open) db.close();
  });

  it('carries base version and state, the state after applying, and real adds, changes and removes', () => {
    const d = v2.delta!;
    expect(d.manifest).toMatchObject({ type: 'delta', version: 200, base_version: 100, base_state: v1.manifest.state, state: v2.manifest.state });
    expect(d.manifest.counts.total).toBe(v2.manifest.counts.total);
    expect(d.removed).toBeGreaterThan(2000);
    expect(d.added).toBeGreaterThan(3000);
    expect(v3.delta!.manifest).toMatchObject({ base_version: 200, base_state: v2.manifest.state, state: v3.manifest.state });
    // A delta is much smaller than the full package it replaces.
    expect(fs.statSync(d.path).size).toBeLessThan(fs.statSync(v2.path).size);
  });

  it('diff: a changed field is an upsert, identical lines are left out', () => {
    const base = [{ t: 'ipv4' as const, v: '1.1.1.1' }, { t: 'ipv4' as const, v: '2.2.2.2', conf: 50 }, { t: 'ipv4' as const, v: '3.3.3.3' }];
    const next = [{ t: 'ipv4' as const, v: '2.2.2.2', conf: 60 }, { t: 'ipv4' as const, v: '3.3.3.3' }, { t: 'ipv4' as const, v: '4.4.4.4' }];
    const { adds, removes } = diffIndicators(base, next);
    expect(removes.map((x) => x.v)).toEqual(['1.1.1.1']);
    expect(adds.map((x) => `${x.v}/${x.conf ?? ''}`)).toEqual(['2.2.2.2/60', '4.4.4.4/']);
  });

  it('full → delta → delta ends in exactly the content of the full package of the last version', async () => {
    const a = appliance('chain');
    const r1 = await importPackage(a.cfg, a.db, v1.path);
    expect(r1).toMatchObject({ type: 'full', version: 100, total: v1.manifest.counts.total });
    const r2 = await importPackage(a.cfg, a.db, v2.delta!.path);
    expect(r2).toMatchObject({ type: 'delta', version: 200, total: v2.manifest.counts.total, added: v2.delta!.added, removed: v2.delta!.removed });
    expect(stateFromDb(a.db, 'ipsum')).toBe(v2.manifest.state);
    const r3 = await importPackage(a.cfg, a.db, v3.delta!.path);
    expect(r3).toMatchObject({ type: 'delta', version: 300, total: v3.manifest.counts.total });

    const b = appliance('full3');
    await importPackage(b.cfg, b.db, v3.path);
    expect(stateFromDb(a.db, 'ipsum')).toBe(v3.manifest.state);
    const rows = (db: DB) => db.prepare('SELECT type, value, category, confidence, first_seen, last_seen, expires_at, extra FROM indicators ORDER BY type, value').all();
    expect(rows(a.db)).toEqual(rows(b.db));
    // The indicator content of a changed line really came through the delta (ipsum.txt counts → ctx).
    const all = await readPackage(v3.path);
    const withCount = all.indicators.find((i) => i.ctx && 'blacklists' in i.ctx)!;
    expect(a.db.prepare('SELECT extra FROM indicators WHERE type = ? AND value = ?').get(withCount.t, withCount.v)).toEqual({ extra: expect.stringContaining('blacklists') });
  });

  it('a delta against the wrong base is E_BASE and changes nothing (also through the CLI)', async () => {
    const a = appliance('wrongbase');
    await importPackage(a.cfg, a.db, v1.path);
    const before = dbDigest(a.dataDir);
    await expect(importPackage(a.cfg, a.db, v3.delta!.path)).rejects.toMatchObject({ code: 'E_BASE' });
    expect(dbDigest(a.dataDir)).toBe(before);
    const r = cli(['import', v3.delta!.path], { dataDir: a.dataDir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_BASE:/m);
    expect(dbDigest(a.dataDir)).toBe(before);
    // On an empty appliance a delta has no base at all.
    const e = appliance('nobase');
    const empty = dbDigest(e.dataDir);
    await expect(importPackage(e.cfg, e.db, v2.delta!.path)).rejects.toMatchObject({ code: 'E_BASE' });
    expect(dbDigest(e.dataDir)).toBe(empty);
  });

  it('a signed delta whose result state differs from its manifest is E_STATE and rolled back', async () => {
    const a = appliance('badstate');
    await importPackage(a.cfg, a.db, v1.path);
    const before = dbDigest(a.dataDir);
    const real = await readPackage(v2.path);
    const m = v2.delta!.manifest;
    // Same base, same lines, but the claimed state is the v3 state: validly signed, wrong result.
    const bad = await writePackage({
      outDir: path.join(work, 'bad'),
      privateKey: loadPrivateKey(key.privatePath),
      manifest: { feed: m.feed, kind: m.kind, type: 'delta', version: 250, created: m.created, expires: m.expires, defaults: m.defaults, base_version: 100, base_state: v1.manifest.state, state: v3.manifest.state, counts: { total: m.counts.total } },
      files: [
        { role: 'remove', indicators: [] },
        { role: 'add', indicators: real.indicators.filter((_, i) => i % 2 === 0) },
      ],
    });
    await expect(importPackage(a.cfg, a.db, bad.path)).rejects.toMatchObject({ code: 'E_STATE' });
    expect(dbDigest(a.dataDir)).toBe(before);
    expect(stateFromDb(a.db, 'ipsum')).toBe(v1.manifest.state);
  });
});
