// Sightings on a real appliance (HTTP on 127.0.0.1, real packages): matched lookups from single, batch
// and NDJSON requests are counted per value and client, unmatched ones are not; hits are listed by the
// API and the CLI with --since/--top; marking a false positive creates an allow override that turns
// the verdict benign. The writer's queue is bounded and a busy database delays only the flush.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { createToken } from '../appliance/tokens.ts';
import type { LookupResult } from '../appliance/types.ts';
import { listHits, lookupsPerDay, parseSince, SightingsWriter } from '../lookup/sightings.ts';
import { cli, getJson, postJson, tmpDir } from './helpers.ts';
import { prepare, realFeeds, type Prepared } from './verdicts-fixture.ts';

let p: Prepared;
let running: RunningAppliance;
let admin: string;
let siem: string;
let proxy: string;
let listed: string[];

beforeAll(async () => {
  p = await prepare(realFeeds({ small: true }), 'outpost-sightings-');
  const db = openDb(p.dataDir);
  admin = createToken(db, 'soc-admin', 'admin').token;
  siem = createToken(db, 'siem', 'lookup').token;
  proxy = createToken(db, 'proxy', 'lookup').token;
  listed = (db.prepare("SELECT value FROM indicators WHERE feed = 'maltrail' AND type = 'domain' AND value NOT IN (SELECT value FROM indicators WHERE kind = 'allow') ORDER BY value LIMIT 3 OFFSET 100").all() as { value: string }[]).map((r) => r.value);
  db.close();
  running = await startAppliance(loadConfig({ dataDir: p.dataDir, port: 0, noDemo: true }, {}), createLogger('silent'));
}, 240_000);

afterAll(async () => {
  await running?.close();
  if (p) fs.rmSync(p.work, { recursive: true, force: true });
});

