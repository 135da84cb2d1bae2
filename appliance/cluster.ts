// Multi-core HTTP for `outpost serve` (OUTPOST_HTTP_WORKERS): node:cluster HTTP workers share the public
// port and answer lookups from their own SQLite connections and the persisted filters of the current
// generation; the primary stays the one writer (imports, applies, scheduler, export regeneration, demo
// seeding) and serves every other route (console, exports, admin) on an internal loopback port, to which
// workers forward those requests. With 1 worker (the default) nothing here runs: serve is one process.
//
// Generations: every process follows them with the one GenerationFollower (appliance/filter-follow.ts). A
// worker swaps filters only once they are persisted (`<data dir>/filters/filters-<gen>.bin`, by a full
// apply or else by the primary's build), so a generation costs at most one build; until the swap it keeps
// answering from the previous generation. After FILTER_WAIT_MS without a file it builds on its own (in a
// worker thread: lookups keep being answered meanwhile).
import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import Database from 'better-sqlite3';
import type { Config } from './config.ts';
import { layout, openDb } from './db.ts';
import { OutpostError } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { prepareWorkerPriority, STARVED_MESSAGE } from './worker-priority.ts';
import { GenerationFollower } from './filter-follow.ts';
import { createHttpServer } from './http-server.ts';
import type { RunningAppliance } from './serve.ts';
import type { MetricsSnapshot } from '../lookup/metrics.ts';

/** How often the primary checkpoints the WAL (the HTTP workers' connections never do, see runHttpWorker). */
const CHECKPOINT_MS = 10_000;
const WORKER_ENV = 'OUTPOST_CLUSTER_WORKER';

/** OUTPOST_HTTP_WORKERS: unset or 1 → one process (default); `auto` → one per core; n → n HTTP workers. */
export function httpWorkerCount(env: NodeJS.ProcessEnv = process.env): number {
  const raw = (env.OUTPOST_HTTP_WORKERS ?? '').trim();
  if (raw === '') return 1;
  if (raw === 'auto') return Math.max(1, os.availableParallelism());
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new OutpostError('E_CONFIG', `OUTPOST_HTTP_WORKERS must be "auto" or 1-64, got "${raw}"`);
  return n;
}

/** How long the primary waits for a worker's answer over IPC (askWorkers) before leaving that worker out. */
const ASK_WAIT_MS = 1000;
/** IPC between the primary and its HTTP workers: a question (`what`) and its answer, matched by id. */
const ASK = 'outpost:ask';
const ANSWER = 'outpost:answer';
/** What the primary asks: a worker's /metrics counters; to write its queued hits now (GET /api/v1/hits). */
type Question = 'metrics' | 'flush-hits';

/**
 * Paths a worker answers itself; every other request goes to the primary — /metrics too: the primary adds
 * up every process's counters, so a scrape that lands on any worker sees the whole appliance's.
 */
function servedByWorker(pathname: string): boolean {
  return pathname === '/api/v1/lookup' || pathname === '/healthz';
}

export interface ServeHandle extends RunningAppliance {
  /** HTTP worker processes in use (0 = the primary answers on the public port itself). */
  workers: number;
}

/**
 * Starts serving with `workers` HTTP processes. 1 → exactly startAppliance(cfg). More → the primary runs
 * startAppliance on 127.0.0.1:<ephemeral> and forks the workers, which share cfg.host:cfg.port.
 */
