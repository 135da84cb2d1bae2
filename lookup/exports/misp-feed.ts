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
import { AtomicFile } from './atomic-file.ts';
import { runPass, setStats, type RowSink } from './pass.ts';
import { newStats, sourceContext, timeText, type ExportRow, type ExportStats, type SourceContext, type SourceOptions } from './source.ts';
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
const misoText = timeText((d) => d.toISOString().replace('Z', '000+00:00'));
const misoTime = (unix: number | null) => (unix == null ? undefined : misoText(unix));

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

interface EventOut {
  out: AtomicFile;
  uuid: string;
  applied: number;
  n: number;
}

/**
 * The MISP feed as a sink of the export pass (pass.ts): every event is written at once. An indicator goes
 * into the event of each feed its effective row names (its live block listings, and the local overrides'
 * pseudo-feed when an override blocks it), exactly the values each feed's own view (feed-rows.ts) yields.
 * Within an event attributes come in the whole-store order (type, then value).
 */
export class MispFeedSink implements RowSink {
  readonly types = new Set(INDICATOR_TYPES);
  readonly own = newStats();
  result: Omit<MispFeedResult, 'stats'> | null = null;
  private readonly org: { name: string; uuid: string };
  private readonly events = new Map<string, EventOut>();
  private readonly manifest: Record<string, unknown> = {};
  private hashes: AtomicFile | null = null;
  private attributes = 0;

  constructor(private readonly ctx: SourceContext, private readonly dir: string, orgName = 'Outpost') {
    this.org = { name: orgName, uuid: uuidv5(`misp-org:${orgName}`) };
  }

  begin(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    for (const f of blockFeeds(this.ctx)) {
      const head = eventHead(this.ctx.db, f, this.org);
      const out = new AtomicFile(path.join(this.dir, `${head.uuid}.json`));
      this.events.set(f.name, { out, uuid: head.uuid, applied: secs(f.applied_at), n: 0 });
      // {"Event":{…,"Tag":[…]}} → open an Attribute array before the two closing braces.
      out.write(`${JSON.stringify({ Event: head }).slice(0, -2)},"Attribute":[`);
      this.manifest[head.uuid] = { Orgc: head.Orgc, Tag: head.Tag, info: head.info, date: head.date, analysis: head.analysis, threat_level_id: head.threat_level_id, timestamp: head.timestamp };
    }
    this.hashes = new AtomicFile(path.join(this.dir, 'hashes.csv'));
  }

  row(r: ExportRow): void {
    let md5: string | null = null;
    for (const feed of r.feeds) {
      const ev = this.events.get(feed);
      if (!ev) continue; // a feed created after begin() read the list: it gets its event next time
      ev.out.write(`${ev.n ? ',' : ''}\n${JSON.stringify(mispAttribute(feed, r, ev.applied))}`);
      ev.n++;
      this.attributes++;
      this.own.written++;
      md5 ??= md5Hex(r.value);
      this.hashes!.write(`${md5},${ev.uuid}\n`);
    }
  }

  /** Events first, hashes.csv next, manifest.json last: a fetcher never sees a uuid whose file is missing. */
  end(): void {
    for (const ev of this.events.values()) {
      ev.out.write('\n]}}\n');
      ev.out.commit();
    }
    const files = [...this.events.values()].map((ev) => ev.out.file);
    this.events.clear();
    this.hashes!.commit();
    files.push(this.hashes!.file);
    this.hashes = null;
    const man = new AtomicFile(path.join(this.dir, 'manifest.json'));
    man.write(JSON.stringify(this.manifest, null, 1) + '\n');
    man.commit();
    files.push(man.file);
    // Feeds that went away: their events leave the manifest, and their files go after it.
    const removed: string[] = [];
    for (const name of fs.readdirSync(this.dir)) {
      if (EVENT_FILE.test(name) && !(name.slice(0, -5) in this.manifest)) {
        fs.rmSync(path.join(this.dir, name), { force: true });
        removed.push(path.join(this.dir, name));
      }
    }
    this.result = { events: Object.keys(this.manifest).length, attributes: this.attributes, files, removed };
  }

  abort(): void {
    for (const ev of this.events.values()) ev.out.abort();
    this.events.clear();
    this.hashes?.abort();
    this.hashes = null;
  }
}

/** Writes (or refreshes) the MISP feed in `dir`: one event per block feed, hashes.csv, manifest.json. */
export async function writeMispFeed(db: DB, dir: string, opts: MispFeedOptions = {}): Promise<MispFeedResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const ctx = sourceContext(db, now, newStats(), opts);
  const sink = new MispFeedSink(ctx, dir, opts.orgName);
  const byType = runPass(ctx, [sink]);
  return { ...sink.result!, stats: setStats(sink.own, byType, INDICATOR_TYPES) };
}
