// The one query behind every export: unexpired indicators of block feeds, one row per value
// (deduplicated across feeds, highest confidence wins), minus anything an allow feed covers, with local
// overrides applied exactly as lookups apply them. Streams with iterate() in primary-key order, so memory
// stays flat whatever the store holds.
//
// Agreement with lookups (docs/integrations.md, "What every export contains"):
//  - expiry: a row's own `expires_at`, else its feed package's creation + the type's default lifetime —
//    the engine's rule, through the same FeedPolicy.expiresAt (appliance/freshness.ts → sync/expiry.ts);
//  - freshness: rows of a feed that is fail-closed and stale (FeedPolicy.withheld) do not count, allow rows
//    included — a lookup withholds them the same way;
//  - local overrides: OverrideIndex.decision() runs the lookup's override matching and decide()'s override
//    rule on each exported value; an allow decision leaves the value out, a block decision exports it
//    (also when no feed lists it, or an allow feed does) with the override's reason.
import type { DB } from '../../appliance/db.ts';
import { FeedPolicy, type PolicyOptions } from '../../appliance/freshness.ts';
import type { IndicatorType } from '../../appliance/types.ts';
import { OVERRIDE_CATEGORY, OverrideIndex, type OverrideRow } from '../overrides.ts';
import { DEFAULT_CONFIDENCE, OVERRIDE_FEED } from '../verdict.ts';
import { ipRange, RangeSet, specialUse, type IpRange } from './ranges.ts';

/** Confidence of a value a local block override decides: a lookup answers it malicious at 100. */
export const OVERRIDE_CONFIDENCE = 100;

export interface ExportRow {
  type: IndicatorType;
  value: string;
  /** Block feeds listing the value, sorted. */
  feeds: string[];
  /** Category of the most confident listing. */
  category: string | null;
  confidence: number;
  first_seen: number | null;
  last_seen: number | null;
  /** null = never expires (at least one listing has no expiry). */
  expires_at: number | null;
  tags: string[];
  ports: number[];
  /** The reason of the local block override that decides the value; null when feeds alone list it. */
  reason: string | null;
}

/** What an export left out and why, so nothing is dropped silently. */
export interface ExportStats {
  written: number;
  skipped: Record<string, number>;
}

export function newStats(): ExportStats {
  return { written: 0, skipped: {} };
}

export function skip(stats: ExportStats, reason: string, n = 1): void {
  stats.skipped[reason] = (stats.skipped[reason] ?? 0) + n;
}

export interface RawRow {
  value: string;
  feed: string;
  kind: string;
  category: string | null;
  confidence: number;
  first_seen: number | null;
  last_seen: number | null;
  expires_at: number | null;
  extra: string | null;
  /** The feed package's creation time (ISO): rows without `expires_at` age from it. */
  feed_created: string | null;
}

/**
 * Whether a stored row still counts, by the lookup engine's rule: its own `expires_at`, else its feed
 * package's creation + the type's default lifetime (FeedPolicy.expiresAt, the function the engine calls).
 * The SQL of every export already drops rows whose own expiry has passed; this adds the default.
 */
export class Liveness {
  private readonly policy: FeedPolicy;
  private readonly defaults = new Map<string, number | null>();

  /** Feeds that are fail-closed and stale at the export time: their rows do not count, as in a lookup. */
  readonly withheld: Set<string>;

  constructor(db: DB, private readonly now: number, opts: SourceOptions = {}) {
    this.policy = new FeedPolicy(db, opts);
    this.withheld = this.policy.withheld(now);
  }

  /** Unix seconds at which the row stops counting, or null for never. */
  expiresAt(type: string, feed: string, expiresAt: number | null, feedCreated: string | null): number | null {
    if (expiresAt != null) return expiresAt;
    const key = `${feed}\u0000${type}`;
    let exp = this.defaults.get(key);
    if (exp === undefined) {
      exp = this.policy.expiresAt(type, null, feedCreated);
      this.defaults.set(key, exp);
    }
    return exp;
  }

  /** Expiring at or before the export time, or a withheld feed's row, means left out (as the SQL filters own expiries). */
  live(type: string, feed: string, expiresAt: number | null, feedCreated: string | null): boolean {
    if (this.withheld.size !== 0 && this.withheld.has(feed)) return false;
    const exp = this.expiresAt(type, feed, expiresAt, feedCreated);
    return exp == null || exp > this.now;
  }
}

