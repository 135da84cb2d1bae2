// Indicator expiry and per-feed freshness on real data, with a package created 40 days ago:
// - rows without `exp` expire at created + the type default (IP 30 d: gone; domain 180 d: still listed),
//   rows with `exp` follow it; defaults come from config (OUTPOST_EXPIRY_*_DAYS);
// - `outpost purge` takes expired rows out of the lookup store, and a delta built on the signed base still
//   applies afterwards (purged rows stay part of the feed's content state);
// - `feed set --stale-after --fail closed` makes the feed stale: /healthz 503, status, `stale: true`.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Indicator } from '../appliance/types.ts';
import { readPackage, writeDelta } from '../sync/delta.ts';
import { cli, dbDigest, getJson, serve, tmpDir } from './helpers.ts';
import { loadConfig } from '../appliance/config.ts';
import { layout } from '../appliance/db.ts';
import { runWorker } from '../appliance/worker.ts';
import { expiryDaysOf, feedTypes } from '../sync/expiry.ts';
import { loadFilters } from '../lookup/filters.ts';
import { makeKeys, realIndicators, sortUnique, writeFull } from './sync-b-fixture.ts';

const DAY = 86_400_000;
const CREATED = new Date(Date.now() - 40 * DAY);
const iso = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toISOString();

