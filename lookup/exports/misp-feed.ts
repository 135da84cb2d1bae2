// MISP feed layout (what MISP's feed fetcher, app/Model/Feed.php, and PyMISP's feed generator use):
//   manifest.json   event uuid → {Orgc, Tag, info, date, analysis, threat_level_id, timestamp}
//   <uuid>.json     {"Event": {…, "Attribute": [...]}} — one event per block feed
//   hashes.csv      md5(attribute value),event uuid — MISP's feed cache/overlap lookups
// Attributes carry MISP types (ip-dst, domain, url, md5, sha1, sha256, email-src), to_ids true and the
// type's default category. Event and attribute uuids are UUIDv5 of the feed (and value), so a MISP
// instance updates the same event on every pull; the event timestamp is the feed's apply time, which
// is what MISP compares to decide whether to fetch an event again.
// Files are replaced atomically; manifest.json last, so a fetcher never sees a uuid whose file is missing.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DB } from '../../appliance/db.ts';
import type { IndicatorType } from '../../appliance/types.ts';
import { blockFeeds, feedRows, type FeedInfo } from './feed-rows.ts';
import { writeAtomic } from './index.ts';
import { chunked, newStats, sourceContext, type ExportRow, type ExportStats, type SourceOptions } from './source.ts';
import { uuidv5 } from './stix.ts';
import { OVERRIDE_FEED } from '../verdict.ts';

export const MISP_TYPES: Record<IndicatorType, { type: string; category: string }> = {
  ipv4: { type: 'ip-dst', category: 'Network activity' },
  ipv6: { type: 'ip-dst', category: 'Network activity' },
  // MISP's ip-dst holds networks too (its validation accepts CIDR notation).
  'ipv4-cidr': { type: 'ip-dst', category: 'Network activity' },
  'ipv6-cidr': { type: 'ip-dst', category: 'Network activity' },
  domain: { type: 'domain', category: 'Network activity' },
  url: { type: 'url', category: 'Network activity' },
  md5: { type: 'md5', category: 'Payload delivery' },
  sha1: { type: 'sha1', category: 'Payload delivery' },
  sha256: { type: 'sha256', category: 'Payload delivery' },
  email: { type: 'email-src', category: 'Payload delivery' },
};

export interface MispFeedOptions extends SourceOptions {
  /** Unix seconds; indicators expiring at or before it are left out. Default: now. */
  now?: number;
  /** Creator organisation shown in MISP. Default "Outpost". */
  orgName?: string;
}

export interface MispFeedResult {
  events: number;
  attributes: number;
  /** Files written (absolute paths), manifest.json last. */
  files: string[];
  /** Stale event files of feeds no longer present, removed. */
  removed: string[];
  stats: ExportStats;
}

export function mispEventUuid(feed: string): string {
  return uuidv5(`misp-event:${feed}`);
}

const secs = (iso: string) => Math.floor(Date.parse(iso) / 1000);
const misoTime = (unix: number | null) => (unix == null ? undefined : new Date(unix * 1000).toISOString().replace('Z', '000+00:00'));

/** MISP threat levels: 1 high, 2 medium, 3 low (4 undefined), from the feed's confidence. */
function threatLevel(db: DB, feed: string): string {
  if (feed === OVERRIDE_FEED) return '1'; // the site's own block decisions (confidence 100)
  const r = db.prepare('SELECT confidence FROM feeds WHERE name = ?').get(feed) as { confidence: number | null } | undefined;
  const c = r?.confidence ?? 50;
  return c >= 80 ? '1' : c >= 50 ? '2' : '3';
}

function eventHead(db: DB, f: FeedInfo, org: { name: string; uuid: string }) {
  const tags = [{ name: `outpost:feed="${f.name}"` }, ...(f.category ? [{ name: `outpost:category="${f.category}"` }] : [])];
  return {
    uuid: mispEventUuid(f.name),
    info: `Outpost feed ${f.name}${f.category ? ` (${f.category})` : ''}, version ${f.version}`,
    date: f.created.slice(0, 10),
    threat_level_id: threatLevel(db, f.name),
    analysis: '2',
    timestamp: String(secs(f.applied_at)),
    publish_timestamp: String(secs(f.applied_at)),
    published: true,
    distribution: '3',
    Orgc: org,
    Tag: tags,
  };
}