export async function startServing(cfg: Config, log: Logger, workers = httpWorkerCount()): Promise<ServeHandle> {
  const { startAppliance } = await import('./serve.ts');
  if (workers <= 1) return Object.assign(await startAppliance(cfg, log), { workers: 0 });
  const inner = await startAppliance({ ...cfg, host: '127.0.0.1', port: 0 }, log);
  let closing = false;
  const live = new Set<ClusterWorker>();
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  cluster.setupPrimary({ exec: fileURLToPath(import.meta.url), execArgv: ['--import', tsx], args: [] });
  const workerEnv = { [WORKER_ENV]: '1', OUTPOST_WORKER_CONFIG: JSON.stringify(cfg), OUTPOST_PRIMARY_URL: inner.url };
  let port = cfg.port;
  // Questions to every live worker over IPC (askWorkers): /metrics adds up their counters, and the hit log's
  // routes (GET /api/v1/hits, false-positive) first have them write what they queued.
  let asked = 0;
  const waiting = new Map<number, (answer: unknown) => void>();
  const askWorkers = (what: Question): Promise<unknown[]> =>
    Promise.all(
      [...live].map(
        (w) =>
          new Promise<unknown>((resolve) => {
            const id = ++asked;
            const done = (answer: unknown) => {
              clearTimeout(timer);
              waiting.delete(id);
              resolve(answer);
            };
            const timer = setTimeout(() => done(null), ASK_WAIT_MS); // a worker busy or gone: left out
            waiting.set(id, done);
            try {
              w.send({ type: ASK, what, id });
            } catch {
              done(null);
            }
          }),
      ),
    ).then((answers) => answers.filter((a) => a !== null));
  inner.metrics.peers = () => askWorkers('metrics') as Promise<MetricsSnapshot[]>;
  inner.sightings.peers = async () => void (await askWorkers('flush-hits'));
  const fork = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const w = cluster.fork(workerEnv);
      live.add(w);
      w.on('message', (m: { type?: string; id?: number; answer?: unknown }) => {
        if (m?.type === ANSWER && typeof m.id === 'number') waiting.get(m.id)?.(m.answer ?? null);
      });
      w.once('listening', (addr: { port: number }) => resolve(addr.port));
      w.once('exit', (code, signal) => {
        live.delete(w);
        reject(new OutpostError('E_INTERNAL', `HTTP worker exited (code ${code}, signal ${signal}) before listening`));
        if (!closing) {
          log.error({ code, signal }, 'HTTP worker exited; starting another');
          setTimeout(() => void fork().catch((err: unknown) => log.error({ err }, 'HTTP worker restart failed')), 1000).unref();
        }
      });
    });
  try {
    // Every worker asks for cfg.port as given: the primary holds one shared handle per (host, port) request,
    // so with port 0 all workers (and restarted ones) get the same ephemeral port.
    const ports = await Promise.all(Array.from({ length: workers }, () => fork()));
    port = ports[0];
  } catch (e) {
    closing = true;
    for (const w of live) w.kill();
    await inner.close();
    throw e;
  }
  const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  const url = `http://${host}:${port}`;
  log.info({ url, workers, primary: inner.url }, 'HTTP workers serving');
  // The workers' hit-log and token writes leave the WAL to the primary: checkpoint it here, off the lookup
  // path (PASSIVE: never waits for readers or the writer; an apply's own commit checkpoints as well).
  const checkpoint = setInterval(() => {
    try {
      inner.db.pragma('wal_checkpoint(PASSIVE)');
    } catch (err) {
      log.warn({ err }, 'WAL checkpoint failed');
    }
  }, CHECKPOINT_MS);
  checkpoint.unref();
  return {
    ...inner,
    url,
    port,
    workers,
    async close() {
      closing = true;
      clearInterval(checkpoint);
      await Promise.all(
        [...live].map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('exit', () => resolve());
              w.kill('SIGTERM');
            }),
        ),
      );
      await inner.close();
    },
  };
}

// ------------------------------------------------------------------------------------------ worker side

/** Forwards a request to the primary as is (body streamed); the answer comes back as is. */
async function forward(req: Request, base: string): Promise<Response> {
  const u = new URL(req.url);
  const headers = new Headers(req.headers);
  headers.set('accept-encoding', 'identity'); // fetch would decode a compressed body and keep the header
  const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers, redirect: 'manual' };
  if (req.method !== 'GET' && req.method !== 'HEAD' && req.body) {
    init.body = req.body;
    init.duplex = 'half';
  }
  try {
    const res = await fetch(base + u.pathname + u.search, init);
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers: res.headers });
  } catch {
    return new Response(JSON.stringify({ error: { code: 'E_INTERNAL', message: 'primary process unreachable' } }), {
      status: 502,
      headers: { 'content-type': 'application/json' },
    });
  }
}

