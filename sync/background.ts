// Sync part B's jobs inside `serve`: the offline inbox watcher and the scheduled purge of expired
// indicators (in a worker, hourly by default). One start call, one stop, so serve.ts needs two lines.
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { layout } from '../appliance/db.ts';
import type { Logger } from '../appliance/log.ts';
import { runWorker } from '../appliance/worker.ts';
import { expiryDaysOf, type PurgeResult } from './expiry.ts';
import { InboxWatcher } from './inbox.ts';

export interface BackgroundJobs {
  inbox: InboxWatcher;
  /** Runs one purge now (also what the timer does). */
  purge(): Promise<PurgeResult | null>;
  stop(): Promise<void>;
}

export function startBackgroundJobs(cfg: Config, db: DB, log: Logger): BackgroundJobs {
  const inbox = new InboxWatcher(cfg, db, log);
  inbox.start();
  let running: Promise<PurgeResult | null> | null = null;
  const purge = () => {
    running ??= runWorker<PurgeResult>(new URL('./purge-worker.ts', import.meta.url), { dbPath: layout(cfg.dataDir).db, days: expiryDaysOf(cfg) })
      .then((r) => {
        if (r.total) log.info({ purged: r.purged, total: r.total, generation: r.generation }, 'expired indicators purged');
        return r;
      })
      .catch((err: unknown) => {
        log.error({ err }, 'purge of expired indicators failed');
        return null;
      })
      .finally(() => (running = null));
    return running;
  };
  const timer = cfg.purgeIntervalS > 0 ? setInterval(() => void purge(), cfg.purgeIntervalS * 1000) : undefined;
  timer?.unref();
  // A first purge shortly after start: an appliance restarted after a long pause answers clean at once.
  const first = cfg.purgeIntervalS > 0 ? setTimeout(() => void purge(), 30_000) : undefined;
  first?.unref();
  return {
    inbox,
    purge,
    async stop() {
      if (timer) clearInterval(timer);
      if (first) clearTimeout(first);
      await inbox.stop();
      await running;
    },
  };
}
