// Appliance status from the store: generation, feeds with versions and data age, counts, last sync.
// Shared by `outpost status`, /healthz and the console dashboard.
import type { DB } from './db.ts';
import { currentGeneration } from './db.ts';
import { feedFreshness, type FailMode } from './freshness.ts';
import cron from 'node-cron';

export interface FeedStatus {
  name: string;
  kind: string;
  version: number;
  count: number;
  created: string;
  expires: string;
  applied_at: string;
  age_s: number;
  stale: boolean;
  /** This feed's limit (feeds.settings.stale_after_s, else the appliance's) and fail mode (appliance/freshness.ts). */
  stale_after_s: number;
  fail_mode: FailMode;
}

export interface ApplianceStatus {
  generation: number;
  health: 'ok' | 'stale' | 'empty';
  data_age_s: number | null;
  stale_after_s: number;
  indicators: number;
  by_type: Record<string, number>;
  feeds: FeedStatus[];
  last_package: { received_at: string; feed: string | null; version: number | null; status: string; code: string | null; message: string | null } | null;
  /** Each upstream's last sync result, backoff and next scheduled attempt (sync/upstreams.ts, sync/scheduler.ts). */
  upstreams: UpstreamStatus[];
}

export function dataAge(db: DB, now = Date.now()): number | null {
  const row = db.prepare('SELECT max(created) AS newest FROM feeds').get() as { newest: string | null };
  return row.newest ? Math.max(0, Math.floor((now - Date.parse(row.newest)) / 1000)) : null;
}

export function applianceStatus(db: DB, staleAfterS: number, now = Date.now()): ApplianceStatus {
  // Each feed against its own limit; any stale feed makes the appliance stale.
  const fresh = new Map(feedFreshness(db, staleAfterS, now).map((f) => [f.name, f]));
  const feeds = (db.prepare('SELECT name, kind, version, count, created, expires, applied_at FROM feeds ORDER BY name').all() as Omit<FeedStatus, 'age_s' | 'stale' | 'stale_after_s' | 'fail_mode'>[]).map((f) => {
    const x = fresh.get(f.name);
    const age = x?.age_s ?? Math.max(0, Math.floor((now - Date.parse(f.created)) / 1000));
    return { ...f, age_s: age, stale: x?.stale ?? age > staleAfterS, stale_after_s: x?.stale_after_s ?? staleAfterS, fail_mode: x?.fail_mode ?? 'open' };
  });
  const byType: Record<string, number> = {};
  let total = 0;
  for (const r of db.prepare('SELECT type, count(*) AS n FROM indicators GROUP BY type').all() as { type: string; n: number }[]) {
    byType[r.type] = r.n;
    total += r.n;
  }
  const age = dataAge(db, now);
  const health = feeds.length === 0 ? 'empty' : feeds.some((f) => f.stale) ? 'stale' : 'ok';
  const last = db.prepare('SELECT received_at, feed, version, status, code, message FROM packages ORDER BY id DESC LIMIT 1').get() as ApplianceStatus['last_package'] | undefined;
  return { generation: currentGeneration(db), health, data_age_s: age, stale_after_s: staleAfterS, indicators: total, by_type: byType, feeds, last_package: last ?? null, upstreams: upstreamStatus(db, now) };
}

// ---- upstreams (sync status) ----
export interface UpstreamStatus {
  name: string;
  url: string;
  schedule: string;
  root_version: number | null;
  /** The last attempt (scheduled or `outpost sync`): when, ok or the stable code and message. */
  last: { at: string; ok: boolean; code: string | null; message: string | null } | null;
  last_success_at: string | null;
  /** Failures in a row; each doubles the wait (sync/upstreams.ts backoffMs). */
  failures: number;
  /** The scheduler skips this upstream until then; null when not backing off. */
  backoff_until: string | null;
  /** The next scheduled run `serve` will attempt: the first cron time not before the backoff (plus up to OUTPOST_SYNC_JITTER_S). */
  next_due: string | null;
}

/** First time at or after `after` that a node-cron schedule fires (5 fields: within a year; 6: within a day). */
export function nextCronRun(schedule: string, after: Date): Date | null {
  if (!cron.validate(schedule)) return null;
  const task = cron.createTask(schedule, () => {});
  try {
    const withSeconds = schedule.trim().split(/\s+/).length === 6;
    const step = withSeconds ? 1000 : 60_000;
    const start = Math.ceil(after.getTime() / step) * step;
    const limit = start + (withSeconds ? 1 : 366) * 86400_000;
    for (let t = start; t <= limit; t += step) if (task.match(new Date(t))) return new Date(t);
    return null;
  } finally {
    void task.destroy();
  }
}

interface UpstreamRowLite {
  name: string; base_url: string; schedule: string; root_version: number | null; last_attempt_at: string | null; last_success_at: string | null;
  last_code: string | null; last_message: string | null; failures: number; next_attempt_at: string | null;
}

export function upstreamStatus(db: DB, now = Date.now()): UpstreamStatus[] {
  const rows = db.prepare('SELECT name, base_url, schedule, root_version, last_attempt_at, last_success_at, last_code, last_message, failures, next_attempt_at FROM upstreams ORDER BY name').all() as UpstreamRowLite[];
  return rows.map((u) => {
    const until = u.next_attempt_at && Date.parse(u.next_attempt_at) > now ? u.next_attempt_at : null;
    const next = nextCronRun(u.schedule, new Date(until ? Date.parse(until) : now));
    return {
      name: u.name, url: u.base_url, schedule: u.schedule, root_version: u.root_version,
      last: u.last_attempt_at ? { at: u.last_attempt_at, ok: u.last_code === null, code: u.last_code, message: u.last_message } : null,
      last_success_at: u.last_success_at, failures: u.failures, backoff_until: until, next_due: next?.toISOString() ?? null,
    };
  });
}
// ---- end upstreams ----
