// Starts a worker_thread from one of our TypeScript modules. The project runs from source through tsx;
// on Node 20, loader hooks passed to a worker as `execArgv: ['--import', tsx]` are not applied to the
// worker's own imports ("Unknown file extension .ts"), so a .ts worker starts as a tiny eval'd script
// that registers tsx's ESM API in its own thread and then imports the module.
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort, Worker, type WorkerOptions } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { asOutpostError } from './errors.ts';

let tsxApi: string | undefined;

function bootstrap(moduleUrl: URL): string {
  if (!tsxApi) {
    const tsxDir = path.dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
    tsxApi = pathToFileURL(path.join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  }
  return `${LOWER_PRIORITY}.then(() => import(${JSON.stringify(tsxApi)})).then(({ register }) => { register(); return import(${JSON.stringify(moduleUrl.href)}); });`;
}

/**
 * Nice value of every worker thread (applies, filter builds, export regeneration, purges, filter loads):
 * background work yields the CPU to the threads that answer lookups, which matters on a small machine
 * (2 cores) during a large apply. With idle cores it runs at full speed; under full lookup load it slows
 * down instead of the lookups. Linux: the nice value is per thread (setpriority on the thread id from
 * /proc/thread-self); elsewhere, or when refused, the thread runs at normal priority.
 */
export const WORKER_NICE = 10;
const LOWER_PRIORITY = `Promise.all([import('node:fs'), import('node:os')]).then(([fs, os]) => { try { os.setPriority(Number(fs.readlinkSync('/proc/thread-self').split('/').pop()), ${WORKER_NICE}); } catch {} })`;

export function startWorker(moduleUrl: URL, options: WorkerOptions = {}): Worker {
  if (moduleUrl.pathname.endsWith('.ts')) return new Worker(bootstrap(moduleUrl), { ...options, eval: true });
  return new Worker(moduleUrl, options);
}

/**
 * Runs a worker to completion: resolves with the payload of its `{type:'done'}` message, rejects with
 * its `{type:'error'}` payload, forwards `{type:'progress'}` messages.
 */
export function runWorker<T>(moduleUrl: URL, workerData: unknown, onProgress?: (p: any) => void, transferList?: any[], signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = startWorker(moduleUrl, { workerData, transferList });
    let settled = false;
    // Aborting stops the thread where it is: only for work that is safe to cut (e.g. files written by rename).
    signal?.addEventListener('abort', () => {
      if (settled) return;
      settled = true;
      reject(new Error('stopped'));
      void w.terminate();
    }, { once: true });
    w.on('message', (msg: { type: string; [k: string]: any }) => {
      if (msg.type === 'progress') onProgress?.(msg);
      else if (msg.type === 'done') {
        settled = true;
        resolve(msg.result as T);
      } else if (msg.type === 'error') {
        settled = true;
        reject(msg.error);
      }
    });
    w.on('error', (e) => {
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    w.on('exit', (code) => {
      if (!settled) {
        settled = true;
        reject(new Error(`worker exited with code ${code} before finishing`));
      }
    });
  });
}

/**
 * The body of a worker-thread entry that works on a SQLite connection of its own (so the thread that
 * answers lookups never waits on it): opens `dbPath` (WAL, 30 s busy timeout, plus `pragmas`), runs
 * `fn`, answers runWorker with `{type:'done', result}` or `{type:'error', error:{code, message}}` (a
 * catalog code), and closes the connection.
 */
export async function workOnOwnConnection(dbPath: string, opts: { readonly?: boolean; pragmas?: string[] }, fn: (db: Database.Database) => Promise<unknown> | unknown): Promise<void> {
  const port = parentPort!;
  const db = new Database(dbPath, opts.readonly ? { readonly: true } : {});
  db.pragma('busy_timeout = 30000');
  if (!opts.readonly) db.pragma('journal_mode = WAL');
  for (const p of opts.pragmas ?? []) db.pragma(p);
  try {
    port.postMessage({ type: 'done', result: await fn(db) });
  } catch (e) {
    const err = asOutpostError(e);
    port.postMessage({ type: 'error', error: { code: err.code, message: err.message } });
  } finally {
    db.close();
  }
}