export function mispAttribute(feed: string, r: ExportRow, fallbackTime: number): Record<string, unknown> {
  const t = MISP_TYPES[r.type];
  const a: Record<string, unknown> = {
    uuid: uuidv5(`misp-attribute:${feed}:${r.type}:${r.value}`),
    type: t.type,
    category: t.category,
    value: r.value,
    to_ids: true,
    distribution: '5',
    timestamp: String(r.last_seen ?? fallbackTime),
    comment: [
      r.category,
      r.feeds.length > 1 ? `also listed by ${r.feeds.filter((x) => x !== feed).join(', ')}` : null,
      r.reason ? `local block override: ${r.reason}` : null,
    ].filter(Boolean).join('; '),
  };
  const fs_ = misoTime(r.first_seen);
  const ls = misoTime(r.last_seen);
  if (fs_) a.first_seen = fs_;
  if (ls && (!r.first_seen || r.last_seen! >= r.first_seen)) a.last_seen = ls;
  if (r.tags.length) a.Tag = r.tags.map((name) => ({ name }));
  return a;
}

function* eventChunks(db: DB, f: FeedInfo, now: number, org: { name: string; uuid: string }, stats: ExportStats, counter: { n: number }, policy: SourceOptions): Generator<string> {
  const head = JSON.stringify({ Event: eventHead(db, f, org) });
  // {"Event":{…,"Tag":[…]}} → open an Attribute array before the two closing braces.
  yield `${head.slice(0, -2)},"Attribute":[`;
  const ctx = sourceContext(db, now, stats, policy);
  const applied = secs(f.applied_at);
  function* body() {
    let first = true;
    for (const r of feedRows(ctx, f.name)) {
      stats.written++;
      counter.n++;
      yield `${first ? '' : ','}\n${JSON.stringify(mispAttribute(f.name, r, applied))}`;
      first = false;
    }
  }
  yield* chunked(body());
  yield '\n]}}\n';
}

function* hashLines(db: DB, feeds: FeedInfo[], now: number, policy: SourceOptions): Generator<string> {
  const ctx = sourceContext(db, now, newStats(), policy);
  for (const f of feeds) {
    const uuid = mispEventUuid(f.name);
    function* lines() {
      for (const r of feedRows(ctx, f.name)) yield `${createHash('md5').update(r.value, 'utf8').digest('hex')},${uuid}\n`;
    }
    yield* chunked(lines());
  }
}

const EVENT_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json$/;

/** Writes (or refreshes) the MISP feed in `dir`: one event per block feed, hashes.csv, manifest.json. */
export async function writeMispFeed(db: DB, dir: string, opts: MispFeedOptions = {}): Promise<MispFeedResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const org = { name: opts.orgName ?? 'Outpost', uuid: uuidv5(`misp-org:${opts.orgName ?? 'Outpost'}`) };
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  const feeds = blockFeeds(sourceContext(db, now, newStats(), opts));
  const stats = newStats();
  const files: string[] = [];
  const manifest: Record<string, unknown> = {};
  let attributes = 0;
  for (const f of feeds) {
    const counter = { n: 0 };
    const head = eventHead(db, f, org);
    const file = path.join(dir, `${head.uuid}.json`);
    await writeAtomic(file, eventChunks(db, f, now, org, stats, counter, opts));
    files.push(file);
    attributes += counter.n;
    manifest[head.uuid] = { Orgc: head.Orgc, Tag: head.Tag, info: head.info, date: head.date, analysis: head.analysis, threat_level_id: head.threat_level_id, timestamp: head.timestamp };
  }
  const hashes = path.join(dir, 'hashes.csv');
  await writeAtomic(hashes, hashLines(db, feeds, now, opts));
  files.push(hashes);
  const man = path.join(dir, 'manifest.json');
  await writeAtomic(man, [JSON.stringify(manifest, null, 1) + '\n']);
  files.push(man);
  // Feeds that went away: their events leave the manifest, and their files go after it.
  const removed: string[] = [];
  for (const name of await fs.promises.readdir(dir)) {
    if (EVENT_FILE.test(name) && !(name.slice(0, -5) in manifest)) {
      await fs.promises.rm(path.join(dir, name), { force: true });
      removed.push(path.join(dir, name));
    }
  }
  return { events: feeds.length, attributes, files, removed, stats };
}