interface AllowRow {
  value: string;
  feed: string;
  expires_at: number | null;
  feed_created: string | null;
}

/** Allow data needed beyond exact (type, value) matches: allowed networks and allowed parent domains. */
export class AllowIndex {
  private networks: RangeSet | null = null;
  private domains: Set<string> | null | undefined;
  private readonly domainStmt;

  /** `heldDomains`: at most this many allowed domains are held in memory (more: one query per parent). */
  constructor(
    private readonly db: DB,
    private readonly now: number,
    private readonly liveness: Liveness = new Liveness(db, now),
    private readonly heldDomains = ALLOWED_DOMAINS_HELD,
  ) {
    this.domainStmt = db.prepare(
      `SELECT i.value, i.feed, i.expires_at, f.created AS feed_created
         FROM indicators i LEFT JOIN feeds f ON f.name = i.feed
        WHERE i.type = 'domain' AND i.value = ? AND i.kind = 'allow' AND (i.expires_at IS NULL OR i.expires_at > ?)`,
    );
  }

  /** Allowed networks are few (cloud ranges, resolvers), so they are held in memory once per export. */
  private allowedNetworks(): RangeSet {
    if (this.networks) return this.networks;
    const set = new RangeSet();
    const rows = this.db
      .prepare(
        `SELECT i.type, i.value, i.feed, i.expires_at, f.created AS feed_created
           FROM indicators i LEFT JOIN feeds f ON f.name = i.feed
          WHERE i.type IN ('ipv4-cidr', 'ipv6-cidr') AND i.kind = 'allow' AND (i.expires_at IS NULL OR i.expires_at > ?)`,
      )
      .iterate(this.now) as Iterable<AllowRow & { type: string }>;
    for (const r of rows) {
      if (!this.liveness.live(r.type, r.feed, r.expires_at, r.feed_created)) continue;
      const range = ipRange(r.value);
      if (range) set.add(range);
    }
    this.networks = set;
    return set;
  }

  /** True when the address or network (`ipRange` of the value) lies inside an allowed network. */
  ipAllowed(range: IpRange): boolean {
    return this.allowedNetworks().contains(range);
  }

  /** True when a parent of the domain (not the domain itself: exact matches are handled by grouping) is allowed. */
  parentDomainAllowed(domain: string): boolean {
    let dot = domain.indexOf('.');
    while (dot >= 0) {
      const parent = domain.slice(dot + 1);
      if (parent && this.domainAllowed(parent)) return true;
      dot = domain.indexOf('.', dot + 1);
    }
    return false;
  }

  private domainAllowed(domain: string): boolean {
    const held = this.allowedDomains();
    if (held) return held.has(domain);
    for (const r of this.domainStmt.iterate(domain, this.now) as Iterable<AllowRow>) {
      if (this.liveness.live('domain', r.feed, r.expires_at, r.feed_created)) return true;
    }
    return false;
  }

  /**
   * The live allowed domains in memory, read once per export through the (feed, type) index, when there
   * are at most `heldDomains` of them; else null and each parent is one query (2 µs each: a
   * domain export asks about every listed domain's parents).
   */
  private allowedDomains(): Set<string> | null {
    if (this.domains !== undefined) return this.domains;
    const feeds = this.db.prepare(`SELECT name, created FROM feeds WHERE kind = 'allow'`).all() as Array<{ name: string; created: string | null }>;
    const count = this.db.prepare(`SELECT count(*) AS n FROM indicators WHERE feed = ? AND type = 'domain'`);
    let n = 0;
    for (const f of feeds) n += (count.get(f.name) as { n: number }).n;
    if (n > this.heldDomains) return (this.domains = null);
    const set = new Set<string>();
    const rows = this.db.prepare(
      `SELECT value, expires_at FROM indicators WHERE feed = ? AND type = 'domain' AND kind = 'allow' AND (expires_at IS NULL OR expires_at > ?)`,
    ).raw(true);
    for (const f of feeds) {
      for (const [value, expiresAt] of rows.iterate(f.name, this.now) as Iterable<[string, number | null]>) {
        if (this.liveness.live('domain', f.name, expiresAt, f.created)) set.add(value);
      }
    }
    return (this.domains = set);
  }
}