async function runHttpWorker(): Promise<void> {
  const cfg = JSON.parse(process.env.OUTPOST_WORKER_CONFIG!) as Config;
  const primary = process.env.OUTPOST_PRIMARY_URL!;
  const log = createLogger(cfg.logLevel).child({ worker: cluster.worker?.id });
  prepareWorkerPriority((tid) => log.warn({ tid }, STARVED_MESSAGE));
  const { LookupEngine } = await import('../lookup/engine.ts');
  const { createApi, lookupFastPath } = await import('../lookup/api.ts');
  const { Metrics } = await import('../lookup/metrics.ts');
  const paths = layout(cfg.dataDir);
  // Lookups read through a read-only connection; token bookkeeping (last use) needs a writable one.
  // No write from this process may stall its event loop: the writable connections never run WAL
  // checkpoints (the primary does, see CHECKPOINT_MS), and their writes (hit log, last_used_at) do not wait
  // for the write lock an apply may hold for seconds (busy timeout 0; they retry on their next turn).
  const ro = openDb(cfg.dataDir, { readonly: true });
  const rw = openDb(cfg.dataDir);
  rw.pragma('busy_timeout = 0');
  rw.pragma('wal_autocheckpoint = 0');
  const { policyFrom } = await import('../lookup/verdict.ts');
  const { FeedPolicy, policyOptionsOf } = await import('./freshness.ts');
  // The same engine settings as one-process serve (appliance/serve.ts): verdict policy, expiry, freshness.
  const engine = new LookupEngine(ro, {
    fpRate: cfg.filterFpRate,
    verdict: policyFrom(cfg),
    feedPolicy: new FeedPolicy(ro, policyOptionsOf(cfg)),
    checkRowsLater: true, // the follower below checks the row count in its loader thread
  });
  const { SightingsWriter } = await import('../lookup/sightings.ts');
  const hitLog = new Database(paths.db);
  hitLog.pragma('busy_timeout = 0');
  hitLog.pragma('wal_autocheckpoint = 0');
  const sightings = new SightingsWriter(hitLog, { ownsDb: true, inThread: true });
  const metrics = new Metrics();
  // Platform push (lookup/push.ts): the worker only queues the hits it answers; the primary sends them.
  const { attachPlatformPush, startPlatformPush } = await import('../lookup/push.ts');
  const platformPush = startPlatformPush(cfg, log, { producerOnly: true });
  if (platformPush) attachPlatformPush(platformPush, sightings, metrics);
  const api = createApi({ cfg, db: rw, engine, log, metrics, sightings });
  // The primary's questions (askWorkers): this worker's /metrics counters; write the queued hits now.
  process.on('message', (m: { type?: string; what?: Question; id?: number }) => {
    if (m?.type !== ASK || typeof m.id !== 'number') return;
    const id = m.id;
    const answer: Promise<unknown> =
      m.what === 'metrics' ? Promise.resolve(metrics.snapshot(engine)) : m.what === 'flush-hits' ? sightings.flushNow() : Promise.resolve(null);
    // With a callback a closed channel (the primary stopping) is its error, not an 'error' event on process.
    const reply = (a: unknown) => void (process.connected && process.send?.({ type: ANSWER, id, answer: a }, undefined, undefined, () => {}));
    answer.then(reply, (err: unknown) => {
      log.warn({ err }, 'flushing the hit log for the primary failed');
      reply(false);
    });
  });
  const fetchHandler = (req: Request) => {
    const p = req.url.indexOf('/', req.url.indexOf('//') + 2);
    const q = req.url.indexOf('?', p);
    return servedByWorker(req.url.slice(p, q < 0 ? undefined : q)) ? api.fetch(req) : forward(req, primary);
  };

  // Follow generations (appliance/filter-follow.ts): swap in the persisted filters of the apply or of the
  // primary's build, checked and read in the follower's loader thread (warm from the start), so the swap
  // costs this event loop one assignment; until then keep answering from the previous generation.
  const follower = new GenerationFollower({ engine, db: ro, fpRate: cfg.filterFpRate, log, builder: false, warm: true });
  const follow = setInterval(() => {
    engine.refreshOverrides();
    void follower.poll();
  }, 1000);
  follow.unref();

  // The plain single GET lookup is answered by the API's fast path straight from node:http; everything else
  // goes through @hono/node-server to the app (or is forwarded to the primary), as in one-process serve.
  const server = createHttpServer(cfg, fetchHandler, lookupFastPath(api));
  server.listen(cfg.port, cfg.host);
  server.once('listening', () => log.debug({ port: (server.address() as AddressInfo).port }, 'HTTP worker listening'));
  process.once('SIGTERM', () => {
    clearInterval(follow);
    void follower.close();
    server.close(() => {
      void Promise.all([sightings.close(), platformPush?.close()]).finally(() => {
        ro.close();
        rw.close();
        process.exit(0);
      });
    });
    setTimeout(() => process.exit(0), 5000).unref();
  });
}

if (cluster.isWorker && process.env[WORKER_ENV] === '1') {
  runHttpWorker().catch((err: unknown) => {
    process.stderr.write(`HTTP worker failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
