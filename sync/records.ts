// Mapping between a package's Indicator line and its row in the `indicators` table.
// The mapping is exact both ways (dates at second precision), so a state hash recomputed from the
// database equals the one the provider computed from its lines.
import type { Indicator, IndicatorType, FeedKind } from '../appliance/types.ts';

export interface IndicatorRow {
  type: IndicatorType;
  value: string;
  feed: string;
  kind: FeedKind;
  category: string | null;
  confidence: number | null;
  first_seen: number | null;
  last_seen: number | null;
  expires_at: number | null;
  extra: string | null;
}

// Date.parse and toISOString cost ~1 µs each and feeds repeat their dates (a day's first-seen, one
// last-seen for the whole list): both conversions are memoized, bounded, with exactly the same results.
const MEMO_MAX = 65_536;
const secondsOf = new Map<string, number | null>();
const isoOf = new Map<number, string>();

function toSeconds(iso: string | undefined): number | null {
  if (iso === undefined || iso === null) return null;
  let s = secondsOf.get(iso);
  if (s === undefined) {
    const ms = Date.parse(iso);
    s = Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
    if (secondsOf.size >= MEMO_MAX) secondsOf.clear();
    secondsOf.set(iso, s);
  }
  return s;
}

export function secondsToIso(s: number | null | undefined): string | undefined {
  if (s === null || s === undefined) return undefined;
  let iso = isoOf.get(s);
  if (iso === undefined) {
    iso = new Date(s * 1000).toISOString();
    if (isoOf.size >= MEMO_MAX) isoOf.clear();
    isoOf.set(s, iso);
  }
  return iso;
}

/** Canonical ISO form used in packages: second precision, UTC, `Z`. Unparseable → undefined. */
export function canonicalDate(iso: string | undefined): string | undefined {
  return secondsToIso(toSeconds(iso));
}

export function indicatorToRow(ind: Indicator, feed: string, kind: FeedKind): IndicatorRow {
  const extra: Record<string, unknown> = {};
  if (ind.ports && ind.ports.length) extra.ports = ind.ports;
  if (ind.tags && ind.tags.length) extra.tags = ind.tags;
  if (ind.ctx && Object.keys(ind.ctx).length) extra.ctx = ind.ctx;
  return {
    type: ind.t,
    value: ind.v,
    feed,
    kind,
    category: ind.cat ?? null,
    confidence: typeof ind.conf === 'number' ? ind.conf : null,
    first_seen: toSeconds(ind.fs),
    last_seen: toSeconds(ind.ls),
    expires_at: toSeconds(ind.exp),
    extra: Object.keys(extra).length ? JSON.stringify(extra) : null,
  };
}

export function rowToIndicator(row: Pick<IndicatorRow, 'type' | 'value' | 'category' | 'confidence' | 'first_seen' | 'last_seen' | 'expires_at' | 'extra'>): Indicator {
  const ind: Indicator = { v: row.value, t: row.type };
  if (row.category !== null) ind.cat = row.category;
  if (row.confidence !== null) ind.conf = row.confidence;
  const fs = secondsToIso(row.first_seen);
  if (fs) ind.fs = fs;
  const ls = secondsToIso(row.last_seen);
  if (ls) ind.ls = ls;
  const exp = secondsToIso(row.expires_at);
  if (exp) ind.exp = exp;
  if (row.extra) {
    const extra = JSON.parse(row.extra) as { ports?: number[]; tags?: string[]; ctx?: Record<string, unknown> };
    if (extra.ports) ind.ports = extra.ports;
    if (extra.tags) ind.tags = extra.tags;
    if (extra.ctx) ind.ctx = extra.ctx;
  }
  return ind;
}

/** The form a provider must hash and write: exactly what survives a round trip through the store. */
export function canonicalIndicator(ind: Indicator): Indicator {
  return rowToIndicator(indicatorToRow(ind, '', 'block'));
}

/**
 * Sort order of package lines and of the state hash: by type, then value, in Unicode code point order —
 * the same order as SQLite's BINARY collation over UTF-8, so `ORDER BY type, value` agrees with it.
 */
export function compareIndicators(a: { t: string; v: string }, b: { t: string; v: string }): number {
  return a.t !== b.t ? compareCodePoints(a.t, b.t) : compareCodePoints(a.v, b.v);
}

export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // UTF-16 code units order surrogates (D800-DFFF) below E000-FFFF; code points put them above.
    if (x >= 0xd800 && x <= 0xdfff) x += 0x2000;
    else if (x >= 0xe000) x -= 0x800;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x2000;
    else if (y >= 0xe000) y -= 0x800;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/**
 * s[start, end) contains none of `"`, `\\` and control characters: as the body of a JSON string it means
 * itself, so a line can be read without JSON.parse (package lines on apply, NDJSON lookup lines).
 */
export function plainJsonText(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 32 || c === 34 || c === 92) return false;
  }
  return true;
}