/** Allowed domains an export holds in memory (about 100 bytes each); more are asked one query at a time. */
export const ALLOWED_DOMAINS_HELD = 2_000_000;

export interface SourceContext {
  db: DB;
  now: number;
  stats: ExportStats;
  allow: AllowIndex;
  /** Default-lifetime expiry, as lookups apply it. */
  live: Liveness;
  /** Active local overrides at `now`, as lookups apply them. */
  overrides: OverrideIndex;
  /** Each feed's defaults for its rows (category, confidence) and its package's creation time. */
  feeds: Map<string, FeedDefaults>;
}

interface FeedDefaults {
  category: string | null;
  confidence: number | null;
  created: string | null;
}

/**
 * The row policy exports apply, as the lookup engine is configured (appliance/freshness.ts policyOptionsOf):
 * default lifetimes per type (OUTPOST_EXPIRY_*_DAYS; default: built-in) and the stale limit of feeds without
 * their own (OUTPOST_STALE_AFTER_S), which leaves fail-closed stale feeds out.
 */
export type SourceOptions = Pick<PolicyOptions, 'expiryDays' | 'staleAfterS'>;

export function sourceContext(db: DB, now: number, stats: ExportStats = newStats(), opts: SourceOptions = {}): SourceContext {
  const live = new Liveness(db, now, opts);
  const feeds = new Map<string, FeedDefaults>();
  for (const f of db.prepare('SELECT name, category, confidence, created FROM feeds').all() as Array<FeedDefaults & { name: string }>) {
    feeds.set(f.name, { category: f.category, confidence: f.confidence, created: f.created });
  }
  return { db, now, stats, allow: new AllowIndex(db, now, live), live, overrides: new OverrideIndex(db, { now }), feeds };
}

/**
 * Indicator rows as exports read them; callers add WHERE/ORDER BY, run the statement with `raw(true)` and
 * turn each row into a RawRow with `rawRow` (the feed's defaults come from the context, not from a join:
 * a join and named columns were half of SQLite's time per row).
 */
export const ROW_COLUMNS = `SELECT value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra FROM indicators`;

export type RowTuple = [string, string, string, string | null, number | null, number | null, number | null, number | null, string | null];

/** A ROW_COLUMNS row with its feed's defaults applied (category, confidence, the package's creation time). */
export function rawRow(ctx: SourceContext, t: RowTuple): RawRow {
  const f = ctx.feeds.get(t[1]);
  return {
    value: t[0],
    feed: t[1],
    kind: t[2],
    category: t[3] ?? f?.category ?? null,
    confidence: t[4] ?? f?.confidence ?? DEFAULT_CONFIDENCE,
    first_seen: t[5],
    last_seen: t[6],
    expires_at: t[7],
    extra: t[8],
    feed_created: f?.created ?? null,
  };
}

const ROWS_SQL = `${ROW_COLUMNS}
   WHERE type = ? AND (expires_at IS NULL OR expires_at > ?)
   ORDER BY type, value, feed`;

/** SQLite's BINARY order (memcmp of UTF-8), which the store's primary key iterates in. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Yields the effective block indicators of the given types, type by type, values in byte order.
 * Rows of one value are adjacent in primary-key order, so grouping needs only the current group.
 * Values that only a local block override names (few, held in memory) are merged into that order.
 */
export function* effectiveIndicators(ctx: SourceContext, types: readonly IndicatorType[]): Generator<ExportRow> {
  const stmt = ctx.db.prepare(ROWS_SQL).raw(true);
  for (const type of types) {
    const extra = [...new Set(ctx.overrides.values(type, 'block', ctx.now).map((o) => o.value))].sort(byteOrder);
    let k = 0;
    // The group of `value`, after every override-only value that sorts before it.
    function* emit(value: string, group: RawRow[]): Generator<ExportRow> {
      while (k < extra.length && byteOrder(extra[k], value) < 0) {
        const out = finish(ctx, type, [], extra[k++]);
        if (out) yield out;
      }
      if (k < extra.length && extra[k] === value) k++;
      const out = finish(ctx, type, group, value);
      if (out) yield out;
    }
    let group: RawRow[] = [];
    for (const t of stmt.iterate(type, ctx.now) as Iterable<RowTuple>) {
      const row = rawRow(ctx, t);
      if (group.length && group[0].value !== row.value) {
        yield* emit(group[0].value, group);
        group = [];
      }
      group.push(row);
    }
    if (group.length) yield* emit(group[0].value, group);
    while (k < extra.length) {
      const out = finish(ctx, type, [], extra[k++]);
      if (out) yield out;
    }
  }
}

