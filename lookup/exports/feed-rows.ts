// Per-feed view of the export source, for consumers organised by feed (TAXII collections, MISP feed
// events): the values one block feed lists, in (type, value) order from a keyset cursor, each turned
// into the same effective row the whole-store exports use (merged across feeds, allowlists applied),
// so an indicator has one id and one content whichever feed it is reached through.
import type { IndicatorType } from '../../appliance/types.ts';
import { ROW_SELECT, finish, type ExportRow, type RawRow, type SourceContext } from './source.ts';

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

export function blockFeeds(ctx: SourceContext): FeedInfo[] {
  return ctx.db
    .prepare(`SELECT name, kind, version, created, applied_at, count, category FROM feeds WHERE kind = 'block' ORDER BY name`)
    .all() as FeedInfo[];
}

const GROUP_SQL = `${ROW_SELECT}
   WHERE i.type = ? AND i.value = ? AND (i.expires_at IS NULL OR i.expires_at > ?)
   ORDER BY i.feed`;

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
  const page = ctx.db.prepare(PAGE_SQL);
  const group = ctx.db.prepare(GROUP_SQL);
  const t = cursor?.type ?? '';
  const v = cursor?.value ?? '';
  for (const k of page.iterate(feed, ctx.now, t, t, v) as Iterable<FeedCursor>) {
    const rows = group.all(k.type, k.value, ctx.now) as RawRow[];
    const row = finish(ctx, k.type as IndicatorType, rows);
    if (row) yield { ...row, key: { type: k.type, value: k.value } };
  }
}
