// Per-feed freshness and the lookup policy that follows from it and from indicator expiry.
//
// feeds.settings (JSON) may hold `stale_after_s` (this feed's data-age limit; default: the appliance's
// staleAfterS) and `fail_mode` ("open", the default: a stale feed keeps answering; "closed": a stale feed's
// matches are withheld and every result carries `stale: true` and `stale_feeds`). A feed is stale when the
// creation time of its applied package is older than its limit. Any stale feed makes /healthz 503 "stale".
import type { DB } from './db.ts';
import { audit } from './db.ts';
import { OutpostError } from './errors.ts';
import type { LookupResult } from './types.ts';
import { DEFAULT_EXPIRY_DAYS, effectiveExpiry, expiryDaysOf, type ExpiryDays } from '../sync/expiry.ts';
import type { Config } from './config.ts';

export type FailMode = 'open' | 'closed';

export interface FeedSettings {
  stale_after_s?: number;
  fail_mode?: FailMode;
  [other: string]: unknown;
}

export interface FeedFreshness {
  name: string;
  age_s: number;
  stale_after_s: number;
  fail_mode: FailMode;
  stale: boolean;
}

/** A lookup result with the fail-closed flag (the contract's shape, extended). */
export type FlaggedResult = LookupResult & { stale?: true; stale_feeds?: string[] };

export function parseSettings(text: string | null | undefined): FeedSettings {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as FeedSettings) : {};
  } catch {
    return {}; // settings are written by setFeedSettings only; a damaged value falls back to defaults
  }
}

/** Every feed's age against its own limit. */
export function feedFreshness(db: DB, staleAfterS: number, nowMs = Date.now()): FeedFreshness[] {
  const rows = db.prepare('SELECT name, created, settings FROM feeds ORDER BY name').all() as { name: string; created: string; settings: string | null }[];
  return rows.map((r) => {
    const s = parseSettings(r.settings);
    const limit = typeof s.stale_after_s === 'number' && s.stale_after_s > 0 ? s.stale_after_s : staleAfterS;
    const t = Date.parse(r.created);
    const age = Number.isFinite(t) ? Math.max(0, Math.floor((nowMs - t) / 1000)) : Number.MAX_SAFE_INTEGER;
    return { name: r.name, age_s: age, stale_after_s: limit, fail_mode: s.fail_mode === 'closed' ? 'closed' : 'open', stale: age > limit };
  });
}

/** "90s", "45m", "6h", "7d", "2w" or plain seconds → seconds; "default" → undefined (use the appliance limit). */
export function parseDuration(text: string): number | undefined {
  const t = text.trim().toLowerCase();
  if (t === 'default' || t === 'off') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?$/.exec(t);
  if (!m) throw new OutpostError('E_USAGE', `"${text}" is not a duration; use e.g. 3600, 90m, 6h, 2d, 1w or "default"`);
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[(m[2] ?? 's') as 's'];
  if (!(n >= 1)) throw new OutpostError('E_USAGE', `duration "${text}" must be at least one second`);
  return Math.round(n);
}

/** `outpost feed set`: merges into feeds.settings; `staleAfterS: null` returns to the appliance default. */
export function setFeedSettings(db: DB, feed: string, change: { staleAfterS?: number | null; failMode?: FailMode }, actor = 'cli'): FeedSettings {
  if (change.failMode !== undefined && change.failMode !== 'open' && change.failMode !== 'closed') {
    throw new OutpostError('E_USAGE', `--fail must be open or closed, got "${String(change.failMode)}"`);
  }
  return db.transaction(() => {
    const row = db.prepare('SELECT settings FROM feeds WHERE name = ?').get(feed) as { settings: string | null } | undefined;
    if (!row) throw new OutpostError('E_NOT_FOUND', `no feed "${feed}" on this appliance (outpost status lists them)`);
    const s = parseSettings(row.settings);
    if (change.staleAfterS === null) delete s.stale_after_s;
    else if (change.staleAfterS !== undefined) s.stale_after_s = change.staleAfterS;
    if (change.failMode !== undefined) s.fail_mode = change.failMode;
    db.prepare('UPDATE feeds SET settings = ? WHERE name = ?').run(JSON.stringify(s), feed);
    audit(db, actor, 'feed.settings', { subject: feed, detail: s });
    return s;
  }).immediate();
}

/**
 * The row policy of this appliance's configuration — default lifetimes and the stale limit — for the
 * lookup engine's FeedPolicy and for every export and TAXII collection, so they all count the same rows.
 */
export function policyOptionsOf(cfg: Config): { expiryDays: ExpiryDays; staleAfterS: number } {
  return { expiryDays: expiryDaysOf(cfg), staleAfterS: cfg.staleAfterS };
}

export interface PolicyOptions {
  expiryDays?: ExpiryDays;
  staleAfterS?: number;
  /** How long the set of fail-closed stale feeds is cached, ms (settings may change from the CLI). */
  cacheMs?: number;
}

/**
 * What the lookup engine asks per confirmed row: when does it expire (own `exp` or the type default), and
 * is its feed withheld (fail-closed and stale)? Staleness moves with the clock, not with generations, so
 * the set is re-read from `feeds` every few seconds.
 */
export class FeedPolicy {
  readonly expiryDays: ExpiryDays;
  readonly staleAfterS: number;
  private readonly cacheMs: number;
  private cachedAt = -Infinity;
  private closed: Set<string> = new Set();
  private closedList: string[] = [];

  constructor(private readonly db: DB, opts: PolicyOptions = {}) {
    this.expiryDays = opts.expiryDays ?? DEFAULT_EXPIRY_DAYS;
    this.staleAfterS = opts.staleAfterS ?? 7 * 86_400;
    this.cacheMs = opts.cacheMs ?? 5000;
  }

  /** Unix seconds at which the row stops matching, or null for never. */
  expiresAt(type: string, expiresAt: number | null, feedCreated: string | null): number | null {
    if (expiresAt != null) return expiresAt;
    const t = feedCreated ? Date.parse(feedCreated) : NaN;
    return effectiveExpiry(this.expiryDays, type, null, Number.isFinite(t) ? Math.floor(t / 1000) : null);
  }

  /** Fail-closed feeds that are stale now (`nowS` unix seconds). */
  withheld(nowS: number): Set<string> {
    const nowMs = nowS * 1000;
    if (Math.abs(nowMs - this.cachedAt) > this.cacheMs) {
      this.cachedAt = nowMs;
      try {
        const stale = feedFreshness(this.db, this.staleAfterS, nowMs).filter((f) => f.stale && f.fail_mode === 'closed').map((f) => f.name);
        this.closed = new Set(stale);
        this.closedList = stale;
      } catch {
        /* a database without feeds yet (or mid-migration): nothing withheld */
      }
    }
    return this.closed;
  }

  /** Marks a result answered while fail-closed feeds are stale. */
  flag(result: LookupResult, nowS: number): LookupResult {
    if (this.withheld(nowS).size === 0) return result;
    const r = result as FlaggedResult;
    r.stale = true;
    r.stale_feeds = this.closedList.slice();
    return r;
  }

  /** Drops cached staleness (after `feed set` in this process, or in tests). */
  invalidate(): void {
    this.cachedAt = -Infinity;
  }
}
