// Loading a new generation's persisted filters off the thread that answers lookups. When a generation moves,
// the serving process must check that `filters-<gen>.bin` was built from exactly the current store content
// (storeFingerprint: a count(*) over every indicator, linear in the store) and read the file (linear in its
// size) before swapping it in. Done inline, that is one synchronous stall of the event loop per swap:
// tens of ms at 200k indicators, seconds at 10M. A FilterLoader does both in one long-lived worker thread
// (started once, so no module loading per swap) and hands back the bit arrays without copying; the caller
// swaps them in with engine.adoptSet(), one assignment. GenerationFollower (below) is the one generation
// follower of every serving process: it knows whether a file is coming for a generation, and waits for it
// or builds.
import fs from 'node:fs';
import path from 'node:path';
import { isMainThread, parentPort, workerData, type Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { startWorker } from './worker.ts';
import { currentGeneration, type DB } from './db.ts';
import type { Logger } from './log.ts';
import type { LookupEngine } from '../lookup/engine.ts';
import { filterFileAnnounced, filterFileOf, fromParts, loadFilters, storeFingerprint, storeFingerprintWithoutRows, toParts, withoutRows, type FilterParts, type FilterSet } from '../lookup/filters.ts';

const TAG = 'outpost:filter-follow';

interface Request {
  id: number;
  dbPath: string;
  file: string;
  fpRate: number;
  /** Compare the row count too (storeFingerprint); false: generation and feed versions only. */
  rows: boolean;
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
  load(dbPath: string, file: string, fpRate: number, rows = true): Promise<FilterSet | null> {
    const w = this.thread();
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, dbPath, file, fpRate, rows } satisfies Request);
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
      fingerprint = db.transaction(() => (req.rows ? storeFingerprint(db) : storeFingerprintWithoutRows(db)).fingerprint).deferred();
    } finally {
      db.close();
    }
    const set = loadFilters(req.file);
    if ((req.rows ? set.fingerprint : withoutRows(set.fingerprint)) !== fingerprint || set.fpRate !== req.fpRate) {
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

/** How long a follower waits for a filter file that is coming before building the filters itself. */
export const FILTER_WAIT_MS = 60_000;

/**
 * What one poll did: nothing to do, still at work from the last poll, waiting for a file, swapped in a file,
 * built, failed; `checked`: the row count of the set accepted at start matched (LookupEngine checkRowsLater).
 */
export type FollowStep = 'current' | 'busy' | 'waiting' | 'file' | 'built' | 'failed' | 'checked';

export interface FollowerOptions {
  engine: Pick<LookupEngine, 'generation' | 'adoptSet' | 'reload' | 'rowsUnchecked' | 'rowsChecked'>;
  /** A connection to the store (read-only is enough): meta.generation and the file announcement. */
  db: DB;
  fpRate: number;
  log: Logger;
  /**
   * Whether this process builds the filters of a generation whose writer announced no file (one-process
   * serve, a cluster's primary: its build persists the file). A cluster's HTTP workers do not: they wait
   * for the primary's file, so a delta costs one build, not one per process.
   */
  builder: boolean;
  /** Start the loader thread now (HTTP workers: the first swap then costs only the load). */
  warm?: boolean;
  /** Tests only: a shorter bound and a clock. */
  waitMs?: number;
  now?: () => number;
}

/**
 * Follows the store's generation for one serving process (one-process serve, a cluster's primary, each
 * HTTP worker). poll() runs every second. When meta.generation moved:
 * - `filters-<gen>.bin` exists → checked against the store (an announced file on generation and feed
 *   versions, any other with the row count too) and read in the loader thread, then swapped in
 *   (engine.adoptSet: one assignment);
 * - otherwise, when a file is coming — the writer announced it (lookup/filters.ts announceFilterFile: a
 *   full apply, written right after its COMMIT), or this is an HTTP worker (the primary persists every
 *   generation's filters) — it waits, answering from the previous generation, for at most FILTER_WAIT_MS
 *   (an HTTP worker twice that for an announced file: the primary's wait comes first), then builds;
 * - otherwise (delta, rollback to a delta, purge, an older writer) it builds at once, in a worker thread
 *   (engine.reload), which persists the file for the other processes.
 * A stale file (other content or rate) is read again only once rewritten.
 */
export class GenerationFollower {
  readonly loader = new FilterLoader();
  private busy = false;
  /** The poll at work, awaited by close(); once closed, no poll starts and none builds. */
  private inflight: Promise<FollowStep> | null = null;
  private closed = false;
  private waiting: { generation: number; since: number } | null = null;
  private stale: { generation: number; stamp: string } | null = null;
  private readonly dbPath: string;
  private readonly waitMs: number;
  private readonly now: () => number;

  constructor(private readonly o: FollowerOptions) {
    this.dbPath = o.db.name;
    this.waitMs = o.waitMs ?? FILTER_WAIT_MS;
    this.now = o.now ?? Date.now;
    if (o.warm) this.loader.warm();
  }

  /** One look at the store; resolves with what it did (the swap included). Never rejects. */
  poll(): Promise<FollowStep> {
    if (this.closed) return Promise.resolve('current');
    if (this.busy) return Promise.resolve('busy');
    const step = this.look();
    this.inflight = step;
    return step;
  }

  private async look(): Promise<FollowStep> {
    const { engine, db, log } = this.o;
    let generation: number;
    try {
      generation = currentGeneration(db);
    } catch (err) {
      log.warn({ err }, 'reading the store generation failed');
      return 'failed';
    }
    if (generation === engine.generation && !engine.rowsUnchecked) {
      this.waiting = null;
      return 'current';
    }
    this.busy = true;
    try {
      const step = generation === engine.generation ? await this.checkRows(generation) : await this.follow(generation);
      if (step === 'file' || step === 'built') {
        log.info({ generation: engine.generation, filters: step, waitedMs: this.waiting ? this.now() - this.waiting.since : 0 }, 'serving new generation');
        this.waiting = null;
      }
      return step;
    } catch (err) {
      log.error({ err, generation }, 'filter reload failed; still serving the previous generation');
      return 'failed';
    } finally {
      this.busy = false;
    }
  }

  /**
   * Stops following: no poll starts after this, the loader thread ends (a load in flight is dropped,
   * not answered by a build), and a swap or build already under way finishes before this resolves, so
   * nothing writes a filter file once the process has closed.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.loader.close();
    await this.inflight;
  }

  /**
   * The set accepted at start on generation and feed versions alone (checkRowsLater): the loader thread
   * checks the whole fingerprint, row count included. A mismatch (rows deleted by an expiry purge that
   * stopped before moving the generation) rebuilds in a worker thread; until then the set answers, and
   * it holds every stored key (only deletions happen without a new generation).
   */
  private async checkRows(generation: number): Promise<FollowStep> {
    const { engine, log, fpRate } = this.o;
    const file = filterFileOf(path.join(path.dirname(this.dbPath), 'filters'), generation);
    const set = await this.loader.load(this.dbPath, file, fpRate).catch((err: unknown) => {
      if (!this.closed) log.warn({ err, file }, 'checking the persisted filters in the loader thread failed; building them');
      return null;
    });
    if (this.closed || engine.generation !== generation || !engine.rowsUnchecked) return 'current'; // closed, or a newer set came meanwhile
    if (set) {
      engine.rowsChecked();
      return 'checked';
    }
    log.warn({ generation, file }, 'the persisted filters do not match the store (row count); building them');
    await engine.reload({ force: true });
    return 'built';
  }

  private async follow(generation: number): Promise<FollowStep> {
    const { engine, db, log, fpRate } = this.o;
    const file = filterFileOf(path.join(path.dirname(this.dbPath), 'filters'), generation);
    const stamp = fileStamp(file);
    // The writer that announced this generation's file computed its fingerprint, row count included, in
    // the transaction that moved the generation; since then only an expiry purge changes rows without a
    // new generation, and it only deletes (the set still holds every stored key). So an announced file is
    // checked on generation and feed versions: no count(*) over every indicator in each serving process
    // at every swap (0.1–0.3 s at 10M each, beside the lookups).
    const announced = filterFileAnnounced(db, generation);
    if (stamp && !(this.stale?.generation === generation && this.stale.stamp === stamp)) {
      const set = await this.loader.load(this.dbPath, file, fpRate, !announced).catch((err: unknown) => {
        if (!this.closed) log.warn({ err, file }, 'loading persisted filters in the loader thread failed; loading or building them here');
        return undefined;
      });
      if (this.closed) return 'current';
      if (set) {
        engine.adoptSet(set);
        return 'file';
      }
      if (set === undefined) {
        await engine.reload(); // reads the file inline, or builds
        return 'built';
      }
      this.stale = { generation, stamp };
    }
    // A file is coming: announced by its writer and not here yet, or (HTTP worker) the primary persists it.
    const coming = this.o.builder ? announced && !stamp : true;
    if (coming) {
      const now = this.now();
      if (this.waiting?.generation !== generation) {
        this.waiting = { generation, since: now };
        log.info({ generation, from: announced ? 'apply' : 'primary' }, 'waiting for the persisted filters of the new generation');
      }
      const bound = this.o.builder || !announced ? this.waitMs : 2 * this.waitMs;
      if (now - this.waiting.since < bound) return 'waiting';
      log.warn({ generation, waitedMs: now - this.waiting.since }, 'persisted filters did not come; building them here');
    }
    await engine.reload({ force: true }); // builds in a worker thread and persists the file
    return 'built';
  }
}

/** Identifies one version of a file (rewritten by rename: new inode), or null when there is none. */
function fileStamp(file: string): string | null {
  try {
    const st = fs.statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return null;
  }
}
