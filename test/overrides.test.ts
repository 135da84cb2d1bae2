// Local overrides on real packages: allow/block a value, a domain subtree or a network; refusals change
// nothing; expiry; audit; a new feed version never erases them; the CLI (another process) and the admin
// API change verdicts at once.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { createToken } from '../appliance/tokens.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { addOverride, listOverrides, removeOverride } from '../lookup/overrides.ts';
import { cli, getJson } from './helpers.ts';
import { prepare, realFeeds, type Prepared } from './verdicts-fixture.ts';

let p: Prepared;
let db: DB;
let engine: LookupEngine;
let listedDomain: string;
let listedIp: string;
let listedUrl: string;

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return (e as OutpostError).code;
  }
  return 'none';
};

beforeAll(async () => {
  p = await prepare(realFeeds({ small: true }), 'outpost-overrides-');
  db = openDb(p.dataDir);
  engine = new LookupEngine(db, { fpRate: 0.001 });
  const one = (sql: string) => (db.prepare(sql).get() as { value: string }).value;
  listedDomain = one("SELECT value FROM indicators WHERE feed = 'maltrail' AND type = 'domain' AND value NOT IN (SELECT value FROM indicators WHERE kind = 'allow') ORDER BY value LIMIT 1 OFFSET 50");
  listedIp = one("SELECT value FROM indicators WHERE feed = 'ipsum' AND type = 'ipv4' AND ifnull(confidence, 80) >= 80 AND value NOT IN (SELECT value FROM indicators WHERE kind = 'allow') ORDER BY value LIMIT 1 OFFSET 10");
  listedUrl = one("SELECT value FROM indicators WHERE feed = 'urlhaus' AND value LIKE 'http://%/%' ORDER BY value LIMIT 1 OFFSET 5");
}, 240_000);

afterAll(() => {
  db?.close();
  if (p) fs.rmSync(p.work, { recursive: true, force: true });
});

describe('overrides in lookups', () => {
  it('refuses bad input with a stable code and changes nothing', () => {
    const before = db.prepare('SELECT count(*) AS n FROM overrides').get();
    const audits = db.prepare('SELECT count(*) AS n FROM audit').get();
    expect(codeOf(() => addOverride(db, { action: 'permit', value: listedDomain, reason: 'x', createdBy: 't' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'allow', value: listedDomain, reason: '  ', createdBy: 't' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'allow', value: 'not a value', reason: 'x', createdBy: 't' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'allow', value: 'com', reason: 'x', createdBy: 't' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'allow', value: listedDomain, reason: 'x', createdBy: 't', expiresAt: '2001-01-01T00:00:00Z' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'allow', value: listedDomain, reason: 'x', createdBy: 't', expiresAt: 'soon' }))).toBe('E_INPUT');
    expect(codeOf(() => addOverride(db, { action: 'block', value: '0.0.0.0/1', reason: 'x', createdBy: 't' }))).toBe('E_INPUT');
    expect(db.prepare('SELECT count(*) AS n FROM overrides').get()).toEqual(before);
    expect(db.prepare('SELECT count(*) AS n FROM audit').get()).toEqual(audits);
  });

  it('an allow override turns a listed domain and its subtree benign, showing the feed match too', () => {
    expect(engine.lookup(listedDomain).verdict).toBe('malicious');
    const row = addOverride(db, { action: 'allow', value: listedDomain.toUpperCase() + '.', reason: 'our partner', createdBy: 'test' });
    expect(row.value).toBe(listedDomain);
    expect(row.type).toBe('domain');
    expect(engine.refreshOverrides()).toBe(true);
    for (const v of [listedDomain, `www.${listedDomain}`, `hxxp://${listedDomain}/x`]) {
      const r = engine.lookup(v);
      expect(r, v).toMatchObject({ verdict: 'benign', rule: 'override:allow', confidence: 100 });
      expect(r.matches).toContainEqual(expect.objectContaining({ feed: 'local-override', feed_kind: 'allow', indicator: listedDomain }));
      expect(r.matches.some((x) => x.feed === 'maltrail')).toBe(true);
      expect(r.reasons!.join(' ')).toMatch(/our partner/);
    }
    expect(db.prepare("SELECT actor, subject FROM audit WHERE action = 'override.add' ORDER BY id DESC LIMIT 1").get()).toEqual({ actor: 'test', subject: `allow ${listedDomain}` });
    expect(codeOf(() => addOverride(db, { action: 'allow', value: listedDomain, reason: 'again', createdBy: 't' }))).toBe('E_CONFLICT');
  });

  it('a block override makes an unlisted value and every address of a network malicious', () => {
    expect(engine.lookup('unlisted-partner.example').verdict).toBe('unknown');
    addOverride(db, { action: 'block', value: 'unlisted-partner[.]example', reason: 'phishing seen here', createdBy: 'test', days: 7 });
    addOverride(db, { action: 'block', value: '203.0.113.0/24', reason: 'lab attacker', createdBy: 'test' });
    engine.refreshOverrides();
    expect(engine.lookup('unlisted-partner.example')).toMatchObject({ verdict: 'malicious', rule: 'override:block' });
    const r = engine.lookup('203.0.113.77');
    expect(r).toMatchObject({ verdict: 'malicious', rule: 'override:block' });
    // FireHOL lists TEST-NET-3 too: its match stays visible beside the override.
    expect(r.matches).toContainEqual(expect.objectContaining({ feed: 'local-override', kind: 'cidr', indicator: '203.0.113.0/24' }));
    expect(engine.lookup('203.0.114.1').verdict).toBe('unknown');
  });

  it('an override of an exact URL decides that URL only', () => {
    addOverride(db, { action: 'allow', value: listedUrl, reason: 'sinkholed', createdBy: 'test' });
    engine.refreshOverrides();
    expect(engine.lookup(listedUrl)).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    const other = engine.lookup(listedUrl + 'x');
    expect(other.rule).not.toBe('override:allow');
  });

  it('expired overrides stop applying; removed ones are kept for audit', () => {
    const row = addOverride(db, { action: 'allow', value: listedIp, reason: 'short test', createdBy: 'test', days: 1 });
    engine.refreshOverrides();
    expect(engine.lookup(listedIp).rule).toBe('override:allow');
    const tomorrow = new LookupEngine(db, { fpRate: 0.001, now: () => Date.now() / 1000 + 2 * 86_400 });
    expect(tomorrow.lookup(listedIp).verdict).toBe('malicious');
    removeOverride(db, row.id, 'test');
    engine.refreshOverrides();
    expect(engine.lookup(listedIp).verdict).toBe('malicious');
    expect(listOverrides(db).some((o) => o.id === row.id)).toBe(false);
    expect(listOverrides(db, { all: true }).find((o) => o.id === row.id)).toMatchObject({ revoked_by: 'test' });
    expect(codeOf(() => removeOverride(db, row.id, 'test'))).toBe('E_CONFLICT');
    expect(codeOf(() => removeOverride(db, 999_999, 'test'))).toBe('E_NOT_FOUND');
  });

  it('a new version of the feed (a sync) never erases overrides', async () => {
    const before = listOverrides(db).length;
    await p.add({ feed: 'maltrail', kind: 'block', files: ['maltrail/malware/lummac2.txt'], category: 'malware' }, db);
    await engine.reload();
    expect(listOverrides(db).length).toBe(before);
    expect(engine.lookup(listedDomain).rule).toBe('override:allow');
  });
});

