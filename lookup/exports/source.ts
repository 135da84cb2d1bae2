// The one query behind every export: unexpired indicators of block feeds, one row per value
// (deduplicated across feeds, highest confidence wins), minus anything an allow feed covers.
// Streams with iterate() in primary-key order, so memory stays flat whatever the store holds.
import type { DB } from '../../appliance/db.ts';
import type { IndicatorType } from '../../appliance/types.ts';
import { ipRange, RangeSet, specialUse } from './ranges.ts';

/** Confidence used when neither the indicator nor its feed gives one. */
export const DEFAULT_CONFIDENCE = 50;

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
}

/** Allow data needed beyond exact (type, value) matches: allowed networks and allowed parent domains. */
export class AllowIndex {
  private networks: RangeSet | null = null;
  private readonly domainStmt;

  constructor(private readonly db: DB, private readonly now: number) {
    this.domainStmt = db.prepare(
      `SELECT 1 FROM indicators WHERE type = 'domain' AND value = ? AND kind = 'allow'
         AND (expires_at IS NULL OR expires_at > ?) LIMIT 1`,
    );
  }

  /** Allowed networks are few (cloud ranges, resolvers), so they are held in memory once per export. */
  private allowedNetworks(): RangeSet {
    if (this.networks) return this.networks;
    const set = new RangeSet();
    const rows = this.db
      .prepare(
        `SELECT value FROM indicators WHERE type IN ('ipv4-cidr', 'ipv6-cidr') AND kind = 'allow'
           AND (expires_at IS NULL OR expires_at > ?)`,
      )
      .iterate(this.now) as Iterable<{ value: string }>;
    for (const r of rows) {
      const range = ipRange(r.value);
      if (range) set.add(range);
    }
    this.networks = set;
    return set;
  }

  ipAllowed(value: string): boolean {
    const r = ipRange(value);
    return !!r && this.allowedNetworks().contains(r);
  }

  /** True when a parent of the domain (not the domain itself: exact matches are handled by grouping) is allowed. */
  parentDomainAllowed(domain: string): boolean {
    let dot = domain.indexOf('.');
    while (dot >= 0) {
      const parent = domain.slice(dot + 1);
      if (parent && this.domainStmt.get(parent, this.now)) return true;
      dot = domain.indexOf('.', dot + 1);
    }
    return false;
  }
}

export interface SourceContext {
  db: DB;
  now: number;
  stats: ExportStats;
  allow: AllowIndex;
}

export function sourceContext(db: DB, now: number, stats: ExportStats = newStats()): SourceContext {
  return { db, now, stats, allow: new AllowIndex(db, now) };
}

/** Indicator rows with their feed's category/confidence defaults applied; callers add WHERE/ORDER BY. */
export const ROW_SELECT = `
  SELECT i.value, i.feed, i.kind,
         COALESCE(i.category, f.category) AS category,
         COALESCE(i.confidence, f.confidence, ${DEFAULT_CONFIDENCE}) AS confidence,
         i.first_seen, i.last_seen, i.expires_at, i.extra
    FROM indicators i LEFT JOIN feeds f ON f.name = i.feed`;

const ROWS_SQL = `${ROW_SELECT}
   WHERE i.type = ? AND (i.expires_at IS NULL OR i.expires_at > ?)
   ORDER BY i.type, i.value, i.feed`;

/**
 * Yields the effective block indicators of the given types, type by type, values in byte order.
 * Rows of one value are adjacent in primary-key order, so grouping needs only the current group.
 */
export function* effectiveIndicators(ctx: SourceContext, types: readonly IndicatorType[]): Generator<ExportRow> {
  const stmt = ctx.db.prepare(ROWS_SQL);
  for (const type of types) {
    let group: RawRow[] = [];
    for (const row of stmt.iterate(type, ctx.now) as Iterable<RawRow>) {
      if (group.length && group[0].value !== row.value) {
        const out = finish(ctx, type, group);
        if (out) yield out;
        group = [];
      }
      group.push(row);
    }
    if (group.length) {
      const out = finish(ctx, type, group);
      if (out) yield out;
    }
  }
}

/** One value's rows (all feeds) to its effective export row, or null when allowlisted or allow-only (reason counted). */
export function finish(ctx: SourceContext, type: IndicatorType, group: RawRow[]): ExportRow | null {
  const blocks = group.filter((r) => r.kind === 'block');
  if (!blocks.length) return null; // allow-only value: nothing to export
  if (blocks.length !== group.length) return skipRow(ctx, 'allowlisted');
  const value = group[0].value;
  if (type === 'ipv4' || type === 'ipv6' || type === 'ipv4-cidr' || type === 'ipv6-cidr') {
    const r = ipRange(value);
    if (!r) return skipRow(ctx, 'unparsable');
    if (specialUse.overlaps(r)) return skipRow(ctx, 'internal-address-space');
    if (ctx.allow.ipAllowed(value)) return skipRow(ctx, 'allowlisted-network');
  } else if (type === 'domain') {
    if (ctx.allow.parentDomainAllowed(value)) return skipRow(ctx, 'allowlisted-parent-domain');
  }
  return merge(type, value, blocks);
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
  };
}

/** Allowed values of one type (deduplicated, unexpired), for formats that publish allowlists (RPZ passthru). */
export function* allowedValues(ctx: SourceContext, type: IndicatorType): Generator<string> {
  const stmt = ctx.db.prepare(
    `SELECT DISTINCT value FROM indicators WHERE type = ? AND kind = 'allow'
       AND (expires_at IS NULL OR expires_at > ?) ORDER BY value`,
  );
  for (const r of stmt.iterate(type, ctx.now) as Iterable<{ value: string }>) yield r.value;
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

export function isoTime(unix: number | null): string | null {
  return unix == null ? null : new Date(unix * 1000).toISOString().replace('.000Z', 'Z');
}
