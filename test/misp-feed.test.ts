// MISP feed layout from real data: the files a MISP instance's feed fetcher reads (manifest.json,
// <uuid>.json, hashes.csv) with the fields it uses, and every exported value read back by our own
// MISP event parser (sync/sources/misp-event.ts through collectIndicators) unchanged.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportFormat, writeExportFiles } from '../lookup/exports/index.ts';
import { mispEventUuid, writeMispFeed, type MispFeedResult } from '../lookup/exports/misp-feed.ts';
import { uuidv5 } from '../lookup/exports/stix.ts';
import { collectIndicators } from '../sync/collect.ts';
import { buildFixture, collect, NOW, type Fixture } from './exports-fixture.ts';

type Json = Record<string, any>;

// MISP's describeTypes: the categories each of our attribute types may carry, and to_ids defaults.
const MISP_CATEGORIES: Record<string, string[]> = {
  'ip-dst': ['Network activity', 'Payload delivery', 'External analysis', 'Artifacts dropped', 'Payload installation'],
  domain: ['Network activity', 'Payload delivery', 'External analysis', 'Payload installation', 'Attribution', 'Persistence mechanism'],
  url: ['Network activity', 'Payload delivery', 'External analysis', 'Payload installation', 'Persistence mechanism'],
  md5: ['Payload delivery', 'Artifacts dropped', 'Payload installation', 'External analysis'],
  sha1: ['Payload delivery', 'Artifacts dropped', 'Payload installation', 'External analysis'],
  sha256: ['Payload delivery', 'Artifacts dropped', 'Payload installation', 'External analysis'],
  'email-src': ['Payload delivery', 'Social network'],
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('MISP feed export', () => {
  let fx: Fixture;
  let dir = '';
  let res: MispFeedResult;
  let manifest: Json;
  const events = new Map<string, Json>();

  beforeAll(async () => {
    fx = buildFixture();
    dir = path.join(fx.dir, 'misp');
    res = await writeMispFeed(fx.db, dir, { now: NOW });
    manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    for (const uuid of Object.keys(manifest)) events.set(uuid, JSON.parse(fs.readFileSync(path.join(dir, `${uuid}.json`), 'utf8')).Event);
  });
  afterAll(() => fx?.close());

  it('lays out manifest.json, one <uuid>.json per block feed and hashes.csv', () => {
    const blockFeeds = (fx.db.prepare(`SELECT name FROM feeds WHERE kind = 'block'`).all() as { name: string }[]).map((r) => r.name).sort();
    expect(Object.keys(manifest).sort()).toEqual(blockFeeds.map(mispEventUuid).sort());
    expect(res.events).toBe(blockFeeds.length);
    const files = fs.readdirSync(dir).sort();
    expect(files).toEqual([...Object.keys(manifest).map((u) => `${u}.json`), 'hashes.csv', 'manifest.json'].sort());
    expect(res.files[res.files.length - 1]).toBe(path.join(dir, 'manifest.json'));
  });

  it('manifest entries carry what the fetcher compares and filters on, equal to the events', () => {
    for (const [uuid, m] of Object.entries(manifest)) {
      expect(uuid).toMatch(UUID);
      const ev = events.get(uuid)!;
      expect(ev.uuid).toBe(uuid);
      expect(m.info).toBe(ev.info);
      expect(m.date).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(['1', '2', '3', '4']).toContain(m.threat_level_id);
      expect(['0', '1', '2']).toContain(m.analysis);
      // Feed.php: `$existing['timestamp'] < $manifest[$uuid]['timestamp']` decides a re-fetch.
      expect(m.timestamp).toMatch(/^\d+$/);
      expect(m.timestamp).toBe(ev.timestamp);
      expect(m.Orgc).toEqual(ev.Orgc);
      expect(typeof m.Orgc.name).toBe('string');
      expect(m.Tag).toEqual(ev.Tag);
    }
  });

  it('attributes have MISP types, a valid category, to_ids true and unique uuids', () => {
    const uuids = new Set<string>();
    let n = 0;
    for (const ev of events.values()) {
      for (const a of ev.Attribute as Json[]) {
        n++;
        expect(Object.keys(MISP_CATEGORIES)).toContain(a.type);
        expect(MISP_CATEGORIES[a.type]).toContain(a.category);
        expect(a.to_ids).toBe(true);
        expect(a.uuid).toMatch(UUID);
        expect(a.timestamp).toMatch(/^\d+$/);
        if (a.first_seen) expect(a.first_seen).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$/);
        uuids.add(a.uuid);
      }
    }
    expect(n).toBe(res.attributes);
    expect(uuids.size).toBe(n);
    expect(new Set([...events.values()].flatMap((e) => (e.Attribute as Json[]).map((a) => a.type)))).toEqual(new Set(['ip-dst', 'domain', 'url', 'md5', 'sha1', 'sha256']));
  });

  it('hashes.csv is md5(value),event uuid for every attribute', () => {
    const lines = fs.readFileSync(path.join(dir, 'hashes.csv'), 'utf8').trimEnd().split('\n');
    const expected = [...events.values()].flatMap((e) => (e.Attribute as Json[]).map((a) => `${createHash('md5').update(a.value).digest('hex')},${e.uuid}`));
    expect(lines.sort()).toEqual(expected.sort());
    for (const l of lines) expect(l).toMatch(/^[0-9a-f]{32},[0-9a-f-]{36}$/);
  });

  it('every exported value round-trips through our MISP event parser, and matches the STIX export', async () => {
    const bundle = (JSON.parse(collect(exportFormat(fx.db, 'stix', { now: NOW }))) as { objects: Json[] }).objects;
    for (const [uuid, ev] of events) {
      const feed = (ev.Tag as Json[]).find((t) => t.name.startsWith('outpost:feed='))!.name.slice(14, -1);
      const { indicators, reports } = await collectIndicators([path.join(dir, `${uuid}.json`)], { kind: 'block' });
      expect(reports[0].format).toBe('misp-event');
      expect(reports[0].malformed).toBe(0);
      expect(reports[0].skipped ?? 0).toBe(0);
      const exported = (ev.Attribute as Json[]).map((a) => a.value as string);
      expect(indicators.map((i) => i.v).sort()).toEqual(exported.sort());
      // Same types and values as the STIX export has for this feed: STIX ids are UUIDv5 of type:value.
      const stixIds = bundle.filter((o) => o.type === 'indicator' && o.x_outpost_feeds.includes(feed)).map((o) => o.id).sort();
      expect(indicators.map((i) => `indicator--${uuidv5(`${i.t}:${i.v}`)}`).sort()).toEqual(stixIds);
      expect(indicators.length).toBeGreaterThan(0);
    }
  });

  it('regenerating after a feed is gone drops its event from the manifest and the directory', async () => {
    fx.db.prepare(`DELETE FROM indicators WHERE feed = 'hashes'`).run();
    fx.db.prepare(`DELETE FROM feeds WHERE name = 'hashes'`).run();
    const again = await writeMispFeed(fx.db, dir, { now: NOW });
    expect(again.removed).toEqual([path.join(dir, `${mispEventUuid('hashes')}.json`)]);
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    expect(Object.keys(m)).not.toContain(mispEventUuid('hashes'));
    expect(fs.existsSync(path.join(dir, `${mispEventUuid('hashes')}.json`))).toBe(false);
  });

  it('writeExportFiles regenerates the feed under misp-feed/', async () => {
    const out = path.join(fx.dir, 'exports');
    const written = await writeExportFiles(fx.db, out, { now: NOW });
    expect(written).toContain(path.join(out, 'misp-feed', 'manifest.json'));
    const summary = JSON.parse(fs.readFileSync(path.join(out, 'exports.json'), 'utf8'));
    expect(summary.files['misp-feed/'].written).toBeGreaterThan(0);
  });
});
