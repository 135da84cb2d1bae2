// `outpost serve`: lock the data dir, open the store, seed demo data on first start, answer lookups,
// and follow new generations (from this process's applies or a CLI import) by swapping filters.
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { exportFileSets, type Config } from './config.ts';
import { acquireServeLock, layout, type DB } from './db.ts';
import { checkIntegrityInBackground, databaseError, openCheckedDb, startCheckInline } from './backup.ts';
import { OutpostError, type ErrorCode } from './errors.ts';
import type { Logger } from './log.ts';
import { createApi, lookupFastPath, type AppEnv } from '../lookup/api.ts';
import { createHttpServer } from './http-server.ts';
import type { Hono } from 'hono';
import { LookupEngine } from '../lookup/engine.ts';
import { Metrics } from '../lookup/metrics.ts';
import { SightingsWriter } from '../lookup/sightings.ts';
import { policyFrom } from '../lookup/verdict.ts';
import { mountExports } from '../lookup/exports/routes.ts';
import { mountTaxii } from '../lookup/taxii.ts';
import { mountCompat } from '../lookup/compat.ts';
import { attachPlatformPush, startPlatformPush } from '../lookup/push.ts';
import { runWorker } from './worker.ts';
import { prepareWorkerPriority, STARVED_MESSAGE, WORKER_PRIORITY_ENV } from './worker-priority.ts';
import { ensureDemo, type DemoInfo } from '../scripts/demo.ts';
import { SyncScheduler } from '../sync/scheduler.ts';
import { mountMirror, prefetchMirror } from '../sync/mirror.ts';
import { startBackgroundJobs } from '../sync/background.ts';
import { FeedPolicy, policyOptionsOf } from './freshness.ts';
import { GenerationFollower } from './filter-follow.ts';
import { ExportRegenerator } from '../lookup/exports/regenerate.ts';
import { exportedState } from '../lookup/exports/index.ts';
import { overridesState } from '../lookup/overrides.ts';
import { createConsole } from '../ui/console.tsx';

export interface RunningAppliance {
  url: string;
  port: number;
  db: DB;
  engine: LookupEngine;
  /** The /metrics counters (appliance/cluster.ts adds the HTTP workers' to them). */
  metrics: Metrics;
  /** The hit log's writer (appliance/cluster.ts has the HTTP workers flush theirs before it is read). */
  sightings: SightingsWriter;
  demo: DemoInfo | null;
  /** The Hono app with every mount (test/scopes.test.ts walks its routes). */
  app: Hono<AppEnv>;
  close(): Promise<void>;
}