/**
 * One value's rows (all feeds, own expiry already checked) to its effective export row, or null when it
 * is not to be exported (reason counted). Order of the rules, as in a lookup: a local override decides
 * (allow → out, block → in); else rows past their default lifetime and rows of withheld feeds (fail-closed,
 * stale) are dropped, and allowlists win.
 */
export function finish(ctx: SourceContext, type: IndicatorType, group: RawRow[], value: string | undefined = group[0]?.value): ExportRow | null {
  if (value === undefined) return null;
  const rows: RawRow[] = [];
  let expired = false;
  let withheld = false;
  for (const r of group) {
    if (ctx.live.withheld.size !== 0 && ctx.live.withheld.has(r.feed)) {
      withheld = true; // fail-closed and stale: its rows do not count, as in a lookup
      continue;
    }
    const exp = ctx.live.expiresAt(type, r.feed, r.expires_at, r.feed_created);
    if (exp != null && exp <= ctx.now) expired = true;
    else rows.push(exp === r.expires_at ? r : { ...r, expires_at: exp }); // as lookups report it: the effective expiry
  }
  const blocks = rows.filter((r) => r.kind === 'block');
  const decision = ctx.overrides.decision(type, value, ctx.now);
  if (decision?.action === 'allow') return blocks.length ? skipRow(ctx, 'override-allow') : null;
  if (decision?.action === 'block') return overridden(type, value, blocks, decision.row);
  if (!blocks.length) {
    if (!group.some((r) => r.kind === 'block')) return null; // allow-only
    return withheld ? skipRow(ctx, 'stale-fail-closed-feed') : expired ? skipRow(ctx, 'expired-default-lifetime') : null;
  }
  if (blocks.length !== rows.length) return skipRow(ctx, 'allowlisted');
  if (type === 'ipv4' || type === 'ipv6' || type === 'ipv4-cidr' || type === 'ipv6-cidr') {
    const r = ipRange(value);
    if (!r) return skipRow(ctx, 'unparsable');
    if (specialUse.overlaps(r)) return skipRow(ctx, 'internal-address-space');
    if (ctx.allow.ipAllowed(r)) return skipRow(ctx, 'allowlisted-network');
  } else if (type === 'domain') {
    if (ctx.allow.parentDomainAllowed(value)) return skipRow(ctx, 'allowlisted-parent-domain');
  }
  return merge(type, value, blocks);
}

/**
 * A value a local block override decides: exported whatever allow feeds or internal-space rules say (a
 * lookup answers it malicious, confidence 100). Listed too: the feeds' row plus the override; else the
 * override alone (category local-block, first seen when it was added, expiring with it).
 */
function overridden(type: IndicatorType, value: string, blocks: RawRow[], o: OverrideRow): ExportRow {
  const oExp = o.expires_at ? Math.floor(Date.parse(o.expires_at) / 1000) : null;
  if (!blocks.length) {
    return {
      type, value, feeds: [OVERRIDE_FEED], category: OVERRIDE_CATEGORY.block, confidence: OVERRIDE_CONFIDENCE,
      first_seen: Math.floor(Date.parse(o.created_at) / 1000), last_seen: null, expires_at: oExp, tags: [], ports: [], reason: o.reason,
    };
  }
  const m = merge(type, value, blocks);
  return {
    ...m,
    feeds: [...m.feeds, OVERRIDE_FEED].sort(),
    confidence: OVERRIDE_CONFIDENCE,
    expires_at: m.expires_at == null || oExp == null ? null : Math.max(m.expires_at, oExp),
    reason: o.reason,
  };
}

function skipRow(ctx: SourceContext, reason: string): null {
  skip(ctx.stats, reason);
  return null;
}

