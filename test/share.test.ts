// Share-back (sync/share.ts) between two appliances (two data dirs), both directions: each site's local
// block overrides and sightings become a signed `share-<site>` block feed; the peer refuses it until it
// trusts the site key (E_UNKNOWN_KEY), then imports it like any feed. TLP: RED never leaves, AMBER only
// with --tlp-max amber. Feeds are real lists (Maltrail, ThreatFox) marked with provider build --tlp.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import type { Indicator } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { addOverride } from '../lookup/overrides.ts';
import { SightingsWriter } from '../lookup/sightings.ts';
import { parseTlp } from '../sync/context.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { readIndicators, stagePackage } from '../sync/package-reader.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { buildShare } from '../sync/share.ts';
import { trustAdd } from '../sync/trust.ts';
import { cli, DATA, tmpDir } from './helpers.ts';

const work = tmpDir('outpost-share-');
const LIMITS = { maxPackageBytes: 1 << 30, maxUncompressedBytes: 1 << 30 };

interface Site {
  name: string;
  dir: string;
  cfg: Config;
  db: DB;
  key: ReturnType<typeof generateKeyPair>;
}

function site(name: string): Site {
  const dir = path.join(work, name);
  return { name, dir, cfg: loadConfig({ dataDir: dir }, {}), db: openDb(dir), key: generateKeyPair(path.join(work, `${name}-keys`), name) };
}

async function packageLines(tarPath: string): Promise<Indicator[]> {
  const staged = await stagePackage(tarPath, path.join(work, 'staging'), LIMITS);
  try {
    const out: Indicator[] = [];
    for (const f of staged.manifest.files) for await (const i of readIndicators(staged, f, LIMITS)) out.push(i);
    return out;
  } finally {
    staged.cleanup();
  }
}

const engineOf = (s: Site) => new LookupEngine(s.db, { fpRate: 0.001, worker: false, filterDir: null });

/** A listed value whose every match comes from `feed` (so its marking is that feed's alone). */
function onlyIn(engine: LookupEngine, feed: string, candidates: string[], skip = 0): string {
  let seen = 0;
  for (const v of candidates) {
    const r = engine.lookup(v);
    if (r.verdict === 'malicious' && r.matches.length && r.matches.every((m) => m.feed === feed) && seen++ >= skip) return v;
  }
  throw new Error(`no value only in ${feed}`);
}