describe('indicator expiry, purge and freshness', () => {
  const work = tmpDir('outpost-expiry-');
  const dataDir = path.join(work, 'var');
  let keys: ReturnType<typeof makeKeys>;
  let lines: Indicator[];
  let v1: string;
  let ips: string[];
  let domains: string[];
  let keptIp: string;
  let deadDomain: string;

  const lookup = (values: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = cli(['lookup', ...values], { dataDir, env });
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  };
  const rows = (table: string) => {
    const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
    const n = (db.prepare(`SELECT type, count(*) AS n FROM ${table} GROUP BY type`).all() as { type: string; n: number }[]);
    db.close();
    return Object.fromEntries(n.map((r) => [r.type, r.n]));
  };

  beforeAll(async () => {
    keys = makeKeys(path.join(work, 'keys'));
    const real = (await realIndicators()).filter((x) => ['ipv4', 'domain', 'url', 'md5', 'sha256'].includes(x.t));
    // Each line's own `exp` wins over the type default: one IP kept alive, one domain already expired.
    const ipList = real.filter((x) => x.t === 'ipv4');
    const domList = real.filter((x) => x.t === 'domain');
    keptIp = ipList[7].v;
    deadDomain = domList[3].v;
    lines = sortUnique(real.map((x) => (x.v === keptIp ? { ...x, exp: iso(Date.now() + 10 * DAY) } : x.v === deadDomain ? { ...x, exp: iso(Date.now() - DAY) } : x)));
    ips = ipList.filter((_, i) => i % 1000 === 1).map((x) => x.v).slice(0, 20);
    domains = domList.filter((_, i) => i % 500 === 1 && i !== 3).map((x) => x.v).slice(0, 20);
    v1 = (await writeFull(keys.key, path.join(work, 'out'), 'aged', 1, lines, { created: CREATED })).path;
    expect(cli(['trust', 'add', keys.pubPath], { dataDir }).code).toBe(0);
    const r = cli(['import', v1], { dataDir });
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);

  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('rows without exp expire by type default from the package creation; own exp wins', () => {
    const res = lookup([...ips, ...domains, keptIp, deadDomain]);
    for (const r of res.slice(0, ips.length)) expect(r.matches, `${r.value} is 40 days old, IP default 30`).toEqual([]);
    for (const r of res.slice(ips.length, ips.length + domains.length)) {
      const m = r.matches.find((x: { indicator: string }) => x.indicator === r.normalized);
      expect(m, `${r.value} is within the 180-day domain default`).toBeTruthy();
      expect(Date.parse(m.expires_at)).toBe(Date.parse(iso(CREATED.getTime())) + 180 * DAY);
    }
    const kept = res[ips.length + domains.length];
    const own = lines.find((x) => x.v === keptIp)!.exp!;
    expect(Date.parse(kept.matches[0].expires_at)).toBe(Date.parse(own));
    expect(res[ips.length + domains.length + 1].matches.filter((m: { indicator: string }) => m.indicator === deadDomain)).toEqual([]);
    // The default is configuration: with 60 days for IPs they match again.
    const longer = lookup(ips.slice(0, 5), { OUTPOST_EXPIRY_IP_DAYS: '60' });
    for (const r of longer) expect(r.matches.length, r.value).toBeGreaterThan(0);
  });

  it("a feed's types come from index seeks, the same as a DISTINCT over its rows", () => {
    const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
    try {
      const distinct = (feed: string) => (db.prepare('SELECT DISTINCT type FROM indicators WHERE feed = ? ORDER BY type').pluck().all(feed) as string[]);
      const types = feedTypes(db, 'aged');
      expect(types).toEqual(distinct('aged'));
      expect(types).toEqual(['domain', 'ipv4', 'md5', 'sha256', 'url']);
      expect(feedTypes(db, 'no-such-feed')).toEqual([]);
      // One seek per type on indicators_feed, not a walk over the feed's rows (a purge at 10M rows: 0.9 ms, not 0.67 s).
      const plan = (db.prepare('EXPLAIN QUERY PLAN SELECT type FROM indicators WHERE feed = ? AND type > ? ORDER BY type LIMIT 1').all('aged', '') as { detail: string }[]).map((r) => r.detail).join(' / ');
      expect(plan).toMatch(/^SEARCH indicators USING COVERING INDEX indicators_feed \(feed=\? AND type>\?\)$/);
    } finally {
      db.close();
    }
  });

  it('purge takes expired rows out; a later delta still applies to the signed base', async () => {
    const before = rows('indicators');
    const dry = cli(['purge', '--dry-run'], { dataDir });
    expect(dry.code, dry.stderr).toBe(0);
    const expected = before.ipv4 - 1 + 1; // every IP but the kept one, plus the expired domain
    expect(JSON.parse(dry.lastLine)).toMatchObject({ dry_run: true, total: expected });
    expect(rows('indicators')).toEqual(before);

    const p = cli(['purge'], { dataDir });
    expect(p.code, p.stderr).toBe(0);
    expect(JSON.parse(p.lastLine)).toMatchObject({ total: expected, purged: { aged: expected } });
    expect(rows('indicators').ipv4).toBe(1);
    expect(rows('indicators').domain).toBe(before.domain - 1);
    expect(rows('indicators_expired')).toEqual({ ipv4: before.ipv4 - 1, domain: 1 });
    // Idempotent: nothing left to purge.
    expect(JSON.parse(cli(['purge'], { dataDir }).lastLine).total).toBe(0);
    // A lookup builds and persists the purged generation's filters: without the purged IPs.
    for (const x of lookup(ips.slice(5, 10))) expect(x.matches).toEqual([]);
    const gen = () => Number((new Database(layout(dataDir).db, { readonly: true }).prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string }).value);
    const purgedGen = gen();
    const filterFile = (g: number) => path.join(dataDir, 'filters', `filters-${g}.bin`);
    expect(fs.existsSync(filterFile(purgedGen))).toBe(true);

    // v2 as a delta on v1, created now: removes some purged IPs, changes one, adds values.
    const base = await readPackage(v1);
    const removed = new Set(ips.slice(0, 5));
    const next = sortUnique([
      ...base.indicators.filter((x) => !removed.has(x.v)).map((x) => (x.v === ips[6] ? { ...x, conf: 99 } : x)),
      { t: 'domain', v: 'new-after-purge.example.com' },
    ]);
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const d = await writeDelta({
      base, next, privateKey: keys.key, outDir: path.join(work, 'out'),
      manifest: { feed: 'aged', kind: 'block', version: 2, created: now.toISOString(), expires: iso(Date.now() + 30 * DAY), defaults: { category: 'malware', confidence: 80 } },
    });
    const r = cli(['import', d.path], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.lastLine)).toMatchObject({ ok: true, type: 'delta', version: 2, total: next.length });
    // The purged set was sized for one IPv4 address: with the revived ones in it, it would be far past its
    // false-positive bound, so the apply persisted no extension and the next reader builds from the store
    // (test/filter-follow.test.ts extends a set with revived rows).
    expect(gen()).toBe(purgedGen + 1);
    expect(loadFilters(filterFile(purgedGen)).filters.get('ipv4')!.count).toBe(1);
    expect(fs.existsSync(filterFile(purgedGen + 1))).toBe(false);
    // Created now: the IPs are alive again (the provider re-asserted them), the removed ones are gone.
    const res = lookup([...ips.slice(0, 10), 'new-after-purge.example.com']);
    for (const x of res.slice(0, 5)) expect(x.matches).toEqual([]);
    for (const x of res.slice(5)) expect(x.matches.length, x.value).toBeGreaterThan(0);
    expect(res[6].matches[0].confidence).toBe(99);
    expect(fs.existsSync(filterFile(purgedGen + 1))).toBe(true);
    expect(rows('indicators_expired')).toEqual({});
    // A purge now takes only the domain whose own expiry passed — here through the worker serve's
    // scheduled purge runs (sync/background.ts), on its own connection.
    const viaWorker = await runWorker<{ total: number }>(new URL('../sync/purge-worker.ts', import.meta.url), { dbPath: layout(dataDir).db, days: expiryDaysOf(loadConfig({}, {})) });
    expect(viaWorker).toMatchObject({ total: 1 });
    expect(JSON.parse(cli(['purge', '--dry-run'], { dataDir }).lastLine)).toMatchObject({ total: 0 });
  });

  it('a stale fail-closed feed: /healthz 503 stale, status shows it, lookups answer unknown with stale: true', async () => {
    const t = cli(['token', 'create', '--name', 'fresh'], { dataDir }).lastLine;
    const bad = cli(['feed', 'set', 'aged', '--stale-after', 'soon'], { dataDir });
    expect(bad.code).toBe(2);
    expect(cli(['feed', 'set', 'nope', '--fail', 'closed'], { dataDir }).stderr).toMatch(/^E_NOT_FOUND/m);

    // The v2 delta was created moments ago: a one-second limit is passed almost at once.
    const before = dbDigest(dataDir);
    const s = cli(['feed', 'set', 'aged', '--stale-after', '1s', '--fail', 'closed'], { dataDir });
    expect(s.code, s.stderr).toBe(0);
    expect(JSON.parse(s.lastLine).settings).toEqual({ stale_after_s: 1, fail_mode: 'closed' });
    expect(dbDigest(dataDir)).not.toBe(before); // settings are in the feeds table
    let status: any;
    for (let i = 0; i < 100; i++) {
      status = JSON.parse(cli(['status', '--json'], { dataDir }).lastLine);
      if (status.health === 'stale') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(status.health).toBe('stale');
    expect(status.feeds[0]).toMatchObject({ name: 'aged', stale: true, stale_after_s: 1, fail_mode: 'closed' });

    const [r] = lookup(['new-after-purge.example.com']);
    expect(r).toMatchObject({ verdict: 'unknown', stale: true, stale_feeds: ['aged'], matches: [] });

    // Exports leave out what lookups withhold: the CLI's, the API's and the files serve regenerates.
    const csvHas = (text: string) => text.split('\n').some((l) => l.startsWith('new-after-purge.example.com,domain,'));
    const cliCsv = cli(['export', 'csv'], { dataDir });
    expect(cliCsv.code, cliCsv.stderr).toBe(0);
    expect(csvHas(cliCsv.stdout)).toBe(false);
    const exporter = cli(['token', 'create', '--name', 'siem', '--scope', 'export'], { dataDir }).lastLine;
    const server = await serve(dataDir, ['--no-demo']);
    try {
      const h = await getJson(`${server.url}/healthz`);
      expect(h.status).toBe(503);
      expect(h.body).toMatchObject({ status: 'stale', stale_feeds: ['aged'] });
      const l = await getJson(`${server.url}/api/v1/lookup?value=new-after-purge.example.com`, t);
      expect(l.status).toBe(200);
      expect(l.body).toMatchObject({ verdict: 'unknown', stale: true, matches: [] });
      // ?fields= keeps the fail-closed flags whatever it names; they may also be asked for by name.
      const trimmed = await getJson(`${server.url}/api/v1/lookup?value=new-after-purge.example.com&fields=verdict`, t);
      expect(trimmed.body).toEqual({ verdict: 'unknown', stale: true, stale_feeds: ['aged'] });
      const named = await getJson(`${server.url}/api/v1/lookup?value=new-after-purge.example.com&fields=stale`, t);
      expect(named.status).toBe(200);
      expect(named.body).toEqual({ stale: true, stale_feeds: ['aged'] });
      const api = await fetch(`${server.url}/api/v1/export/csv`, { headers: { authorization: `Bearer ${exporter}` } });
      expect(api.status).toBe(200);
      expect(csvHas(await api.text())).toBe(false);
      const summary = path.join(dataDir, 'exports', 'exports.json');
      let report: any = null;
      for (let i = 0; i < 150 && !(report?.withheld_feeds?.length); i++) {
        await new Promise((r) => setTimeout(r, 200));
        try {
          report = JSON.parse(fs.readFileSync(summary, 'utf8'));
        } catch {
          /* not written yet */
        }
      }
      expect(report.withheld_feeds).toEqual(['aged']);
      expect(report.files['outpost.csv'].skipped['stale-fail-closed-feed']).toBeGreaterThan(0);
      expect(csvHas(fs.readFileSync(path.join(dataDir, 'exports', 'outpost.csv'), 'utf8'))).toBe(false);
    } finally {
      await server.stop();
    }

    // Fail-open (the default) keeps answering with the matches, still stale in health.
    expect(cli(['feed', 'set', 'aged', '--fail', 'open'], { dataDir }).code).toBe(0);
    const [o] = lookup(['new-after-purge.example.com']);
    expect(o.stale).toBeUndefined();
    expect(o.matches.length).toBe(1);
    expect(csvHas(cli(['export', 'csv'], { dataDir }).stdout)).toBe(true);
    expect(JSON.parse(cli(['status', '--json'], { dataDir }).lastLine).health).toBe('stale');
    // Back to the appliance limit (7 days): healthy again.
    expect(cli(['feed', 'set', 'aged', '--stale-after', 'default'], { dataDir }).code).toBe(0);
    expect(JSON.parse(cli(['status', '--json'], { dataDir }).lastLine).health).toBe('ok');
  }, 120_000);
});
