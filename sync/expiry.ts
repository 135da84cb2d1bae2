// Indicator expiry: per-type default lifetimes, and the purge that takes expired rows out of the lookup store.
//
// Where the default applies: at lookup time, never in the stored row. A row's `expires_at` is exactly the
// package line's `exp` (sync/records.ts maps rows and lines one to one, and the feed's signed state hash is
// computed over those lines), so a default written into the row would break the state check of the next
// delta. A row without `exp` expires at `feeds.created + default(type)`: the package's creation time is
// when the provider last asserted the whole feed, so a feed that keeps being refreshed (full or delta)
// keeps its rows alive, and rows of an abandoned feed age out per type.
//
// Purge: expired rows are moved, in small batches, from `indicators` to `indicators_expired` (same columns).
// They leave lookups, filters and exports at once, but stay part of the feed's signed content state, so the
// next delta still applies to its exact base: applyStaged puts a feed's expired rows back before applying a
// delta (restoreExpired; the purge takes out whatever is still expired afterwards) and drops them for a
// full package (dropExpired). Their bytes go for good with the next full package or a delta removing them.
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, currentGeneration, setMeta } from '../appliance/db.ts';
import type { IndicatorType } from '../appliance/types.ts';

const DAY = 86_400;

/** Default lifetime in days per indicator type group (appliance/config.ts: expiry*Days). */
export interface ExpiryDays {
  ip: number;
  url: number;
  domain: number;
  hash: number;
}

export const DEFAULT_EXPIRY_DAYS: ExpiryDays = { ip: 30, url: 60, domain: 180, hash: 365 };

/** Networks age like addresses; an e-mail address like a domain (both name long-lived infrastructure). */
const GROUP: Record<IndicatorType, keyof ExpiryDays> = {
  ipv4: 'ip', ipv6: 'ip', 'ipv4-cidr': 'ip', 'ipv6-cidr': 'ip',
  url: 'url', domain: 'domain', email: 'domain',
  md5: 'hash', sha1: 'hash', sha256: 'hash',
};

export function expiryDaysOf(cfg: Partial<Config> | undefined): ExpiryDays {
  return {
    ip: cfg?.expiryIpDays ?? DEFAULT_EXPIRY_DAYS.ip,
    url: cfg?.expiryUrlDays ?? DEFAULT_EXPIRY_DAYS.url,
    domain: cfg?.expiryDomainDays ?? DEFAULT_EXPIRY_DAYS.domain,
    hash: cfg?.expiryHashDays ?? DEFAULT_EXPIRY_DAYS.hash,
  };
}

/** Default lifetime of a type in seconds; 0 days means "no default expiry" for that group. */
export function defaultLifetimeS(days: ExpiryDays, type: string): number | null {
  const g = GROUP[type as IndicatorType];
  if (!g || !(days[g] > 0)) return null;
  return Math.round(days[g] * DAY);
}

/** Unix seconds at which a row stops matching: its own `exp`, else feed creation + the type default. */
export function effectiveExpiry(days: ExpiryDays, type: string, expiresAt: number | null, feedCreatedS: number | null): number | null {
  if (expiresAt != null) return expiresAt;
  if (feedCreatedS == null) return null;
  const life = defaultLifetimeS(days, type);
  return life == null ? null : feedCreatedS + life;
}

const COLS = 'type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra';

/** Inside the apply transaction, before a delta: the feed's purged rows are part of its signed state again. */
export function restoreExpired(db: DB, feed: string): number {
  const n = db.prepare(`INSERT OR IGNORE INTO indicators(${COLS}) SELECT ${COLS} FROM indicators_expired WHERE feed = ?`).run(feed).changes;
  db.prepare('DELETE FROM indicators_expired WHERE feed = ?').run(feed);
  return n;
}

/** Inside the apply transaction, before a full package (or rollback): it replaces all of the feed's state. */
export function dropExpired(db: DB, feed: string): number {
  return db.prepare('DELETE FROM indicators_expired WHERE feed = ?').run(feed).changes;
}

export interface PurgeResult {
  /** Rows taken out of the lookup store, per feed. */
  purged: Record<string, number>;
  total: number;
  /** The generation after the purge (bumped when anything was purged, so filters and exports follow). */
  generation: number;
  dryRun: boolean;
}

export interface PurgeOptions {
  days?: ExpiryDays;
  /** Unix seconds; injectable for tests. */
  now?: number;
  /** Rows moved per transaction: small, so an apply or another writer never waits long. */
  batch?: number;
  dryRun?: boolean;
  actor?: string;
  /** Called between batches; serve's worker yields here. */
  between?: () => Promise<void> | void;
}

