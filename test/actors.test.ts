// Actors and families (sync/reference.ts, lookup/actors.ts) on real data: the MISP galaxy and the ATT&CK
// ICS bundle as a signed reference package, ESET events and signature-base hashes as a block feed, one
// real appliance (data dir + server on 127.0.0.1). Lookups carry families, file names and actors; an
// alias finds the same group as its canonical name; actor command and API list linked indicators.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { createToken } from '../appliance/tokens.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { actorReport, findEntities, referenceIndex } from '../lookup/actors.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { buildReferencePackage } from '../sync/reference.ts';
import { trustAdd } from '../sync/trust.ts';
import { DATA, tmpDir } from './helpers.ts';

const work = tmpDir('outpost-actors-');
const dataDir = path.join(work, 'appliance');
const galaxy = JSON.parse(fs.readFileSync(path.join(DATA, 'misp-galaxy/threat-actor.json'), 'utf8')).values as { value: string; meta?: { synonyms?: string[] } }[];
const bouncer = JSON.parse(fs.readFileSync(path.join(DATA, 'eset/moustachedbouncer/misp-moustachedbouncer.event.json'), 'utf8')).response[0].Event;
let key: ReturnType<typeof generateKeyPair>;
let refPath: string;
let db: DB;
let engine: LookupEngine;

beforeAll(async () => {
  key = generateKeyPair(path.join(work, 'keys'), 'provider');
  const ref = await buildReferencePackage({ keyPath: key.privatePath, outDir: path.join(work, 'out'), files: [path.join(DATA, 'misp-galaxy/threat-actor.json'), path.join(DATA, 'mitre-cti/ics-attack.json')] });
  refPath = ref.path;
  const feed = await buildPackage({
    feed: 'eset', keyPath: key.privatePath, outDir: path.join(work, 'out'), tlp: 'GREEN',
    files: ['eset/moustachedbouncer/misp-moustachedbouncer.event.json', 'eset/mozi/mozi.misp-event.json', 'signature-base/hash-iocs.txt', 'maltrail/malware/apt_lazarus.txt'].map((f) => path.join(DATA, f)),
  });
  db = openDb(dataDir);
  const cfg = loadConfig({ dataDir }, {});
  await expect(importPackage(cfg, db, refPath)).rejects.toMatchObject({ code: 'E_UNKNOWN_KEY' });
  trustAdd(db, key.publicPath);
  const r = await importPackage(cfg, db, refPath);
  expect(r).toMatchObject({ feed: 'reference', total: ref.counts.actor + ref.counts.family + ref.counts.technique });
  await importPackage(cfg, db, feed.path);
  engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null });
}, 120_000);

