// The `serve` side of sync: one node-cron task per upstream on its schedule, each firing after a random
// jitter (so a fleet does not hit its provider in the same second), skipping an upstream whose backoff
// (persisted in SQLite by recordResult) has not passed. Runs one sync at a time; follows upstreams added
// or removed from the CLI while serving.
import cron, { type ScheduledTask } from 'node-cron';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import type { Logger } from '../appliance/log.ts';
import { fetchLimitsOf, type FetchLimits } from './fetch.ts';
import { syncUpstream, type UpstreamOutcome } from './pull.ts';
import { getUpstream, isDue, listUpstreams } from './upstreams.ts';

export interface SchedulerOptions {
  /** Upper bound of the random delay added to each scheduled run, ms (default cfg.syncJitterS, OUTPOST_SYNC_JITTER_S). */
  jitterMs?: number;
  /** How often the upstream list is re-read for additions, removals and schedule changes, ms. */
  refreshMs?: number;
  limits?: FetchLimits;
  /** Called after every scheduled sync (tests and the console can watch it). */
  onResult?: (r: UpstreamOutcome) => void;
}

export class SyncScheduler {
  private readonly tasks = new Map<string, { schedule: string; task: ScheduledTask }>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private refresh: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly cfg: Config, private readonly db: DB, private readonly log: Logger, private readonly opts: SchedulerOptions = {}) {}

  start(): void {
    this.reconcile();
    this.refresh = setInterval(() => this.reconcile(), this.opts.refreshMs ?? 60_000);
    this.refresh.unref();
  }

  /** Makes the running tasks match the upstreams table. */
  reconcile(): void {
    if (this.stopped) return;
    const rows = listUpstreams(this.db);
    for (const [name, t] of this.tasks) {
      const row = rows.find((r) => r.name === name);
      if (!row || row.schedule !== t.schedule) {
        void t.task.destroy();
        this.tasks.delete(name);
      }
    }
    for (const row of rows) {
      if (this.tasks.has(row.name)) continue;
      const task = cron.schedule(row.schedule, () => this.fire(row.name), { name: `sync:${row.name}`, noOverlap: true });
      this.tasks.set(row.name, { schedule: row.schedule, task });
      this.log.info({ upstream: row.name, schedule: row.schedule, next_attempt_at: row.next_attempt_at, failures: row.failures }, 'sync scheduled');
    }
  }

  private fire(name: string): void {
    if (this.stopped) return;
    const jitterMs = this.opts.jitterMs ?? this.cfg.syncJitterS * 1000;
    const delay = Math.floor(Math.random() * jitterMs);
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.chain = this.chain.then(() => this.runIfDue(name));
    }, delay);
    t.unref();
    this.timers.add(t);
  }

  /** One scheduled attempt: skipped while the upstream backs off (state survives restarts in SQLite). */
  async runIfDue(name: string): Promise<UpstreamOutcome | null> {
    if (this.stopped) return null;
    let row;
    try {
      row = getUpstream(this.db, name);
    } catch {
      return null; // removed meanwhile
    }
    if (!isDue(row)) {
      this.log.info({ upstream: name, failures: row.failures, next_attempt_at: row.next_attempt_at }, 'sync skipped: backing off');
      return null;
    }
    try {
      const r = await syncUpstream(this.cfg, this.db, name, { actor: `scheduler:${name}`, limits: this.opts.limits ?? fetchLimitsOf(this.cfg), log: this.log });
      this.opts.onResult?.(r);
      return r;
    } catch (e) {
      this.log.error({ upstream: name, err: e }, 'sync failed unexpectedly');
      return null;
    }
  }

  /** Stops all tasks and waits for a sync in progress to finish (its apply is one transaction anyway). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refresh) clearInterval(this.refresh);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const { task } of this.tasks.values()) await task.destroy();
    this.tasks.clear();
    await this.chain.catch(() => {});
  }
}
