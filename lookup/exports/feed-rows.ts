// Per-feed view of the export source, for consumers organised by feed (TAXII collections, MISP feed
// events): the values one block feed lists, in (type, value) order from a keyset cursor, each turned
// into the same effective row the whole-store exports use (merged across feeds, allowlists, default
// expiry and local overrides applied),
// so an indicator has one id and one content whichever feed it is reached through.
import { getMeta } from '../../appliance/db.ts';
import { INDICATOR_TYPES, type IndicatorType } from '../../appliance/types.ts';
import { OVERRIDE_CATEGORY } from '../overrides.ts';
import { OVERRIDE_FEED } from '../verdict.ts';
import { ROW_COLUMNS, finish, rawRow, type ExportRow, type RawRow, type RowTuple, type SourceContext } from './source.ts';

/** Position in a feed's (type, value) order; rows strictly after it are read. */
export interface FeedCursor {
  type: string;
  value: string;
}

export interface FeedInfo {
  name: string;
  kind: 'block' | 'allow';
  version: number;
  created: string;
  applied_at: string;
  count: number;
  category: string | null;
}

/** The block feeds, plus the local block overrides as a feed of their own (OVERRIDE_FEED) when there are any. */
export function blockFeeds(ctx: SourceContext): FeedInfo[] {
  const feeds = ctx.db
    .prepare(`SELECT name, kind, version, created, applied_at, count, category FROM feeds WHERE kind = 'block' ORDER BY name`)
    .all() as FeedInfo[];
  const local = overrideFeed(ctx);
  return local ? [...feeds, local].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) : feeds;
}

/** Active block overrides, in (type, value) byte order: what the OVERRIDE_FEED pseudo-feed lists. */
function overrideKeys(ctx: SourceContext): FeedCursor[] {
  const keys: FeedCursor[] = [];
  for (const type of INDICATOR_TYPES) {
    for (const o of ctx.overrides.values(type, 'block', ctx.now)) keys.push({ type, value: o.value });
  }
  const b = (s: string) => Buffer.from(s, 'utf8');
  keys.sort((x, y) => Buffer.compare(b(x.type), b(y.type)) || Buffer.compare(b(x.value), b(y.value)));
  return keys.filter((k, i) => i === 0 || k.type !== keys[i - 1].type || k.value !== keys[i - 1].value);
}

/**
 * The local block overrides as a feed: version = the overrides revision, created/applied_at = the last
 * change (an override added, removed or expired), so a consumer that polls by time sees every change.
 */
export function overrideFeed(ctx: SourceContext): FeedInfo | null {
  const count = overrideKeys(ctx).length;
  if (!count) return null;
  const nowIso = new Date(ctx.now * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const t = ctx.db
    .prepare(
      `SELECT max(max(created_at), coalesce(max(revoked_at), ''), coalesce(max(CASE WHEN expires_at <= ? THEN expires_at END), '')) AS changed
         FROM overrides WHERE created_at <= ?`,
    )
    .get(nowIso, nowIso) as { changed: string | null };
  const changed = t.changed || nowIso;
  return {
    name: OVERRIDE_FEED, kind: 'block', version: Number(getMeta(ctx.db, 'overrides_rev') ?? 0),
    created: changed, applied_at: changed, count, category: OVERRIDE_CATEGORY.block,
  };
}

const GROUP_SQL = `${ROW_COLUMNS}
   WHERE type = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)
   ORDER BY feed`;

// indicators_feed is (feed, type) and the table is WITHOUT ROWID, so the index carries the primary key
// after it: (feed, type, value) order comes straight from the index.
const PAGE_SQL = `
  SELECT type, value FROM indicators
   WHERE feed = ? AND kind = 'block' AND (expires_at IS NULL OR expires_at > ?)
     AND (type > ? OR (type = ? AND value > ?))
   ORDER BY type, value`;

/**
 * Yields the effective rows of the values `feed` lists, after `cursor`, in (type, value) order.
 * Values the feed lists but that are allowlisted (or internal address space) are skipped and counted
 * in ctx.stats, exactly as in the whole-store exports. The caller stops iterating when it has enough.
 */
export function* feedRows(ctx: SourceContext, feed: string, cursor: FeedCursor | null = null): Generator<ExportRow & { key: FeedCursor }> {
  const stmt = ctx.db.prepare(GROUP_SQL).raw(true);
  const group = (type: string, value: string): RawRow[] => (stmt.all(type, value, ctx.now) as RowTuple[]).map((t) => rawRow(ctx, t));
  if (feed === OVERRIDE_FEED) {
    // The values local block overrides name, each as the whole-store exports show it (listed or not).
    const b = (s: string) => Buffer.from(s, 'utf8');
    for (const k of overrideKeys(ctx)) {
      if (cursor && (Buffer.compare(b(k.type), b(cursor.type)) || Buffer.compare(b(k.value), b(cursor.value))) <= 0) continue;
      const row = finish(ctx, k.type as IndicatorType, group(k.type, k.value), k.value);
      if (row?.feeds.includes(OVERRIDE_FEED)) yield { ...row, key: k };
    }
    return;
  }
  const page = ctx.db.prepare(PAGE_SQL);
  const t = cursor?.type ?? '';
  const v = cursor?.value ?? '';
  for (const k of page.iterate(feed, ctx.now, t, t, v) as Iterable<FeedCursor>) {
    const rows = group(k.type, k.value);
    // This feed's own listing must still count (its default lifetime, as lookups apply it).
    const own = rows.find((r) => r.feed === feed && r.kind === 'block');
    if (!own || !ctx.live.live(k.type, own.feed, own.expires_at, own.feed_created)) continue;
    const row = finish(ctx, k.type as IndicatorType, rows);
    if (row) yield { ...row, key: { type: k.type, value: k.value } };
  }
}