describe('hit log through the API', () => {
  it('counts matched lookups per value and client; unmatched values leave no trace', async () => {
    const [a, b, c] = listed;
    for (let i = 0; i < 3; i++) expect((await getJson(`${running.url}/api/v1/lookup?value=${encodeURIComponent(a.toUpperCase())}`, siem)).status).toBe(200);
    await postJson(`${running.url}/api/v1/lookup`, { values: [a, `sub.${b}`, 'never-listed-9.example', 'bad value'] }, proxy);
    const nd = await fetch(`${running.url}/api/v1/lookup`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${proxy}` },
      body: `"${c}"\n{"value":"hxxp://${c.replace(/\./g, '[.]')}/x"}\n"never-listed-10.example"\n`,
    });
    expect((await nd.text()).trim().split('\n')).toHaveLength(3);

    expect((await getJson(`${running.url}/api/v1/hits`, siem)).status).toBe(403);
    const res = await getJson(`${running.url}/api/v1/hits?top=10`, admin);
    expect(res.status).toBe(200);
    const hits = res.body.hits as any[];
    const byValue = new Map(hits.map((h) => [h.value, h]));
    expect(byValue.get(a)).toMatchObject({ type: 'domain', hits: 4, total: 4, clients: ['proxy', 'siem'], last_verdict: 'malicious', feeds: ['maltrail'] });
    expect(byValue.get(`sub.${b}`)).toMatchObject({ hits: 1, clients: ['proxy'] });
    expect(byValue.get(c)).toMatchObject({ hits: 1 });
    expect(byValue.get(`http://${c}/x`)).toMatchObject({ type: 'url', hits: 1 });
    expect(hits[0].value).toBe(a); // most seen first
    expect(hits.some((h) => h.value.includes('never-listed'))).toBe(false);
    expect(Date.parse(byValue.get(a).first_seen)).toBeLessThanOrEqual(Date.parse(byValue.get(a).last_seen));

    const top1 = await getJson(`${running.url}/api/v1/hits?top=1`, admin);
    expect(top1.body.hits.map((h: any) => h.value)).toEqual([a]);
    const future = await getJson(`${running.url}/api/v1/hits?since=2999-01-01T00:00:00Z`, admin);
    expect(future.body.hits).toEqual([]);
    expect((await getJson(`${running.url}/api/v1/hits?since=yesterday-ish`, admin)).body.error.code).toBe('E_INPUT');
    expect((await getJson(`${running.url}/api/v1/hits?top=0`, admin)).body.error.code).toBe('E_INPUT');
  });

  it('CLI hits lists the same, with --since and --top', () => {
    const r = cli(['hits', '--since', '1h', '--top', '2', '--json'], { dataDir: p.dataDir });
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ value: listed[0], hits: 4 });
    const text = cli(['hits'], { dataDir: p.dataDir });
    expect(text.stdout).toContain(listed[0]);
    expect(text.stderr).not.toMatch(/no hits/);
    // None in the window: said on stderr (stdout stays empty for scripts), and nothing at all with --json.
    const since = new Date(Date.now() + 3_600_000).toISOString();
    const none = cli(['hits', '--since', since], { dataDir: p.dataDir });
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/^no hits recorded since /m);
    expect(cli(['hits', '--since', since, '--json'], { dataDir: p.dataDir }).stderr).not.toMatch(/no hits/);
  });

  it('marking a false positive creates an allow override and the verdict turns benign', async () => {
    const [a, b] = listed;
    const notSighted = await postJson(`${running.url}/api/v1/hits/false-positive`, { value: 'never-listed-9.example', reason: 'x' }, admin);
    expect(notSighted).toMatchObject({ status: 404, body: { error: { code: 'E_NOT_FOUND' } } });
    expect((await postJson(`${running.url}/api/v1/hits/false-positive`, { value: a, reason: 'x' }, siem)).status).toBe(403);
    const fp = await postJson(`${running.url}/api/v1/hits/false-positive`, { value: a, reason: 'internal test domain' }, admin);
    expect(fp.status).toBe(201);
    expect(fp.body.override).toMatchObject({ action: 'allow', value: a, created_by: 'token:soc-admin' });
    const look = await getJson(`${running.url}/api/v1/lookup?value=${a}`, siem);
    expect(look.body).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    expect(look.body.matches.some((m: any) => m.feed === 'maltrail')).toBe(true);
    const hits = (await getJson(`${running.url}/api/v1/hits`, admin)).body.hits as any[];
    expect(hits.find((h) => h.value === a).false_positive_at).toBeTruthy();

    // The CLI path, on another sighted value.
    const r = cli(['hits', 'fp', `sub.${b}`, '--reason', 'vendor update host'], { dataDir: p.dataDir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.lastLine).toMatch(/allow override \d+/);
    // The running server picks up the CLI's override within its 1 s follow loop.
    let verdict = '';
    for (let i = 0; i < 50 && verdict !== 'benign'; i++) {
      verdict = (await getJson(`${running.url}/api/v1/lookup?value=sub.${b}`, siem)).body.verdict;
      if (verdict !== 'benign') await new Promise((res) => setTimeout(res, 100));
    }
    expect(verdict).toBe('benign');
    const missing = cli(['hits', 'fp', 'x.example'], { dataDir: p.dataDir });
    expect(missing.code).toBe(2); // --reason is required
  });

  it('every API lookup, matched or not, adds to the per-day lookup counter (no row per lookup)', async () => {
    const c = listed[2];
    const totals = () => {
      const ro = new Database(path.join(p.dataDir, 'outpost.db'), { readonly: true });
      try {
        return ro.prepare('SELECT coalesce(sum(lookups), 0) AS lookups, coalesce(sum(matches), 0) AS matches, count(*) AS rows FROM lookup_counts').get() as { lookups: number; matches: number; rows: number };
      } finally {
        ro.close();
      }
    };
    await getJson(`${running.url}/api/v1/hits`, admin); // flushes what earlier tests queued
    const before = totals();
    expect(before.lookups).toBeGreaterThan(0); // the earlier tests' lookups were counted
    for (let i = 0; i < 2; i++) expect((await getJson(`${running.url}/api/v1/lookup?value=${c}`, siem)).body.verdict).toBe('malicious');
    await postJson(`${running.url}/api/v1/lookup`, { values: [c, 'never-listed-11.example', 'bad value'] }, proxy);
    await getJson(`${running.url}/api/v1/hits`, admin); // flush
    const after = totals();
    expect(after.lookups - before.lookups).toBe(5);
    expect(after.matches - before.matches).toBe(3);
    expect(after.rows).toBeLessThanOrEqual(before.rows + 1); // one row per day, not per lookup
  });
});