const lines = (file: string) => fs.readFileSync(path.join(DATA, file), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

let A: Site;
let B: Site;
const values = {} as Record<'green' | 'greenRare' | 'amber' | 'red', string>;

beforeAll(async () => {
  A = site('a');
  B = site('b');
  const provider = generateKeyPair(path.join(work, 'provider'), 'provider');
  const out = path.join(work, 'provider-out');
  const feeds = [
    { feed: 'emotet', tlp: 'GREEN', file: 'maltrail/malware/emotet.txt' },
    { feed: 'remcos', tlp: 'AMBER', file: 'maltrail/malware/remcos.txt' },
    { feed: 'threatfox', tlp: 'RED', file: 'threatfox/ips.txt' },
  ];
  const built = [];
  for (const f of feeds) built.push(await buildPackage({ feed: f.feed, keyPath: provider.privatePath, outDir: out, files: [path.join(DATA, f.file)], tlp: f.tlp }));
  for (const s of [A, B]) {
    trustAdd(s.db, provider.publicPath);
    for (const b of built) await importPackage(s.cfg, s.db, b.path);
  }
  const e = engineOf(A);
  const emotet = lines('maltrail/malware/emotet.txt').filter((l) => /^[a-z0-9.-]+\.[a-z]{2,}$/.test(l));
  values.green = onlyIn(e, 'emotet', emotet);
  values.greenRare = onlyIn(e, 'emotet', emotet, 1);
  values.amber = onlyIn(e, 'remcos', lines('maltrail/malware/remcos.txt').filter((l) => /^[a-z0-9.-]+\.[a-z]{2,}$/.test(l)));
  values.red = onlyIn(e, 'threatfox', lines('threatfox/ips.txt'));
  // Site A's clients saw these values: 5 times each, the rare one twice.
  const sw = new SightingsWriter(A.db);
  for (const [v, n] of [[values.green, 5], [values.greenRare, 2], [values.amber, 5], [values.red, 5]] as const) {
    for (let i = 0; i < n; i++) sw.record(e.lookup(v), 'resolver-1');
  }
  sw.flush();
  // A's admins blocked a value of their own, and a RED-listed address (which keeps its RED marking).
  addOverride(A.db, { action: 'block', value: 'evil-site-a.example', reason: 'phishing seen at site A', createdBy: 'admin' });
  addOverride(A.db, { action: 'block', value: values.red, reason: 'C2 of incident 7', createdBy: 'admin' });
  addOverride(B.db, { action: 'block', value: 'evil-site-b.example', reason: 'seen at site B', createdBy: 'admin' });
}, 180_000);

afterAll(() => {
  A?.db.close();
  B?.db.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('share build honours TLP', () => {
  it('default (--tlp-max green): GREEN findings with their context; RED, AMBER and rare sightings withheld', async () => {
    const r = await buildShare(A.cfg, A.db, { keyPath: A.key.privatePath, outDir: path.join(work, 'share-a1'), site: 'a', now: new Date('2026-11-20T10:00:00Z') });
    expect(r.feed).toBe('share-a');
    expect(r.manifest.kind).toBe('block');
    const got = await packageLines(r.path);
    const byValue = new Map(got.map((i) => [i.v, i]));
    expect([...byValue.keys()].sort()).toEqual([values.green, 'evil-site-a.example'].sort());
    expect(byValue.get(values.green)!.ctx).toMatchObject({ tlp: 'GREEN', source: 'local-sighting', sightings: 5, family: 'emotet', verdict: 'malicious' });
    expect(byValue.get('evil-site-a.example')!.ctx).toEqual({ source: 'local-override', tlp: 'GREEN' }); // reasons stay home unless asked
    expect(r.withheld).toMatchObject({ red: 2, tlp: 1, below_threshold: 1 });
    for (const i of got) expect(parseTlp(i.ctx?.tlp)).not.toBe('RED');
  });

  it('--tlp-max amber adds the AMBER finding, still no RED line', async () => {
    const r = await buildShare(A.cfg, A.db, { keyPath: A.key.privatePath, outDir: path.join(work, 'share-a2'), site: 'a', tlpMax: 'amber', withReasons: true, now: new Date('2026-11-20T11:00:00Z') });
    const got = await packageLines(r.path);
    expect(got.map((i) => i.v).sort()).toEqual([values.green, values.amber, 'evil-site-a.example'].sort());
    expect(got.find((i) => i.v === values.amber)!.ctx!.tlp).toBe('AMBER');
    expect(got.find((i) => i.v === 'evil-site-a.example')!.ctx!.description).toBe('phishing seen at site A');
    expect(got.some((i) => i.v === values.red || parseTlp(i.ctx?.tlp) === 'RED')).toBe(false);
    expect(r.withheld.red).toBe(2);
    await expect(buildShare(A.cfg, A.db, { keyPath: A.key.privatePath, outDir: work, tlpMax: 'red' as 'amber' })).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});

describe('two appliances exchange findings in both directions', () => {
  it('A → B: refused without the site key, imported as a normal feed after trust add', async () => {
    const r = await buildShare(A.cfg, A.db, { keyPath: A.key.privatePath, outDir: path.join(work, 'share-a3'), site: 'a', now: new Date('2026-11-20T12:00:00Z') });
    await expect(importPackage(B.cfg, B.db, r.path)).rejects.toMatchObject({ code: 'E_UNKNOWN_KEY' });
    expect(engineOf(B).lookup('evil-site-a.example').verdict).toBe('unknown');
    trustAdd(B.db, A.key.publicPath);
    const imp = await importPackage(B.cfg, B.db, r.path);
    expect(imp).toMatchObject({ feed: 'share-a', total: 2 });
    const res = engineOf(B).lookup('evil-site-a.example');
    expect(res.verdict).toBe('malicious');
    expect(res.matches[0]).toMatchObject({ feed: 'share-a', context: { source: 'local-override', tlp: 'GREEN' } });
  });

  it('B → A through the CLI: share build prints the package path last; A imports it after trusting B', async () => {
    const out = path.join(work, 'share-b');
    const res = cli(['share', 'build', '--key', B.key.privatePath, '--out', out], { dataDir: B.dir });
    expect(res.code, res.stderr).toBe(0);
    expect(res.lastLine).toMatch(/share-[0-9a-f]{16}-\d+-full\.tar$/);
    expect(fs.existsSync(res.lastLine)).toBe(true);
    const got = await packageLines(res.lastLine);
    expect(got.map((i) => i.v)).toEqual(['evil-site-b.example']); // B saw nothing often enough; A's share came in as a feed, not a finding
    await expect(importPackage(A.cfg, A.db, res.lastLine)).rejects.toMatchObject({ code: 'E_UNKNOWN_KEY' });
    trustAdd(A.db, B.key.publicPath);
    await importPackage(A.cfg, A.db, res.lastLine);
    expect(engineOf(A).lookup('evil-site-b.example').verdict).toBe('malicious');
    const bad = cli(['share', 'build', '--key', B.key.privatePath, '--out', out, '--tlp-max', 'red'], { dataDir: B.dir });
    expect(bad.code).toBe(2);
  }, 120_000);
});
