// Loading a new generation's persisted filters off the thread that answers lookups. When a generation moves,
// the serving process must check that `filters-<gen>.bin` was built from exactly the current store content
// (storeFingerprint: a count(*) over every indicator, linear in the store) and read the file (linear in its
// size) before swapping it in. Done inline, that is one synchronous stall of the event loop per swap:
// tens of ms at 200k indicators, seconds at 10M. A FilterLoader does both in one long-lived worker thread
// (started once, so no module loading per swap) and hands back the bit arrays without copying; the caller
// swaps them in with engine.adoptSet(), one assignment.
import fs from 'node:fs';
import path from 'node:path';
import { isMainThread, parentPort, workerData, type Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { startWorker } from './worker.ts';
import { fromParts, loadFilters, storeFingerprint, toParts, type FilterParts, type FilterSet } from '../lookup/filters.ts';

const TAG = 'outpost:filter-follow';

interface Request {
  id: number;
  dbPath: string;
  file: string;
  fpRate: number;
}
type Reply = { id: number; parts: FilterParts | null } | { id: number; error: string };

/** One worker thread that loads and checks persisted filter files, one request at a time. */
export class FilterLoader {
  private worker: Worker | null = null;
  private next = 1;
  private readonly pending = new Map<number, { resolve: (s: FilterSet | null) => void; reject: (e: Error) => void }>();

  /**
   * The set in `file` when it was built from the current content of the database at `dbPath` with
   * `fpRate`; null when it is stale (the store moved on, or another rate). Rejects when the file or the
   * database cannot be read.
   */
  load(dbPath: string, file: string, fpRate: number): Promise<FilterSet | null> {
    const w = this.thread();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, dbPath, file, fpRate } satisfies Request);
    });
  }

  /** Starts the thread now (module loading costs ~1 s of CPU), so the first swap costs only the load itself. */
  warm(): void {
    this.thread();
  }

  close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    return w ? w.terminate().then(() => undefined) : Promise.resolve();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const w = startWorker(new URL(import.meta.url), { workerData: { tag: TAG } });
    w.unref(); // an idle loader never keeps the process alive
    w.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if ('error' in m) p.reject(new Error(m.error));
      else {
        try {
          p.resolve(m.parts ? fromParts(m.parts) : null);
        } catch (e) {
          p.reject(e as Error);
        }
      }
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = null; // the next load starts a new thread
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`filter loader thread exited with code ${code}`)));
    this.worker = w;
    return w;
  }
}

// ------------------------------------------------------------------------------------------ thread side

function answer(req: Request): void {
  try {
    const db = new Database(req.dbPath, { readonly: true, fileMustExist: true });
    let fingerprint: string;
    try {
      db.pragma('busy_timeout = 10000');
      // One read transaction: generation, row count and feed versions from one snapshot.
      fingerprint = db.transaction(() => storeFingerprint(db).fingerprint).deferred();
    } finally {
      db.close();
    }
    const set = loadFilters(req.file);
    if (set.fingerprint !== fingerprint || set.fpRate !== req.fpRate) {
      parentPort!.postMessage({ id: req.id, parts: null } satisfies Reply);
      return;
    }
    const parts = toParts(set);
    // The arrays are views into the file's buffer(s): transfer each underlying buffer once.
    const buffers = [...new Set(parts.arrays.map((a) => a.buffer as ArrayBuffer))];
    parentPort!.postMessage({ id: req.id, parts } satisfies Reply, buffers);
  } catch (e) {
    parentPort!.postMessage({ id: req.id, error: String((e as Error)?.message ?? e) } satisfies Reply);
  }
}

if (!isMainThread && (workerData as { tag?: string } | null)?.tag === TAG) {
  parentPort!.on('message', (req: Request) => answer(req));
}

/**
 * Brings `engine` to generation `gen` of the store at `dbPath`: when that generation's filters are persisted
 * (`<data dir>/filters/filters-<gen>.bin`, written by the apply or another process's build) they are checked
 * and read by `loader` and swapped in; otherwise, or when the file is stale or unreadable, engine.reload()
 * loads or builds them (the build in a worker thread).
 */
export async function followGeneration(
  engine: { adoptSet(set: FilterSet): void; reload(): Promise<void> },
  loader: FilterLoader,
  dbPath: string,
  fpRate: number,
  gen: number,
): Promise<void> {
  const file = path.join(path.dirname(dbPath), 'filters', `filters-${gen}.bin`);
  if (fs.existsSync(file)) {
    const set = await loader.load(dbPath, file, fpRate).catch(() => null);
    if (set) return engine.adoptSet(set);
  }
  await engine.reload();
}