function merge(type: IndicatorType, value: string, rows: RawRow[]): ExportRow {
  let best = rows[0];
  let firstSeen: number | null = null;
  let lastSeen: number | null = null;
  let expires: number | null = 0;
  const tags = new Set<string>();
  const ports = new Set<number>();
  for (const r of rows) {
    if (r.confidence > best.confidence) best = r;
    if (r.first_seen != null && (firstSeen == null || r.first_seen < firstSeen)) firstSeen = r.first_seen;
    if (r.last_seen != null && (lastSeen == null || r.last_seen > lastSeen)) lastSeen = r.last_seen;
    if (r.expires_at == null) expires = null;
    else if (expires != null && r.expires_at > expires) expires = r.expires_at;
    if (r.extra) {
      try {
        const x = JSON.parse(r.extra) as { tags?: unknown; ports?: unknown };
        if (Array.isArray(x.tags)) for (const t of x.tags) if (typeof t === 'string') tags.add(t);
        if (Array.isArray(x.ports)) for (const p of x.ports) if (Number.isInteger(p)) ports.add(p as number);
      } catch {
        // extra is written by our own import; a damaged blob only loses context, never the indicator
      }
    }
  }
  return {
    type,
    value,
    feeds: rows.map((r) => r.feed).sort(),
    category: best.category,
    confidence: Math.max(0, Math.min(100, Math.round(best.confidence))),
    first_seen: firstSeen,
    last_seen: lastSeen,
    expires_at: expires,
    tags: [...tags].sort(),
    ports: [...ports].sort((a, b) => a - b),
    reason: null,
  };
}

/**
 * Values of one type a lookup answers as allowed, for formats that publish allowlists (RPZ passthru):
 * live allow-feed values and local allow overrides, minus any a local block override decides.
 * Deduplicated, in byte order.
 */
export function* allowedValues(ctx: SourceContext, type: IndicatorType): Generator<string> {
  const stmt = ctx.db.prepare(
    `SELECT i.value, i.feed, i.expires_at, f.created AS feed_created
       FROM indicators i LEFT JOIN feeds f ON f.name = i.feed
      WHERE i.type = ? AND i.kind = 'allow' AND (i.expires_at IS NULL OR i.expires_at > ?) ORDER BY i.value`,
  );
  const extra = [...new Set(ctx.overrides.values(type, 'allow', ctx.now).map((o) => o.value))].sort(byteOrder);
  let k = 0;
  let last: string | null = null;
  const allowed = (value: string) => ctx.overrides.decision(type, value, ctx.now)?.action !== 'block';
  for (const r of stmt.iterate(type, ctx.now) as Iterable<AllowRow>) {
    if (r.value === last || !ctx.live.live(type, r.feed, r.expires_at, r.feed_created)) continue;
    while (k < extra.length && byteOrder(extra[k], r.value) <= 0) {
      const v = extra[k++];
      if (v !== r.value && allowed(v)) yield v;
    }
    last = r.value;
    if (allowed(r.value)) yield r.value;
  }
  while (k < extra.length) {
    const v = extra[k++];
    if (v !== last && allowed(v)) yield v;
  }
}

/** Joins lines into ~64 KiB chunks: one write per chunk instead of one per line. */
export function* chunked(lines: Iterable<string>, size = 65_536): Generator<string> {
  let buf = '';
  for (const line of lines) {
    buf += line;
    if (buf.length >= size) {
      yield buf;
      buf = '';
    }
  }
  if (buf) yield buf;
}

/**
 * A time formatter that remembers the last few unix times it formatted: an export formats two or three
 * times per row, and neighbouring rows often share them (a feed's package time, a default expiry).
 */
export function timeText(format: (d: Date) => string): (unix: number) => string {
  const cache = new Map<number, string>();
  return (unix) => {
    let s = cache.get(unix);
    if (s === undefined) {
      if (cache.size >= 64) cache.clear();
      s = format(new Date(unix * 1000));
      cache.set(unix, s);
    }
    return s;
  };
}

const isoSeconds = timeText((d) => d.toISOString().replace('.000Z', 'Z'));

/** ISO time without milliseconds (null stays null). */
export function isoTime(unix: number | null): string | null {
  return unix == null ? null : isoSeconds(unix);
}
