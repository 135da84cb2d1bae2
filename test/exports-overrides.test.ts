// Exports agree with lookups (issue 8): local overrides and the per-type default expiry, on real signed
// packages imported through the normal verify-and-apply path, a real `serve` (admin API, export API, the
// export files it regenerates in its worker after an override change) and real consumers (unbound loads
// the regenerated RPZ zone).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { FeedPolicy } from '../appliance/freshness.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { createToken } from '../appliance/tokens.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { exportFormat, writeExportFiles, type ExportStats } from '../lookup/exports/index.ts';
import { mispEventUuid } from '../lookup/exports/misp-feed.ts';
import { addOverride, overridesState, removeOverride } from '../lookup/overrides.ts';
import type { ExpiryDays } from '../sync/expiry.ts';
import { collect } from './exports-fixture.ts';
import { getJson } from './helpers.ts';
import { startUnbound, type Unbound } from './unbound-fixture.ts';
import { prepare, type Prepared } from './verdicts-fixture.ts';

const DAY = 86_400;
const UNLISTED_IP = '198.51.100.77'; // TEST-NET-2: no feed here lists it, and exports do not treat it as internal

let p: Prepared;
let db: DB;
let running: RunningAppliance;
let admin: string;
let exporter: string;
let looker: string;
let exportsDir: string;
/** Listed by maltrail only, no allow feed involved: one gets an allow override, the other stays listed. */
let allowedDomain: string;
let listedDomain: string;
/** An IPsum address no other feed lists: allow-overridden, then the override is removed. */
let allowedIp: string;
/** On the tranco allow feed: a block override makes it blocked anyway (lookups: override:block). */
let allowFeedDomain: string;

