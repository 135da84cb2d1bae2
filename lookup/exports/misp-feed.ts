// MISP feed layout (what MISP's feed fetcher, app/Model/Feed.php, and PyMISP's feed generator use):
//   manifest.json   event uuid → {Orgc, Tag, info, date, analysis, threat_level_id, timestamp}
//   <uuid>.json     {"Event": {…, "Attribute": [...]}} — one event per block feed
//   hashes.csv      md5(attribute value),event uuid — MISP's feed cache/overlap lookups
// Attributes carry MISP types (ip-dst, domain, url, md5, sha1, sha256, email-src), to_ids true and the
// type's default category. Event and attribute uuids are UUIDv5 of the feed (and value), so a MISP
// instance updates the same event on every pull; the event timestamp is the feed's apply time, which
// is what MISP compares to decide whether to fetch an event again.
// Files are replaced atomically; manifest.json last, so a fetcher never sees a uuid whose file is missing.
import crypto, { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { DB } from '../../appliance/db.ts';
import { INDICATOR_TYPES, type IndicatorType } from '../../appliance/types.ts';
import { blockFeeds, type FeedInfo } from './feed-rows.ts';
import { AtomicFile, writeAtomic } from './index.ts';
import { effectiveIndicators, newStats, sourceContext, type ExportRow, type ExportStats, type SourceOptions } from './source.ts';
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

/** md5 hex of a value (hashes.csv); the one-shot crypto.hash where Node has it (≥ 20.12). */
const md5Hex: (s: string) => string =
  typeof crypto.hash === 'function' ? (s) => crypto.hash('md5', s, 'hex') : (s) => createHash('md5').update(s, 'utf8').digest('hex');

const EVENT_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json$/;

/**
 * Writes (or refreshes) the MISP feed in `dir`: one event per block feed, hashes.csv, manifest.json.
 * One pass over the effective indicators (source.ts) writes every event at once: an indicator goes into
 * the event of each feed its effective row names (its live block listings, and the local overrides'
 * pseudo-feed when an override blocks it), exactly the values each feed's own view (feed-rows.ts) yields.
 * Within an event attributes come in the whole-store order (type, then value).
 */
export async function writeMispFeed(db: DB, dir: string, opts: MispFeedOptions = {}): Promise<MispFeedResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const org = { name: opts.orgName ?? 'Outpost', uuid: uuidv5(`misp-org:${opts.orgName ?? 'Outpost'}`) };
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  const stats = newStats();
  const ctx = sourceContext(db, now, stats, opts);
  const feeds = blockFeeds(ctx);
  const manifest: Record<string, unknown> = {};
  const events = new Map<string, { out: AtomicFile; uuid: string; applied: number; n: number }>();
  const open: AtomicFile[] = [];
  let attributes = 0;
  try {
    for (const f of feeds) {
      const head = eventHead(db, f, org);
      const out = await AtomicFile.open(path.join(dir, `${head.uuid}.json`));
      open.push(out);
      // {"Event":{…,"Tag":[…]}} → open an Attribute array before the two closing braces.
      await out.write(`${JSON.stringify({ Event: head }).slice(0, -2)},"Attribute":[`);
      events.set(f.name, { out, uuid: head.uuid, applied: secs(f.applied_at), n: 0 });
      manifest[head.uuid] = { Orgc: head.Orgc, Tag: head.Tag, info: head.info, date: head.date, analysis: head.analysis, threat_level_id: head.threat_level_id, timestamp: head.timestamp };
    }
    const hashes = await AtomicFile.open(path.join(dir, 'hashes.csv'));
    open.push(hashes);
    for (const r of effectiveIndicators(ctx, INDICATOR_TYPES)) {
      let md5: string | null = null;
      for (const feed of r.feeds) {
        const ev = events.get(feed);
        if (!ev) continue; // a feed created after blockFeeds read the list: it gets its event next time
        await ev.out.write(`${ev.n ? ',' : ''}\n${JSON.stringify(mispAttribute(feed, r, ev.applied))}`);
        ev.n++;
        attributes++;
        stats.written++;
        md5 ??= md5Hex(r.value);
        await hashes.write(`${md5},${ev.uuid}\n`);
      }
    }
    // Events first, hashes.csv next, manifest.json last: a fetcher never sees a uuid whose file is missing.
    for (const ev of events.values()) {
      await ev.out.write('\n]}}\n');
      await ev.out.commit();
    }
    await hashes.commit();
    open.length = 0;
  } finally {
    for (const out of open) await out.abort();
  }
  const files = [...[...events.values()].map((ev) => ev.out.file), path.join(dir, 'hashes.csv')];
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
