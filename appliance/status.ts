// Appliance status from the store: generation, feeds with versions and data age, counts, last sync.
// Shared by `outpost status`, /healthz and the console dashboard.
import type { DB } from './db.ts';
import { currentGeneration } from './db.ts';

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
}

export function dataAge(db: DB, now = Date.now()): number | null {
  const row = db.prepare('SELECT max(created) AS newest FROM feeds').get() as { newest: string | null };
  return row.newest ? Math.max(0, Math.floor((now - Date.parse(row.newest)) / 1000)) : null;
}

export function applianceStatus(db: DB, staleAfterS: number, now = Date.now()): ApplianceStatus {
  const feeds = (db.prepare('SELECT name, kind, version, count, created, expires, applied_at FROM feeds ORDER BY name').all() as Omit<FeedStatus, 'age_s' | 'stale'>[]).map((f) => {
    const age = Math.max(0, Math.floor((now - Date.parse(f.created)) / 1000));
    return { ...f, age_s: age, stale: age > staleAfterS };
  });
  const byType: Record<string, number> = {};
  let total = 0;
  for (const r of db.prepare('SELECT type, count(*) AS n FROM indicators GROUP BY type').all() as { type: string; n: number }[]) {
    byType[r.type] = r.n;
    total += r.n;
  }
  const age = dataAge(db, now);
  const health = feeds.length === 0 ? 'empty' : age !== null && age > staleAfterS ? 'stale' : 'ok';
  const last = db.prepare('SELECT received_at, feed, version, status, code, message FROM packages ORDER BY id DESC LIMIT 1').get() as ApplianceStatus['last_package'] | undefined;
  return { generation: currentGeneration(db), health, data_age_s: age, stale_after_s: staleAfterS, indicators: total, by_type: byType, feeds, last_package: last ?? null };
}