afterAll(() => {
  db?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('reference package', () => {
  it('holds every galaxy actor and the ATT&CK ICS groups, families and techniques; a replay is refused', async () => {
    const idx = referenceIndex(db);
    const kinds = { actor: 0, family: 0, technique: 0 } as Record<string, number>;
    for (const e of idx.byId.values()) kinds[e.kind]++;
    expect(kinds.actor).toBe(galaxy.length + 14); // 16 ICS intrusion sets, 2 revoked
    expect(kinds.family).toBeGreaterThanOrEqual(20);
    expect(kinds.technique).toBeGreaterThanOrEqual(80);
    await expect(importPackage(loadConfig({ dataDir }, {}), db, refPath)).rejects.toMatchObject({ code: 'E_ROLLBACK' });
  });

  it('an alias of a galaxy actor finds the same actor as its canonical name (every synonym of real clusters)', () => {
    const idx = referenceIndex(db);
    let checked = 0;
    for (const name of ['APT28', 'Lazarus Group', 'APT29', 'Turla', 'Sandworm']) {
      const cluster = galaxy.find((c) => c.value === name)!;
      const canonical = findEntities(idx, name)[0];
      expect(canonical.name).toBe(name);
      for (const syn of cluster.meta?.synonyms ?? []) {
        const hits = findEntities(idx, syn, ['actor']);
        // A synonym some other cluster also claims may rank that one first; it must still be found.
        expect(hits.map((h) => h.id), `${syn} → ${name}`).toContain(canonical.id);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(80);
    expect(findEntities(idx, 'fancy bear')[0].id).toBe(findEntities(idx, 'APT28')[0].id);
    expect(findEntities(idx, 'Sofacy')[0].id).toBe(findEntities(idx, 'apt-28')[0].id);
    // The ATT&CK group and the galaxy cluster for Sandworm know each other.
    const team = findEntities(idx, 'Sandworm Team')[0];
    expect(team.source).toBe('mitre-attack');
    expect(team.same_as).toContain(findEntities(idx, 'Sandworm')[0].id);
  });
});

describe('lookups carry families, file names and actors', () => {
  it('a hash from an ESET event returns its family (from the ESET detection) and file name, and the event\'s actor', () => {
    const files = bouncer.Object.filter((o: any) => o.name === 'file');
    const byUuid = new Map(bouncer.Object.map((o: any) => [o.uuid, o]));
    const nightclub = files.filter((o: any) => (o.ObjectReference ?? []).some((r: any) => /Nightclub/.test(JSON.stringify((byUuid.get(r.referenced_uuid) as any)?.Attribute ?? []))));
    expect(nightclub.length).toBeGreaterThan(3);
    for (const o of nightclub) {
      const filename = o.Attribute.find((a: any) => a.object_relation === 'filename').value;
      for (const rel of ['md5', 'sha1', 'sha256']) {
        const hash = o.Attribute.find((a: any) => a.object_relation === rel).value;
        const r = engine.lookup(hash);
        expect(r.verdict).toBe('malicious');
        expect(r.families?.map((f) => f.name)).toEqual(['Nightclub']);
        expect(r.matches[0].context).toMatchObject({ sample: { file_name: filename, family: 'Nightclub', md5: expect.any(String), sha1: expect.any(String), sha256: expect.any(String) }, tlp: 'GREEN' });
        expect(r.actors?.map((a) => a.name)).toEqual(['MoustachedBouncer']);
      }
    }
  });

  it('a Maltrail APT trail resolves to its actor through the trail\'s aliases; a miss carries nothing', () => {
    const r = engine.lookup('0927.vercel.app');
    expect(r.actors?.[0]).toMatchObject({ name: 'Lazarus Group', source: 'misp-galaxy' });
    expect(r.actors?.[0].aliases).toEqual(expect.arrayContaining(['Hidden Cobra', 'Labyrinth Chollima']));
    const miss = engine.lookup('9.9.9.9');
    expect(miss.actors).toBeUndefined();
    expect(miss.families).toBeUndefined();
  });
});

describe('actor command and API', () => {
  let running: RunningAppliance;
  let token: string;
  beforeAll(async () => {
    token = createToken(db, 'actors-test', 'lookup').token;
    running = await startAppliance(loadConfig({ dataDir: path.join(work, 'served'), port: 0, noDemo: true }, {}), createLogger('silent'));
  }, 120_000);
  afterAll(async () => {
    await running?.close();
  });

  it('lists the indicators here linked to an actor, the same by any alias', () => {
    const byName = actorReport(db, 'MoustachedBouncer', { limit: 1000 });
    const sha = bouncer.Object.find((o: any) => o.name === 'file').Attribute.find((a: any) => a.type === 'sha256').value;
    expect(byName.indicators.map((i) => i.value)).toContain(sha);
    expect(byName.total).toBe(byName.indicators.length);
    const lazarus = actorReport(db, 'Lazarus Group', { limit: 5 });
    const viaAlias = actorReport(db, 'hidden cobra', { limit: 5 });
    expect(viaAlias.entity.id).toBe(lazarus.entity.id);
    expect(viaAlias.total).toBe(lazarus.total);
    expect(lazarus.total).toBeGreaterThan(4000); // the apt_lazarus trail
    expect(lazarus.indicators).toHaveLength(5);
    // A family the reference data lacks but indicators carry is still found by name.
    expect(actorReport(db, 'Mozi').total).toBeGreaterThan(10);
    expect(() => actorReport(db, 'no such group anywhere')).toThrow(expect.objectContaining({ code: 'E_NOT_FOUND' }));
    expect(() => actorReport(db, '  ')).toThrow(expect.objectContaining({ code: 'E_INPUT' }));
  });

  it('GET /api/v1/actors and ?fields= on the lookup API', async () => {
    // The served appliance is a second data dir: copy this one's state in through the same packages.
    const sdb = running.db;
    trustAdd(sdb, key.publicPath);
    const cfg = loadConfig({ dataDir: path.join(work, 'served') }, {});
    await importPackage(cfg, sdb, refPath);
    for (const f of fs.readdirSync(path.join(work, 'out')).filter((f) => f.startsWith('eset-'))) await importPackage(cfg, sdb, path.join(work, 'out', f));
    await running.engine.reload();
    const t = createToken(sdb, 'api', 'lookup').token;
    const get = (p: string) => fetch(`${running.url}${p}`, { headers: { authorization: `Bearer ${t}` } });
    const a = await get('/api/v1/actors?name=' + encodeURIComponent('FANCY BEAR'));
    expect(a.status).toBe(200);
    expect((await a.json()).entity.name).toBe('APT28');
    const b = await get('/api/v1/actors?name=MoustachedBouncer&limit=2');
    const body = await b.json();
    expect(body.indicators).toHaveLength(2);
    expect(body.total).toBeGreaterThan(100);
    expect((await get('/api/v1/actors?name=nobody-at-all')).status).toBe(404);
    expect((await get('/api/v1/actors')).status).toBe(400);
    const hash = bouncer.Object.find((o: any) => o.name === 'file').Attribute.find((x: any) => x.type === 'md5').value;
    const full = await (await get(`/api/v1/lookup?value=${hash}`)).json();
    expect(full.actors[0].name).toBe('MoustachedBouncer');
    const trimmed = await (await get(`/api/v1/lookup?value=${hash}&fields=verdict,confidence`)).json();
    expect(trimmed).toEqual({ verdict: 'malicious', confidence: full.confidence });
    const bad = await get(`/api/v1/lookup?value=${hash}&fields=verdit`);
    expect(bad.status).toBe(400);
    expect((await bad.json()).error.code).toBe('E_INPUT');
    const post = await fetch(`${running.url}/api/v1/lookup?fields=value,verdict,families`, {
      method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: JSON.stringify({ values: [hash, '9.9.9.9'] }),
    });
    expect((await post.json()).results).toEqual([{ value: hash, verdict: 'malicious' }, { value: '9.9.9.9', verdict: 'unknown' }]);
    expect(token).toBeTruthy();
  }, 120_000);
});