/** Staging holds only half-verified downloads and unpacked packages: disposable, cleared at start. */
function clearStaging(dataDir: string): void {
  const dir = layout(dataDir).staging;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export async function startAppliance(cfg: Config, log: Logger): Promise<RunningAppliance> {
  const release = acquireServeLock(cfg.dataDir);
  // Worker threads read their scheduling from the environment (appliance/worker-priority.ts); so do HTTP workers.
  process.env[WORKER_PRIORITY_ENV] = cfg.workerPriority;
  prepareWorkerPriority((tid) => log.warn({ tid }, STARVED_MESSAGE));
  let db: DB | undefined;
  try {
    // Integrity check (OUTPOST_START_CHECK); a damaged store fails with E_DB naming the newest backup. A store
    // over OUTPOST_START_CHECK_INLINE_MB is checked in a background thread once serving (below) instead.
    const checkInline = startCheckInline(cfg.dataDir, cfg.startCheck, cfg.startCheckInlineMb);
    db = openCheckedDb(cfg.dataDir, checkInline ? cfg.startCheck : 'off');
    clearStaging(cfg.dataDir);
    const demo = cfg.noDemo ? null : await ensureDemo(cfg, db, log);
    // checkRowsLater: the persisted filters are accepted on generation and feed versions, and the follower
    // checks the row count in its loader thread once serving (a count of 10M rows: ~0.2 s, ~10 s cold).
    const rowPolicy = policyOptionsOf(cfg);
    const feedPolicy = new FeedPolicy(db, rowPolicy);
    const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, verdict: policyFrom(cfg), feedPolicy, checkRowsLater: true });
    await engine.reload();
    const metrics = new Metrics();
    // Hit log on its own connection: its flushes never wait for (or hold up) an apply's write lock.
    const sightings = SightingsWriter.forDataDir(cfg.dataDir, { inThread: true });
    // ---- integrations: TAXII 2.1, VirusTotal-compatible lookups, platform push (docs/integrations.md) ----
    // Platform push (lookup/push.ts): hits to syslog and the signed webhook through the persistent retry
    // queue, and sync events of every import (this process or a shell's) followed from the audit log.
    const platformPush = startPlatformPush(cfg, log);
    if (platformPush) attachPlatformPush(platformPush, sightings, metrics);
    const limits = { rps: cfg.rateLimitRps, burst: cfg.rateLimitBurst };
    const integrations = [
      mountTaxii(db, { rateLimit: limits, ...rowPolicy }),
      mountCompat(db, engine, { rateLimit: limits, metrics, onResult: (r, client) => sightings.record(r, client) }),
    ];
    // ---- end integrations ----
    const app = createApi({ cfg, db, engine, log, metrics, sightings, mounts: [mountExports(db, rowPolicy), createConsole({ cfg, db, engine, log, sightings }).mount, ...integrations, mountMirror({ cfg, db, log })] });
    const server = createHttpServer(cfg, app.fetch, lookupFastPath(app));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(cfg.port, cfg.host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
    const url = `http://${host}:${port}`;

    // Follow generations written by any writer (a worker here, or `outpost import` from a shell).
    // Each new generation also regenerates the export files for consumers that read files.
    const paths = layout(cfg.dataDir);
    // Override changes (API, console, CLI in another process) and overrides expiring regenerate them too,
    // debounced; runs never overlap (lookup/exports/regenerate.ts).
    // Each run first picks up override changes made by another process (a cheap meta read), so the files it
    // writes never reflect an override that this process's lookups do not apply yet: a run started by a
    // generation or a pending debounce could otherwise record a change before the next follow tick sees it.
    const exportsRun = new ExportRegenerator((signal) => {
      engine.refreshOverrides();
      const started = Date.now();
      return runWorker<string[]>(new URL('../lookup/exports/worker.ts', import.meta.url), { dbPath: paths.db, dir: paths.exports, policy: rowPolicy, files: exportFileSets(cfg) }, undefined, undefined, signal)
        .then((files) => log.info({ files: files.length, dir: paths.exports, ms: Date.now() - started }, 'exports regenerated'))
        .catch((err: unknown) => (signal.aborted ? log.info('export regeneration stopped: shutting down (the previous files stay)') : log.error({ err }, 'export regeneration failed')));
    });
    const regenerateExports = () => exportsRun.run();
    // Feeds turning stale (fail-closed) or fresh again regenerate them too: exports leave out what lookups withhold.
    const withheldNow = () => [...feedPolicy.withheld(Math.floor(Date.now() / 1000))].sort().join(',');
    const exported = exportedState(paths.exports);
    let exportedOverrides = exported.overrides ?? overridesState(db); // changed while stopped: regenerate
    let exportedWithheld = exported.withheld ?? ''; // files from before withheld_feeds was recorded withheld nothing
    // This process builds the filters of a generation whose writer persists none (appliance/filter-follow.ts);
    // a cluster's HTTP workers then load the file it persists.
    const follower = new GenerationFollower({ engine, db, fpRate: cfg.filterFpRate, log, builder: true });
    let exportedGeneration = -1;
    const follow = setInterval(() => {
      engine.refreshOverrides(); // overrides added by the CLI in another process
      const overrides = overridesState(db!);
      const withheld = withheldNow();
      if (overrides !== exportedOverrides || withheld !== exportedWithheld) {
        exportedOverrides = overrides;
        exportedWithheld = withheld;
        exportsRun.request();
      }
      void follower.poll().then(async (step) => {
        if ((step === 'file' || step === 'built') && exportedGeneration !== engine.generation) {
          exportedGeneration = engine.generation;
          await regenerateExports();
        }
      });
    }, 1000);
    if (!fs.existsSync(`${paths.exports}/exports.json`) && engine.generation > 0) {
      exportedGeneration = engine.generation;
      void regenerateExports();
    }
    follow.unref();

    // Sync scheduler (sync/scheduler.ts): pulls each upstream on its cron schedule, with jitter and backoff.
    // After each scheduled sync the mirror (/mirror/, sync/mirror.ts) keeps the full packages it now serves.
    const mirrorDb = db;
    const scheduler = new SyncScheduler(cfg, db, log, {
      onResult: (r) => {
        if (cfg.mirrorAuth !== 'off' && r.feeds.some((f) => f.action === 'applied')) void prefetchMirror(cfg, mirrorDb, { upstream: r.upstream, log }).catch((err: unknown) => log.warn({ err }, 'mirror prefetch failed'));
      },
    });
    scheduler.start();
    // Offline inbox and the hourly purge of expired indicators (sync/background.ts).
    const jobs = startBackgroundJobs(cfg, db, log);

    log.info({ url, generation: engine.generation, dataDir: cfg.dataDir }, 'outpost serving');
    const theDb = db;
    let running: RunningAppliance | null = null;
    if (!checkInline) {
      log.info({ check: cfg.startCheck }, 'checking the database in the background');
      checkIntegrityInBackground(cfg.dataDir, cfg.startCheck).then(
        () => log.info({ check: cfg.startCheck }, 'database check passed'),
        (e: { code?: string; message?: string }) => {
          // The same refusal as at start, only later: stop serving from a damaged store.
          const err = new OutpostError((e.code ?? 'E_DB') as ErrorCode, e.message ?? String(e));
          log.fatal({ code: err.code }, err.message);
          process.stderr.write(`${err.toString()}\n`);
          setTimeout(() => process.exit(1), 5000).unref();
          void (running?.close() ?? Promise.resolve()).finally(() => process.exit(1));
        },
      );
    }
    running = {
      url,
      port,
      db: theDb,
      engine,
      metrics,
      sightings,
      demo,
      app,
      async close() {
        clearInterval(follow);
        await follower.close();
        await exportsRun.close();
        await scheduler.stop();
        await jobs.stop();
        await new Promise<void>((r) => server.close(() => r()));
        await sightings.close();
        await platformPush?.close(); // integrations: syslog and webhook push
        theDb.close();
        release();
      },
    };
    return running;
  } catch (e) {
    db?.close();
    release();
    // A damaged store met while starting (its check deferred to the background, or damage the quick check
    // cannot see): the same E_DB naming the newest backup, not an internal error.
    const code = (e as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB')) throw databaseError(cfg.dataDir, (e as Error).message);
    throw e;
  }
}
