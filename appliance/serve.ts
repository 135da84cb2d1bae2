// `outpost serve`: lock the data dir, open the store, seed demo data on first start, answer lookups,
// and follow new generations (from this process's applies or a CLI import) by swapping filters.
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { serve as serveHttp, type ServerType } from '@hono/node-server';
import type { Config } from './config.ts';
import { acquireServeLock, currentGeneration, layout, openDb, type DB } from './db.ts';
import type { Logger } from './log.ts';
import { createApi } from '../lookup/api.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { Metrics } from '../lookup/metrics.ts';
import { mountExports } from '../lookup/exports/routes.ts';
import { runWorker } from './worker.ts';
import { ensureDemo, type DemoInfo } from '../scripts/demo.ts';
import { SyncScheduler } from '../sync/scheduler.ts';
import { createConsole } from '../ui/console.tsx';

export interface RunningAppliance {
  url: string;
  port: number;
  db: DB;
  engine: LookupEngine;
  demo: DemoInfo | null;
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
  let db: DB | undefined;
  try {
    db = openDb(cfg.dataDir);
    clearStaging(cfg.dataDir);
    const integrity = db.pragma('quick_check', { simple: true });
    if (integrity !== 'ok') throw new Error(`database integrity check failed: ${integrity}`);
    const demo = cfg.noDemo ? null : await ensureDemo(cfg, db, log);
    const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate });
    await engine.reload();
    const metrics = new Metrics();
    const app = createApi({ cfg, db, engine, log, metrics, mounts: [mountExports(db), createConsole({ cfg, db, engine, log }).mount] });
    const server: ServerType = await new Promise((resolve, reject) => {
      const s = serveHttp({ fetch: app.fetch, hostname: cfg.host, port: cfg.port }, () => resolve(s));
      s.once('error', reject);
    });
    const http = server as import('node:http').Server;
    http.headersTimeout = 15_000;
    http.requestTimeout = 120_000;
    http.keepAliveTimeout = 5_000;
    const port = (server.address() as AddressInfo).port;
    const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
    const url = `http://${host}:${port}`;

    // Follow generations written by any writer (a worker here, or `outpost import` from a shell).
    // Each new generation also regenerates the export files for consumers that read files.
    const paths = layout(cfg.dataDir);
    const regenerateExports = () =>
      runWorker<string[]>(new URL('../lookup/exports/worker.ts', import.meta.url), { dbPath: paths.db, dir: paths.exports })
        .then((files) => log.info({ files: files.length, dir: paths.exports }, 'exports regenerated'))
        .catch((err: unknown) => log.error({ err }, 'export regeneration failed'));
    let reloading = false;
    let exportedGeneration = -1;
    const follow = setInterval(() => {
      if (reloading || currentGeneration(db!) === engine.generation) return;
      reloading = true;
      engine
        .reload()
        .then(async () => {
          log.info({ generation: engine.generation }, 'serving new generation');
          if (exportedGeneration !== engine.generation) {
            exportedGeneration = engine.generation;
            await regenerateExports();
          }
        })
        .catch((err: unknown) => log.error({ err }, 'filter reload failed; still serving the previous generation'))
        .finally(() => (reloading = false));
    }, 1000);
    if (!fs.existsSync(`${paths.exports}/exports.json`) && engine.generation > 0) {
      exportedGeneration = engine.generation;
      void regenerateExports();
    }
    follow.unref();

    // Sync scheduler (sync/scheduler.ts): pulls each upstream on its cron schedule, with jitter and backoff.
    const scheduler = new SyncScheduler(cfg, db, log);
    scheduler.start();

    log.info({ url, generation: engine.generation, dataDir: cfg.dataDir }, 'outpost serving');
    const theDb = db;
    return {
      url,
      port,
      db: theDb,
      engine,
      demo,
      async close() {
        clearInterval(follow);
        await scheduler.stop();
        await new Promise<void>((r) => server.close(() => r()));
        theDb.close();
        release();
      },
    };
  } catch (e) {
    db?.close();
    release();
    throw e;
  }
}