/**
 * The indicator types a feed holds, by index seeks on indicators_feed (feed, type): one seek per type,
 * however many rows. `SELECT DISTINCT type … WHERE feed = ?` walks every index entry of the feed instead:
 * 0.67 s of CPU for a feed of 10M rows, in each hourly purge (docs/performance.md).
 */
export function feedTypes(db: DB, feed: string): string[] {
  const next = db.prepare('SELECT type FROM indicators WHERE feed = ? AND type > ? ORDER BY type LIMIT 1').pluck();
  const types: string[] = [];
  for (let t = next.get(feed, '') as string | undefined; t !== undefined; t = next.get(feed, t) as string | undefined) types.push(t);
  return types;
}

/** Expired-row selections: explicit `exp` in the past, and whole (feed, type) groups past their default. */
function selections(db: DB, days: ExpiryDays, now: number): { feed: string; where: string; args: unknown[] }[] {
  const out: { feed: string; where: string; args: unknown[] }[] = [];
  const feeds = db.prepare('SELECT name, created FROM feeds').all() as { name: string; created: string }[];
  for (const f of feeds) {
    out.push({ feed: f.name, where: 'feed = ? AND expires_at IS NOT NULL AND expires_at < ?', args: [f.name, now] });
    const created = Date.parse(f.created) / 1000;
    if (!Number.isFinite(created)) continue;
    for (const t of feedTypes(db, f.name)) {
      const exp = effectiveExpiry(days, t, null, Math.floor(created));
      if (exp != null && exp < now) out.push({ feed: f.name, where: 'feed = ? AND type = ? AND expires_at IS NULL', args: [f.name, t] });
    }
  }
  return out;
}

/**
 * Moves expired rows out of the lookup store in batches of `batch` rows, one short transaction each.
 * Safe to stop at any point (each batch is atomic) and to run again. Writes one audit row.
 */
export async function purgeExpired(db: DB, opts: PurgeOptions = {}): Promise<PurgeResult> {
  const days = opts.days ?? DEFAULT_EXPIRY_DAYS;
  const now = Math.floor(opts.now ?? Date.now() / 1000);
  const batch = Math.max(1, opts.batch ?? 5000);
  const purged: Record<string, number> = {};
  let total = 0;
  for (const sel of selections(db, days, now)) {
    if (opts.dryRun) {
      const n = (db.prepare(`SELECT count(*) AS n FROM indicators WHERE ${sel.where}`).get(...sel.args) as { n: number }).n;
      if (n) purged[sel.feed] = (purged[sel.feed] ?? 0) + n;
      total += n;
      continue;
    }
    const pick = db.prepare(`SELECT type, value FROM indicators WHERE ${sel.where} LIMIT ${batch}`);
    const move = db.prepare(`INSERT OR REPLACE INTO indicators_expired(${COLS}) SELECT ${COLS} FROM indicators WHERE type = ? AND value = ? AND feed = ?`);
    const del = db.prepare('DELETE FROM indicators WHERE type = ? AND value = ? AND feed = ?');
    for (;;) {
      const moved = db.transaction(() => {
        const keys = pick.all(...sel.args) as { type: string; value: string }[];
        for (const k of keys) {
          move.run(k.type, k.value, sel.feed);
          del.run(k.type, k.value, sel.feed);
        }
        return keys.length;
      }).immediate();
      if (moved) {
        purged[sel.feed] = (purged[sel.feed] ?? 0) + moved;
        total += moved;
      }
      if (moved < batch) break;
      await opts.between?.();
    }
  }
  let generation = currentGeneration(db);
  if (!opts.dryRun && total > 0) {
    db.transaction(() => {
      generation = currentGeneration(db) + 1;
      setMeta(db, 'generation', String(generation));
      const left = (db.prepare('SELECT count(*) AS n FROM indicators').get() as { n: number }).n;
      db.prepare('INSERT INTO generations(created_at, feed, version, action, added, removed, total) VALUES (?, NULL, NULL, ?, 0, ?, ?)').run(new Date().toISOString(), 'purge', total, left);
      audit(db, opts.actor ?? 'cli', 'indicators.purge', { subject: Object.keys(purged).join(',') || undefined, detail: { purged, total, generation } });
    }).immediate();
  }
  return { purged, total, generation, dryRun: Boolean(opts.dryRun) };
}