describe('overrides from the CLI and the API', () => {
  let running: RunningAppliance;
  let admin: string;
  let lookupToken: string;

  beforeAll(async () => {
    admin = createToken(db, 'ops-admin', 'admin').token;
    lookupToken = createToken(db, 'resolver', 'lookup').token;
    running = await startAppliance(loadConfig({ dataDir: p.dataDir, port: 0, noDemo: true }, {}), createLogger('silent'));
  }, 120_000);

  afterAll(async () => {
    await running?.close();
  });

  it('CLI add/list/remove, picked up by a running engine', () => {
    const add = cli(['override', 'add', 'block', 'cli-added.example', '--reason', 'from the shell', '--days', '3', '--json'], { dataDir: p.dataDir });
    expect(add.code, add.stderr).toBe(0);
    const row = JSON.parse(add.lastLine);
    expect(row).toMatchObject({ action: 'block', type: 'domain', value: 'cli-added.example', reason: 'from the shell' });
    expect(row.created_by).toMatch(/^cli/);
    engine.refreshOverrides();
    expect(engine.lookup('x.cli-added.example').rule).toBe('override:block');
    const list = cli(['override', 'list', '--json'], { dataDir: p.dataDir });
    expect(list.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l).value)).toContain('cli-added.example');
    const bad = cli(['override', 'add', 'allow', 'cli-bad.example', '--reason', 'x', '--expires', 'yesterday'], { dataDir: p.dataDir });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^E_INPUT/m);
    const rm = cli(['override', 'remove', String(row.id)], { dataDir: p.dataDir });
    expect(rm.code, rm.stderr).toBe(0);
    engine.refreshOverrides();
    expect(engine.lookup('x.cli-added.example').verdict).toBe('unknown');
  });

  it('API: admin scope only; POST takes effect in the next lookup, DELETE undoes it', async () => {
    const url = `${running.url}/api/v1/overrides`;
    expect((await getJson(url, lookupToken)).status).toBe(403);
    const post = async (body: unknown, token = admin) => {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as any };
    };
    expect((await post({ action: 'block', value: 'api-added.example', reason: 'r' }, lookupToken)).status).toBe(403);
    expect(await post({ action: 'block', value: 'api added', reason: 'r' })).toMatchObject({ status: 400, body: { error: { code: 'E_INPUT' } } });
    const created = await post({ action: 'block', value: 'api-added.example', reason: 'seen in our proxy', days: 2 });
    expect(created.status).toBe(201);
    expect(created.body.override).toMatchObject({ value: 'api-added.example', created_by: 'token:ops-admin' });
    const look = await getJson(`${running.url}/api/v1/lookup?value=api-added.example`, lookupToken);
    expect(look.body).toMatchObject({ verdict: 'malicious', rule: 'override:block' });
    expect((await getJson(url, admin)).body.overrides.map((o: any) => o.value)).toContain('api-added.example');
    const del = await fetch(`${url}/${created.body.override.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
    expect(del.status).toBe(200);
    expect((await getJson(`${running.url}/api/v1/lookup?value=api-added.example`, lookupToken)).body.verdict).toBe('unknown');
    const again = await fetch(`${url}/${created.body.override.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
    expect(again.status).toBe(409);
  });
});