const lines = (file: string) => fs.readFileSync(path.join(exportsDir, file), 'utf8').split('\n');
const api = async (method: string, route: string, body?: unknown) => {
  const res = await fetch(`${running.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${admin}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as any };
};
const exported = async (format: string) => {
  const res = await fetch(`${running.url}/api/v1/export/${format}`, { headers: { authorization: `Bearer ${exporter}` } });
  expect(res.status).toBe(200);
  return res.text();
};
const verdict = async (value: string) => (await getJson(`${running.url}/api/v1/lookup?value=${encodeURIComponent(value)}`, looker)).body;

/** Waits until serve's worker has rewritten the files for the current overrides (exports.json records it). */
async function filesReflectOverrides(): Promise<void> {
  const want = overridesState(db);
  for (;;) {
    try {
      const summary = JSON.parse(fs.readFileSync(path.join(exportsDir, 'exports.json'), 'utf8')) as { overrides?: string };
      if (summary.overrides === want) return;
    } catch {
      /* not written yet, or being replaced */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  p = await prepare(
    [
      { feed: 'ipsum', kind: 'block', files: ['ipsum/levels/3.txt'], category: 'attacker' },
      { feed: 'maltrail', kind: 'block', files: ['maltrail/malware/lummac2.txt'], category: 'malware' },
      { feed: 'tranco', kind: 'allow', files: ['known-benign/warninglists/tranco10k.json'], category: 'known-benign' },
    ],
    'outpost-export-overrides-',
  );
  db = openDb(p.dataDir);
  const one = (sql: string) => (db.prepare(sql).get() as { value: string }).value;
  const maltrailOnly = `SELECT value FROM indicators WHERE feed = 'maltrail' AND type = 'domain' AND value LIKE '%.%'
      AND value NOT IN (SELECT value FROM indicators WHERE kind = 'allow') ORDER BY value`;
  allowedDomain = one(`${maltrailOnly} LIMIT 1 OFFSET 10`);
  listedDomain = one(`${maltrailOnly} LIMIT 1 OFFSET 20`);
  allowedIp = one(`SELECT value FROM indicators WHERE feed = 'ipsum' AND type = 'ipv4'
      AND value NOT IN (SELECT value FROM indicators WHERE feed != 'ipsum') ORDER BY value LIMIT 1 OFFSET 30`);
  allowFeedDomain = one(`SELECT value FROM indicators WHERE feed = 'tranco' AND type = 'domain' AND value LIKE '%.%' AND value NOT LIKE '%.%.%' ORDER BY value LIMIT 1 OFFSET 100`);
  admin = createToken(db, 'export-admin', 'admin').token;
  exporter = createToken(db, 'export-reader', 'export').token;
  looker = createToken(db, 'export-looker', 'lookup').token;
  const cfg = loadConfig({ dataDir: p.dataDir, port: 0, noDemo: true }, {});
  running = await startAppliance(cfg, createLogger('silent'));
  exportsDir = path.join(p.dataDir, 'exports');
  // serve writes the export files at start when there are none (the imports happened before it ran).
  while (!fs.existsSync(path.join(exportsDir, 'exports.json'))) await new Promise((r) => setTimeout(r, 100));
}, 240_000);

afterAll(async () => {
  await running?.close();
  db?.close();
  if (p) fs.rmSync(p.work, { recursive: true, force: true });
});

describe('local overrides change every export as they change lookups', () => {
  let unbound: Unbound | undefined;
  afterAll(async () => {
    await unbound?.close();
  });

  it('before any override: the listed values are exported, the unlisted address is not', async () => {
    const rpz = lines('outpost.rpz');
    expect(rpz).toContain(`${allowedDomain} CNAME .`);
    expect(rpz).toContain(`${listedDomain} CNAME .`);
    expect(rpz).toContain(`${allowFeedDomain} CNAME rpz-passthru.`);
    expect(lines('suricata/ipv4.lst')).toContain(allowedIp);
    expect(lines('suricata/ipv4.lst')).not.toContain(UNLISTED_IP);
    expect((await verdict(UNLISTED_IP)).verdict).toBe('unknown');
  });

  it('overrides set through the admin API show in /api/v1/export/<format> at once, as lookups decide', async () => {
    for (const body of [
      { action: 'allow', value: allowedDomain, reason: 'our partner, ticket 4711' },
      { action: 'allow', value: allowedIp, reason: 'our VPN egress' },
      { action: 'block', value: UNLISTED_IP, reason: 'seen in proxy logs', days: 30 },
      { action: 'block', value: allowFeedDomain, reason: 'compromised, incident 12' },
    ]) expect((await api('POST', '/api/v1/overrides', body)).status).toBe(201);

    expect(await verdict(allowedDomain)).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    expect(await verdict(`www.${allowedDomain}`)).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    expect(await verdict(allowedIp)).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    expect(await verdict(UNLISTED_IP)).toMatchObject({ verdict: 'malicious', rule: 'override:block' });
    expect(await verdict(allowFeedDomain)).toMatchObject({ verdict: 'malicious', rule: 'override:block' });
    expect((await verdict(listedDomain)).verdict).toBe('malicious');

    const csv = (await exported('csv')).split('\r\n');
    const blockRow = (await api('GET', '/api/v1/overrides')).body.overrides.find((o: any) => o.value === UNLISTED_IP);
    // value,type,feed,category,confidence,first_seen,last_seen,expires_at: first seen when added, expiring with the override
    expect(csv).toContain(`${UNLISTED_IP},ipv4,local-override,local-block,100,${blockRow.created_at},,${blockRow.expires_at}`);
    expect(csv.find((l) => l.startsWith(`${allowFeedDomain},`))).toMatch(/^[^,]+,domain,local-override,local-block,100,/);
    expect(csv.some((l) => l.startsWith(`${allowedIp},`))).toBe(false);
    expect(csv.some((l) => l.startsWith(`${allowedDomain},`))).toBe(false);
    expect(csv.some((l) => l.startsWith(`${listedDomain},`))).toBe(true);

    const iprep = (await exported('suricata-iprep')).split('\n');
    expect(iprep).toContain(`${UNLISTED_IP},10,127`); // category Other, confidence 100 → score 127
    expect(iprep.some((l) => l.startsWith(`${allowedIp},`))).toBe(false);

    const zone = (await exported('rpz')).split('\n');
    expect(zone).toContain(`${allowedDomain} CNAME rpz-passthru.`);
    expect(zone).toContain(`*.${allowedDomain} CNAME rpz-passthru.`);
    expect(zone).not.toContain(`${allowedDomain} CNAME .`);
    expect(zone).toContain(`${allowFeedDomain} CNAME .`);
    expect(zone).not.toContain(`${allowFeedDomain} CNAME rpz-passthru.`); // one owner, one policy
    expect(zone).toContain(`${listedDomain} CNAME .`);

    const zeek = (await exported('zeek-intel')).split('\n');
    expect(zeek.find((l) => l.startsWith(`${UNLISTED_IP}\t`))).toBe(`${UNLISTED_IP}\tIntel::ADDR\toutpost:local-override\tlocal-block; confidence 100; local block override: seen in proxy logs\t-`);
    const stix = JSON.parse(await exported('stix')) as { objects: any[] };
    expect(stix.objects.find((o) => o.name === UNLISTED_IP)).toMatchObject({ confidence: 100, description: 'Local block override: seen in proxy logs', x_outpost_feeds: ['local-override'] });
    expect(stix.objects.some((o) => o.name === allowedIp)).toBe(false);

    // TAXII: the block overrides are a collection of their own, with the same object as the STIX export.
    const taxii = async (route: string) => {
      const res = await fetch(`${running.url}/taxii2/outpost/${route}`, { headers: { accept: 'application/taxii+json;version=2.1', authorization: `Bearer ${exporter}` } });
      expect(res.status).toBe(200);
      return res.json() as Promise<any>;
    };
    const local = (await taxii('collections/')).collections.find((c: any) => c.title === 'local-override');
    expect(local).toBeDefined();
    const objects = (await taxii(`collections/${local.id}/objects/`)).objects as any[];
    expect(objects.find((o) => o.name === UNLISTED_IP)).toEqual(stix.objects.find((o) => o.name === UNLISTED_IP));
    expect(objects.some((o) => o.name === allowFeedDomain)).toBe(true);
  });

  it('serve regenerates the export files after the change (in its worker)', async () => {
    await filesReflectOverrides();
    const ipv4 = lines('suricata/ipv4.lst');
    expect(ipv4).toContain(UNLISTED_IP);
    expect(ipv4).not.toContain(allowedIp);
    const iprep = lines('suricata/outpost.list');
    expect(iprep).toContain(`${UNLISTED_IP},10,127`);
    expect(iprep.some((l) => l.startsWith(`${allowedIp},`))).toBe(false);
    expect(lines('outpost.csv').some((l) => l.startsWith(`${UNLISTED_IP},ipv4,local-override,local-block,100,`))).toBe(true);
    const summary = JSON.parse(fs.readFileSync(path.join(exportsDir, 'exports.json'), 'utf8'));
    expect(summary.files['outpost.csv'].skipped['override-allow']).toBeGreaterThanOrEqual(2);
    // MISP: the block overrides as an event of their own, with the reason in the comment.
    const event = JSON.parse(fs.readFileSync(path.join(exportsDir, 'misp-feed', `${mispEventUuid('local-override')}.json`), 'utf8'));
    expect(event.Event.Attribute.find((a: any) => a.value === UNLISTED_IP)).toMatchObject({ type: 'ip-dst', to_ids: true, comment: 'local-block; local block override: seen in proxy logs' });
    const ipsum = JSON.parse(fs.readFileSync(path.join(exportsDir, 'misp-feed', `${mispEventUuid('ipsum')}.json`), 'utf8'));
    expect(ipsum.Event.Attribute.some((a: any) => a.value === allowedIp)).toBe(false);
  });

  it('unbound loading the regenerated zone resolves the allowed name and its subdomains, still blocks the others', async () => {
    const work = fs.mkdtempSync(path.join(p.work, 'unbound-'));
    unbound = await startUnbound(work, path.join(exportsDir, 'outpost.rpz'), [
      { name: allowedDomain, records: [`${allowedDomain}. A 192.0.2.21`, `www.${allowedDomain}. A 192.0.2.22`] },
      { name: listedDomain, records: [`${listedDomain}. A 192.0.2.23`, `www.${listedDomain}. A 192.0.2.24`] },
      { name: allowFeedDomain, records: [`${allowFeedDomain}. A 192.0.2.25`] },
    ]);
    const allowed = unbound.dig(allowedDomain);
    expect(allowed.status).toBe('NOERROR');
    expect(allowed.answer.join('\n')).toContain('192.0.2.21');
    expect(unbound.dig(`www.${allowedDomain}`).answer.join('\n')).toContain('192.0.2.22');
    expect(unbound.dig(listedDomain).status).toBe('NXDOMAIN');
    expect(unbound.dig(`www.${listedDomain}`).status).toBe('NXDOMAIN');
    expect(unbound.dig(allowFeedDomain).status).toBe('NXDOMAIN'); // allow feed, but blocked by the site
  });

  it('removing the allow override (CLI-style, another connection) puts the address back in the files', async () => {
    const row = (await api('GET', '/api/v1/overrides')).body.overrides.find((o: any) => o.value === allowedIp);
    removeOverride(db, row.id, 'test');
    expect((await exported('suricata-iprep')).split('\n').some((l) => l.startsWith(`${allowedIp},`))).toBe(true);
    await filesReflectOverrides();
    expect(lines('suricata/ipv4.lst')).toContain(allowedIp);
    expect((await verdict(allowedIp)).verdict).not.toBe('benign'); // serve followed the other writer too
  });
});

describe('rows past their default lifetime leave lookups and exports alike', () => {
  // IPsum and Maltrail lines carry no expiry of their own: they age from the package's creation.
  const days: ExpiryDays = { ip: 2, url: 60, domain: 180, hash: 365 };
  let ipsumIp: string;
  let created: number;

  beforeAll(() => {
    expect((db.prepare("SELECT count(*) AS n FROM indicators WHERE feed IN ('ipsum', 'maltrail') AND expires_at IS NOT NULL").get() as { n: number }).n).toBe(0);
    created = Math.floor(Date.parse((db.prepare("SELECT created FROM feeds WHERE name = 'ipsum'").get() as { created: string }).created) / 1000);
    ipsumIp = (db.prepare(`SELECT value FROM indicators WHERE feed = 'ipsum' AND type = 'ipv4'
      AND value NOT IN (SELECT value FROM indicators WHERE feed != 'ipsum') ORDER BY value LIMIT 1 OFFSET 40`).get() as { value: string }).value;
  });

  const at = (now: number) => {
    const engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null, now: () => now, feedPolicy: new FeedPolicy(db, { expiryDays: days }) });
    const stats: ExportStats = { written: 0, skipped: {} };
    const csv = collect(exportFormat(db, 'csv', { now, expiryDays: days, stats })).split('\r\n');
    const iprep = collect(exportFormat(db, 'suricata-iprep', { now, expiryDays: days })).split('\n');
    return { engine, csv, iprep, stats };
  };

  it('inside the lifetime: listed in both', () => {
    const { engine, csv, iprep } = at(created + 1 * DAY);
    expect(engine.lookup(ipsumIp).verdict).not.toBe('unknown');
    expect(csv.some((l) => l.startsWith(`${ipsumIp},ipv4,ipsum,`))).toBe(true);
    expect(iprep.some((l) => l.startsWith(`${ipsumIp},`))).toBe(true);
    // The exported expiry is the one lookups report: package creation + 2 days.
    const match = engine.lookup(ipsumIp).matches.find((m) => m.feed === 'ipsum')!;
    expect(csv.find((l) => l.startsWith(`${ipsumIp},`))!.split(',')[7]).toBe(match.expires_at);
  });

  it('past the IPv4 lifetime: unknown to lookups and missing from the exports; domains (180 days) stay', () => {
    const { engine, csv, iprep, stats } = at(created + 3 * DAY);
    expect(engine.lookup(ipsumIp).verdict).toBe('unknown');
    expect(csv.some((l) => l.startsWith(`${ipsumIp},`))).toBe(false);
    expect(iprep.some((l) => l.startsWith(`${ipsumIp},`))).toBe(false);
    expect(stats.skipped['expired-default-lifetime']).toBeGreaterThan(100);
    expect(engine.lookup(listedDomain).verdict).toBe('malicious');
    expect(csv.some((l) => l.startsWith(`${listedDomain},domain,maltrail,`))).toBe(true);
    // A block override does not age with the feed: still exported, still malicious.
    expect(engine.lookup(UNLISTED_IP).verdict).toBe('malicious');
    expect(csv.some((l) => l.startsWith(`${UNLISTED_IP},ipv4,local-override,`))).toBe(true);
  });

  it('the export files follow the same rule (writeExportFiles with the configured lifetimes)', async () => {
    const dir = fs.mkdtempSync(path.join(p.work, 'aged-'));
    await writeExportFiles(db, dir, { now: created + 3 * DAY, expiryDays: days });
    expect(fs.readFileSync(path.join(dir, 'suricata', 'ipv4.lst'), 'utf8').split('\n')).not.toContain(ipsumIp);
    expect(fs.readFileSync(path.join(dir, 'outpost.csv'), 'utf8')).not.toContain(`${ipsumIp},`);
    const feedEvent = path.join(dir, 'misp-feed', `${mispEventUuid('ipsum')}.json`);
    expect(JSON.parse(fs.readFileSync(feedEvent, 'utf8')).Event.Attribute).toEqual([]);
  });
});

describe('override scope in exports mirrors lookups', () => {
  it('a network override decides the addresses it contains; a more specific override inside it wins', () => {
    const now = Math.floor(Date.now() / 1000);
    // The /24 IPsum lists most addresses of (level 3 has ~200 in its densest ones).
    const byNet = new Map<string, string[]>();
    for (const { value } of db.prepare(`SELECT value FROM indicators WHERE feed = 'ipsum' AND type = 'ipv4'`).all() as { value: string }[]) {
      const net = value.split('.').slice(0, 3).join('.');
      byNet.set(net, [...(byNet.get(net) ?? []), value]);
    }
    const [net, members] = [...byNet.entries()].sort((a, b) => b[1].length - a[1].length)[0];
    expect(members.length).toBeGreaterThan(10);
    const [bad, ...rest] = members;
    const engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null });
    const iprepNow = () => collect(exportFormat(db, 'suricata-iprep', { now })).split('\n');
    const before = iprepNow();
    expect(rest.every((v) => before.some((l) => l.startsWith(`${v},`)))).toBe(true);
    const allowNet = addOverride(db, { action: 'allow', value: `${net}.0/24`, reason: 'partner range', createdBy: 'test' });
    const blockHost = addOverride(db, { action: 'block', value: bad, reason: 'this one host is bad', createdBy: 'test' });
    try {
      engine.refreshOverrides();
      const iprep = iprepNow();
      for (const v of rest) {
        expect(engine.lookup(v).rule, v).toBe('override:allow');
        expect(iprep.some((l) => l.startsWith(`${v},`)), v).toBe(false);
      }
      expect(engine.lookup(bad).rule).toBe('override:block');
      expect(iprep.find((l) => l.startsWith(`${bad},`))).toMatch(/,127$/);
    } finally {
      removeOverride(db, allowNet.id, 'test');
      removeOverride(db, blockHost.id, 'test');
    }
  });
});
