// `outpost rollback --feed` on real data: v1, v2, rollback → exactly v1's rows, version and state; the
// rolled-back-from version stays refused, a newer one is accepted. Also when the previous package was a
// delta (rebuilt from the kept chain: full v1 + delta v2). Retention of kept packages: after each apply
// only what rolling back (and the mirror) can still use stays; OUTPOST_KEEP_PACKAGES=all keeps everything.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA, cli, dbDigest, tmpDir } from './helpers.ts';
import { feedDigest } from './sync-b-fixture.ts';

const A = ['maltrail/malware/emotet.txt', 'ipsum/levels/3.txt', 'signature-base/hash-iocs.txt'].map((f) => path.join(DATA, f));
const B = ['maltrail/malware/emotet.txt', 'maltrail/malware/lummac2.txt', 'maltrail/malware/asyncrat.txt', 'urlhaus/urls.csv'].map((f) => path.join(DATA, f));
const C = ['maltrail/malware/lummac2.txt', 'firehol/firehol_level1.netset'].map((f) => path.join(DATA, f));

describe('rollback', () => {
  const work = tmpDir('outpost-rollback-');
  const out = path.join(work, 'out');
  const key = path.join(work, 'keys', 'provider.key');
  const pub = path.join(work, 'keys', 'provider.pub');
  const pkg: Record<string, string> = {};

  const build = (version: number, files: string[], base?: string) => {
    const r = cli(['provider', 'build', '--feed', 'threats', '--key', key, '--out', out, '--version', String(version), ...(base ? ['--base', base] : []), ...files]);
    expect(r.code, r.stderr).toBe(0);
    return r.lastLine;
  };
  const fresh = (name: string) => {
    const dir = path.join(work, name);
    expect(cli(['trust', 'add', pub], { dataDir: dir }).code).toBe(0);
    return dir;
  };
  const importOk = (dir: string, p: string) => {
    const r = cli(['import', p], { dataDir: dir });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.lastLine);
  };
  const digest = (dir: string) => feedDigest(path.join(dir, 'outpost.db'), 'threats');

  beforeAll(() => {
    expect(cli(['provider', 'keygen', '--out', path.join(work, 'keys')]).code).toBe(0);
    pkg.v1 = build(1, A);
    pkg.d2 = build(2, B, pkg.v1);
    pkg.v2 = path.join(out, 'threats-2-full.tar');
    pkg.d3 = build(3, C, pkg.v2);
    pkg.v3 = path.join(out, 'threats-3-full.tar');
    pkg.d4 = build(4, A, pkg.v3);
    pkg.v4 = path.join(out, 'threats-4-full.tar');
    pkg.d5 = build(5, B, pkg.v4);
    expect(pkg.d2).toMatch(/threats-2-delta\.tar$/);
    expect(fs.existsSync(pkg.v2) && fs.existsSync(pkg.v3)).toBe(true);
  }, 180_000);

  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('v1, v2 (full), rollback → exactly v1; v2 stays refused; v3 is accepted', () => {
    const dir = fresh('full');
    importOk(dir, pkg.v1);
    const afterV1 = digest(dir);
    importOk(dir, pkg.v2);
    expect(digest(dir)).not.toBe(afterV1);

    const r = cli(['rollback', '--feed', 'threats'], { dataDir: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.lastLine)).toMatchObject({ ok: true, feed: 'threats', from_version: 2, to_version: 1, floor_version: 2 });
    expect(digest(dir)).toBe(afterV1);

    // The pulled-again v2 is refused and changes nothing; so is a second rollback.
    const before = dbDigest(dir);
    const again = cli(['import', pkg.v2], { dataDir: dir });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^E_ROLLBACK: .*rolled back/m);
    const twice = cli(['rollback', '--feed', 'threats'], { dataDir: dir });
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/^E_CONFLICT: /m);
    expect(dbDigest(dir)).toBe(before);

    importOk(dir, pkg.v3);
    const db = new Database(path.join(dir, 'outpost.db'), { readonly: true });
    const audit = db.prepare("SELECT code, detail FROM audit WHERE action = 'feed.rollback' ORDER BY id").all() as { code: string | null; detail: string }[];
    const gens = db.prepare("SELECT action, version FROM generations WHERE feed = 'threats' ORDER BY id").all();
    db.close();
    expect(audit.map((a) => a.code)).toEqual([null, 'E_CONFLICT']);
    expect(JSON.parse(audit[0].detail)).toMatchObject({ from: 2, to: 1, floor: 2 });
    expect(gens).toEqual([
      { action: 'apply-full', version: 1 }, { action: 'apply-full', version: 2 }, { action: 'rollback', version: 1 }, { action: 'apply-full', version: 3 },
    ]);
  });

  it('when the previous package was a delta, it is rebuilt from the kept chain (full v1 + delta v2)', () => {
    const dir = fresh('delta');
    importOk(dir, pkg.v1);
    expect(importOk(dir, pkg.d2)).toMatchObject({ type: 'delta', version: 2 });
    const afterV2 = digest(dir);
    expect(importOk(dir, pkg.d3)).toMatchObject({ type: 'delta', version: 3 });
    expect(digest(dir)).not.toBe(afterV2);

    const r = cli(['rollback', '--feed', 'threats'], { dataDir: dir });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.lastLine);
    expect(res).toMatchObject({ from_version: 3, to_version: 2, floor_version: 3 });
    expect(res.steps.map((s: string) => path.basename(s))).toEqual([expect.stringMatching(/^1-full-/), expect.stringMatching(/^2-delta-/)]);
    expect(digest(dir)).toBe(afterV2);
    // Its content equals a clean import of the full v2.
    const ref = fresh('ref');
    importOk(ref, pkg.v2);
    expect(digest(dir)).toBe(digest(ref));
  });

  it('refuses without a previous version, changing nothing', () => {
    const dir = fresh('single');
    importOk(dir, pkg.v1);
    const before = dbDigest(dir);
    const r = cli(['rollback', '--feed', 'threats'], { dataDir: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_NOT_FOUND: .*no previous version/m);
    const none = cli(['rollback', '--feed', 'nope'], { dataDir: dir });
    expect(none.stderr).toMatch(/^E_NOT_FOUND: /m);
    expect(dbDigest(dir)).toBe(before);
  });

  it('retention: after each apply the chains of the current and previous version stay, older packages go; rollback still works', () => {
    const kept = (dir: string) => fs.readdirSync(path.join(dir, 'packages', 'threats')).map((n) => n.replace(/-[0-9a-f]{16}\.tar$/, '')).sort();
    const dir = fresh('retention');
    const all = fresh('retention-all');
    const chain = [pkg.v1, pkg.d2, pkg.d3, pkg.v4, pkg.d5];
    const expected = [
      ['1-full'],
      ['1-full', '2-delta'],
      ['1-full', '2-delta', '3-delta'], // 3 is a delta on 2, a delta on 1: the whole chain rebuilds 3
      ['1-full', '2-delta', '3-delta', '4-full'], // the previous version (3) still needs its chain
      ['4-full', '5-delta'], // current 5 = 4-full + 5-delta, previous 4 = 4-full
    ];
    chain.forEach((p, i) => {
      importOk(dir, p);
      expect(kept(dir), path.basename(p)).toEqual(expected[i]);
      const r = cli(['import', p], { dataDir: all, env: { OUTPOST_KEEP_PACKAGES: 'all' } });
      expect(r.code, r.stderr).toBe(0);
    });
    expect(kept(all)).toEqual(['1-full', '2-delta', '3-delta', '4-full', '5-delta']);
    const db = new Database(path.join(dir, 'outpost.db'), { readonly: true });
    const prunes = db.prepare("SELECT code, subject, detail FROM audit WHERE action = 'package.prune' ORDER BY id").all() as { code: string | null; subject: string; detail: string }[];
    db.close();
    expect(prunes).toHaveLength(1);
    expect(prunes[0]).toMatchObject({ code: null, subject: 'threats' });
    expect(JSON.parse(prunes[0].detail).removed.map((n: string) => n.slice(0, n.lastIndexOf('-')))).toEqual(['1-full', '2-delta', '3-delta']);
    // A copy of the data dir elsewhere (a restore, a move) still names its packages by their old paths.
    const moved = path.join(work, 'retention-moved');
    fs.cpSync(dir, moved, { recursive: true });
    // Rolling back from 5 needs only what stayed.
    const r = cli(['rollback', '--feed', 'threats'], { dataDir: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.lastLine)).toMatchObject({ from_version: 5, to_version: 4 });
    expect(kept(dir)).toEqual(['4-full', '5-delta']);
    // With the original packages gone, the copy finds its own by file name.
    fs.rmSync(path.join(dir, 'packages'), { recursive: true, force: true });
    const m = cli(['rollback', '--feed', 'threats'], { dataDir: moved });
    expect(m.code, m.stderr).toBe(0);
    expect(JSON.parse(m.lastLine)).toMatchObject({ from_version: 5, to_version: 4 });
    expect(kept(moved)).toEqual(['4-full', '5-delta']);
    expect(cli(['status'], { dataDir: dir, env: { OUTPOST_KEEP_PACKAGES: 'some' } }).stderr).toMatch(/^E_CONFIG: OUTPOST_KEEP_PACKAGES must be rollback or all/m);
  }, 120_000);
});