describe('SightingsWriter', () => {
  const result = (value: string, matched = true): LookupResult => ({
    value, type: 'domain', normalized: value, verdict: matched ? 'malicious' : 'unknown', confidence: 80, rule: 'block:exact', generation: 1, data_age_s: 0,
    matches: matched ? [{ feed: 'f', feed_kind: 'block', indicator: value, kind: 'exact', category: null, confidence: 80, first_seen: null, last_seen: null, expires_at: null }] : [],
  });
  let dir: string;
  let db: DB;
  beforeAll(() => {
    dir = tmpDir('outpost-sightings-unit-');
    db = openDb(dir);
  });
  afterAll(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('holds a bounded queue: new values beyond it are dropped and counted, repeats still count', async () => {
    const w = new SightingsWriter(db, { maxQueue: 10, flushRows: 1000, flushMs: 3_600_000 });
    for (let i = 0; i < 20; i++) w.record(result(`v${i}.example`), 'c');
    w.record(result('v0.example'), 'c');
    w.record(result('unmatched.example', false), 'c');
    expect(w.stats()).toMatchObject({ queued: 10, dropped: 10, recorded: 21 });
    expect(db.prepare('SELECT count(*) AS n FROM sightings').get()).toEqual({ n: 0 }); // nothing written until a flush
    expect(w.flush()).toBe(10);
    expect(listHits(db, { top: 100 }).find((h) => h.value === 'v0.example')).toMatchObject({ hits: 2, total: 2 });
    await w.close();
  });

  it('a database busy with another writer delays the flush; nothing is lost', async () => {
    const w = SightingsWriter.forDataDir(dir, { flushMs: 3_600_000 });
    const other = new Database(path.join(dir, 'outpost.db'));
    other.exec('BEGIN IMMEDIATE');
    w.record(result('busy.example'), 'c');
    w.record(result('busy.example'), 'c');
    expect(w.flush()).toBe(0); // returns at once: no busy wait
    expect(w.stats()).toMatchObject({ queued: 1, busy: 1 });
    other.exec('COMMIT');
    other.close();
    expect(w.flush()).toBe(1);
    expect(listHits(db, { top: 100 }).find((h) => h.value === 'busy.example')).toMatchObject({ hits: 2 });
    await w.close();
  });

  it('counts lookups and matches per UTC day, flushed in the same batch; busy keeps them queued', async () => {
    const day = Date.parse('2026-03-10T12:00:00Z') / 1000;
    let t = day;
    const w = SightingsWriter.forDataDir(dir, { flushMs: 3_600_000, now: () => t });
    w.record(result('d1.example'), 'c');
    w.record(result('d1-miss.example', false), 'c');
    w.record({ ...result('not a value', false), type: 'invalid' }, 'c');
    t = day + 86_400;
    w.record(result('d2.example'), 'c');
    const other = new Database(path.join(dir, 'outpost.db'));
    other.exec('BEGIN IMMEDIATE');
    expect(w.flush()).toBe(0);
    other.exec('COMMIT');
    other.close();
    expect(lookupsPerDay(db, 3, t)).toEqual([{ day: '2026-03-09', lookups: 0, matches: 0 }, { day: '2026-03-10', lookups: 0, matches: 0 }, { day: '2026-03-11', lookups: 0, matches: 0 }]);
    w.flush();
    expect(lookupsPerDay(db, 3, t)).toEqual([{ day: '2026-03-09', lookups: 0, matches: 0 }, { day: '2026-03-10', lookups: 3, matches: 1 }, { day: '2026-03-11', lookups: 1, matches: 1 }]);
    w.record(result('d2-miss.example', false), 'c');
    await w.close(); // close writes counts even with no sightings queued
    expect(lookupsPerDay(db, 1, t)).toEqual([{ day: '2026-03-11', lookups: 2, matches: 1 }]);
  });

  it('inThread: timed flushes are written by the writer thread; a busy database keeps them there until it frees; close writes the rest', async () => {
    const day = Date.parse('2026-04-02T08:00:00Z') / 1000;
    const w = SightingsWriter.forDataDir(dir, { flushMs: 50, inThread: true, now: () => day });
    const waitFor = async (what: () => boolean) => {
      for (let i = 0; i < 400 && !what(); i++) await new Promise((r) => setTimeout(r, 25));
      return what();
    };
    const seen = (v: string) => listHits(db, { top: 1000 }).find((h) => h.value === v)?.hits ?? 0;
    for (let i = 0; i < 3; i++) w.record(result('thread-a.example'), 'c');
    w.record(result('thread-miss.example', false), 'c');
    // Nobody calls flush(): the timer hands the batch to the thread, which writes it.
    expect(await waitFor(() => seen('thread-a.example') === 3)).toBe(true);
    expect(lookupsPerDay(db, 1, day)).toEqual([{ day: '2026-04-02', lookups: 4, matches: 3 }]);
    expect(await waitFor(() => w.stats().written >= 1 && w.stats().flushes >= 1)).toBe(true);
    // Busy: the thread keeps the batch (queued) and retries on its own timer.
    const other = new Database(path.join(dir, 'outpost.db'));
    other.exec('BEGIN IMMEDIATE');
    w.record(result('thread-b.example'), 'c');
    expect(await waitFor(() => w.stats().busy >= 1 && w.stats().queued === 1)).toBe(true);
    expect(seen('thread-b.example')).toBe(0);
    other.exec('COMMIT');
    other.close();
    expect(await waitFor(() => seen('thread-b.example') === 1)).toBe(true);
    // What is recorded just before close() is written by close().
    w.record(result('thread-c.example'), 'c');
    w.record(result('thread-c.example'), 'c');
    await w.close();
    expect(seen('thread-c.example')).toBe(2);
    expect(lookupsPerDay(db, 1, day)).toEqual([{ day: '2026-04-02', lookups: 7, matches: 6 }]);
  });

  it('flushNow retries while another writer holds the store, and gives up after its wait with the rows still queued', async () => {
    const w = SightingsWriter.forDataDir(dir, { flushMs: 60_000 }); // no timed flush during the test
    const seen = (v: string) => listHits(db, { top: 1000 }).find((h) => h.value === v)?.hits ?? 0;
    const other = new Database(path.join(dir, 'outpost.db'));
    try {
      other.exec('BEGIN IMMEDIATE');
      w.record(result('flushnow-a.example'), 'c');
      expect(await w.flushNow(30)).toBe(false); // held for longer than the wait
      expect(w.stats()).toMatchObject({ queued: 1 });
      expect(seen('flushnow-a.example')).toBe(0);
      setTimeout(() => other.exec('COMMIT'), 50); // freed while the next call waits
      expect(await w.flushNow(2000)).toBe(true);
      expect(w.stats()).toMatchObject({ queued: 0 });
      expect(seen('flushnow-a.example')).toBe(1);
    } finally {
      other.close();
      await w.close();
    }
  });

  it('--since accepts ISO times and durations', () => {
    expect(parseSince('2026-08-01T00:00:00Z')).toBe(Date.parse('2026-08-01T00:00:00Z') / 1000);
    expect(parseSince('24h', 100_000)).toBe(100_000 - 86_400);
    expect(parseSince('7d', 1_000_000)).toBe(1_000_000 - 7 * 86_400);
    expect(() => parseSince('last week')).toThrow(/E_INPUT|ISO/);
  });
});
