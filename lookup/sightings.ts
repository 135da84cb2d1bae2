// Sightings (the local hit log): every lookup that matched anything is counted per indicator with its
// first/last local sighting, the client (token name) and the matched feeds. The lookup path only updates
// an in-memory map (bounded; overflow is counted, never blocks); a timer flushes it every ~1 s, or sooner
// when it holds `flushRows` values, in one transaction on its own connection with no busy wait, so a long
// apply holding the write lock delays the flush, never a lookup. In a serving process (`inThread`) the
// timed flushes are written by a writer thread with its own connection: a flush of a thousand hits is
// 10–60 ms of SQLite work that would otherwise stall every request on that event loop. `outpost hits`, GET /api/v1/hits and
// the false-positive action read and use what was flushed. Every recorded lookup, matched or not, also
// bumps an in-memory per-day counter (lookups, matches) flushed to lookup_counts with the same batch.
import { isMainThread, parentPort, workerData, type Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { audit, layout, type DB } from '../appliance/db.ts';
import { startWorker } from '../appliance/worker.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import { normalize } from './normalize.ts';
import { addOverride, type OverrideRow } from './overrides.ts';

export interface SightingsOptions {
  /** Flush interval, ms (default 1000). */
  flushMs?: number;
  /** Flush early once this many distinct (value, client) pairs are queued (default 1000). */
  flushRows?: number;
  /** Most distinct pairs held in memory; further new pairs are dropped and counted (default 50,000). */
  maxQueue?: number;
  /** Log rows older than this are pruned (per-indicator totals are kept). Default 90 days. */
  retentionDays?: number;
  /** Clock, unix seconds (tests). */
  now?: () => number;
  /**
   * Timed flushes go to a writer thread on its own connection to the same database file (serving
   * processes). An explicit flush() still writes on the calling thread. Needs a file database.
   */
  inThread?: boolean;
}

const THREAD_TAG = 'outpost:sightings-writer';
type DayMap = Map<string, { lookups: number; matches: number }>;
interface ThreadBatch {
  rows: [string, Pending][];
  days: [string, { lookups: number; matches: number }][];
  /** The last batch: write it (retrying while busy, as close() does) and stop. */
  final?: boolean;
  /** The sending writer's clock (unix s): the thread prunes the log by it, as the writer would. */
  now: number;
}
/** After each batch: the thread writer's stats (`queued`: pairs it still holds, its database was busy). */
interface ThreadReply {
  stats: SightingsStats;
  /** The answer to the final batch: written, and the thread's connection closed. */
  final: boolean;
}

interface Pending {
  type: string;
  value: string;
  client: string;
  count: number;
  first: number;
  last: number;
  verdict: Verdict;
  feeds: string;
}

export interface SightingsStats {
  queued: number;
  recorded: number;
  written: number;
  dropped: number;
  flushes: number;
  busy: number;
}

export class SightingsWriter {
  private readonly db: DB;
  private readonly ownsDb: boolean;
  private readonly flushRows: number;
  private readonly maxQueue: number;
  private readonly retentionS: number;
  private readonly now: () => number;
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null;
  private soon = false;
  private lastPrune = 0;
  private closed = false;
  private readonly upsert;
  private readonly insertLog;
  private readonly bumpCount;
  /** UTC day (YYYY-MM-DD) → lookups and matches not yet flushed. */
  private dayCounts = new Map<string, { lookups: number; matches: number }>();
  /** dayOf(dayAt), kept for the second it was computed in. */
  private dayAt = Number.NaN;
  private day = '';
  private readonly counters = { recorded: 0, written: 0, dropped: 0, flushes: 0, busy: 0 };
  /** inThread: the writer thread, its last counts, and the reply awaited by close(). */
  private thread: Worker | null = null;
  private threadCounts: SightingsStats = { queued: 0, recorded: 0, written: 0, dropped: 0, flushes: 0, busy: 0 };
  private threadFinal: ((r: ThreadReply | null) => void) | null = null;

  constructor(db: DB, opts: SightingsOptions & { ownsDb?: boolean } = {}) {
    this.db = db;
    this.ownsDb = opts.ownsDb ?? false;
    this.flushRows = opts.flushRows ?? 1000;
    this.maxQueue = opts.maxQueue ?? 50_000;
    this.retentionS = (opts.retentionDays ?? 90) * 86_400;
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    this.upsert = db.prepare(
      `INSERT INTO sightings(type, value, count, first_seen, last_seen, last_client, last_verdict, feeds)
       VALUES (@type, @value, @count, @first, @last, @client, @verdict, @feeds)
       ON CONFLICT(type, value) DO UPDATE SET
         count = count + excluded.count,
         first_seen = min(first_seen, excluded.first_seen),
         last_seen = max(last_seen, excluded.last_seen),
         last_client = excluded.last_client,
         last_verdict = excluded.last_verdict,
         feeds = excluded.feeds`,
    );
    this.insertLog = db.prepare(
      'INSERT INTO sighting_log(ts, type, value, client, verdict, feeds, count) VALUES (@last, @type, @value, @client, @verdict, @feeds, @count)',
    );
    this.bumpCount = db.prepare(
      `INSERT INTO lookup_counts(day, lookups, matches) VALUES (?, ?, ?)
       ON CONFLICT(day) DO UPDATE SET lookups = lookups + excluded.lookups, matches = matches + excluded.matches`,
    );
    const every = opts.flushMs ?? 1000;
    if (opts.inThread) this.startThread(opts);
    this.timer = setInterval(() => (this.thread ? this.post() : this.flush()), every);
    this.timer.unref();
  }

  private startThread(opts: SightingsOptions): void {
    const w = startWorker(new URL(import.meta.url), {
      workerData: { tag: THREAD_TAG, dbPath: this.db.name, retentionDays: opts.retentionDays, flushMs: opts.flushMs },
    });
    w.unref();
    w.on('message', (m: ThreadReply) => {
      this.threadCounts = m.stats;
      if (m.final) this.threadFinal?.(m);
    });
    const lost = () => {
      // The thread is gone (it failed to start or crashed): flush here from now on. What it held is lost
      // and not counted; the lookups it would have logged were answered.
      if (this.thread !== w) return;
      this.thread = null;
      this.threadFinal?.(null);
    };
    w.on('error', lost);
    w.on('exit', lost);
    this.thread = w;
  }

  /** inThread: hands what is queued to the writer thread (a structured clone; no SQLite on this thread). */
  private post(final = false): void {
    if (!this.thread) return;
    if (!final && this.pending.size === 0 && this.dayCounts.size === 0) return;
    const msg: ThreadBatch = { rows: [...this.pending], days: [...this.dayCounts], final, now: this.now() };
    this.pending = new Map();
    this.dayCounts = new Map();
    this.thread.postMessage(msg);
  }

  /** Thread side: takes a batch into the queue (merged with what a busy database left there). */
  absorb(rows: [string, Pending][], days: [string, { lookups: number; matches: number }][]): void {
    this.requeue(new Map(rows), new Map(days));
  }

  /** A writer on its own connection to the data dir's database: never waits for the write lock. */
  static forDataDir(dataDir: string, opts: SightingsOptions = {}): SightingsWriter {
    const db = new Database(layout(dataDir).db);
    db.pragma('busy_timeout = 0');
    return new SightingsWriter(db, { ...opts, ownsDb: true });
  }

  /** Counts one lookup in the per-day totals, and as a sighting when it matched anything. Memory only. */
  record(r: LookupResult, client: string): void {
    if (this.closed) return;
    const t = this.now();
    // The day's text for this second (a Date per lookup cost as much as the lookup itself in NDJSON batches).
    if (t !== this.dayAt) {
      this.dayAt = t;
      this.day = dayOf(t);
    }
    const day = this.day;
    const dc = this.dayCounts.get(day) ?? { lookups: 0, matches: 0 };
    dc.lookups++;
    if (r.matches.length > 0) dc.matches++;
    this.dayCounts.set(day, dc);
    if (r.matches.length === 0 || r.type === 'invalid') return;
    const value = r.normalized ?? r.value;
    const key = `${r.type}\u0000${value}\u0000${client}`;
    const p = this.pending.get(key);
    this.counters.recorded++;
    if (p) {
      p.count++;
      p.last = t;
      p.verdict = r.verdict;
      return;
    }
    if (this.pending.size >= this.maxQueue) {
      this.counters.dropped++;
      return;
    }
    const feeds = [...new Set(r.matches.map((m) => m.feed))].sort().join(',');
    this.pending.set(key, { type: r.type, value, client, count: 1, first: t, last: t, verdict: r.verdict, feeds });
    if (this.pending.size >= this.flushRows && !this.soon) {
      this.soon = true;
      setImmediate(() => {
        this.soon = false;
        if (this.thread) this.post();
        else this.flush();
      });
    }
  }

  recordMany(results: readonly LookupResult[], client: string): void {
    for (const r of results) this.record(r, client);
  }

  /** Other processes' writers on the same store (HTTP workers, set by appliance/cluster.ts): flushes them. */
  peers: (() => Promise<void>) | null = null;

  /**
   * flush(), retried every 5 ms while another writer holds the store (no busy wait in SQLite), for at most
   * `waitMs`: for a reader about to read the hit log. True once nothing is left queued on this thread.
   */
  async flushNow(waitMs = 500): Promise<boolean> {
    for (const end = Date.now() + waitMs; ; ) {
      this.flush();
      if (this.pending.size === 0 && this.dayCounts.size === 0) return true;
      if (Date.now() >= end) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** flushNow() here and in the peers: before reading the hit log, so what was just looked up shows. */
  async flushAll(): Promise<void> {
    await Promise.all([this.flushNow(), this.peers?.()]);
  }

  /**
   * Writes the queue in one transaction. When the database is busy (an apply holds the write lock) the
   * batch stays queued for the next tick. Returns the number of pairs written.
   */
  flush(): number {
    if (this.pending.size === 0 && this.dayCounts.size === 0) return 0;
    const batch = this.pending;
    const days = this.dayCounts;
    this.pending = new Map();
    this.dayCounts = new Map();
    try {
      this.db.transaction(() => {
        for (const p of batch.values()) {
          this.upsert.run(p);
          this.insertLog.run(p);
        }
        for (const [day, d] of days) this.bumpCount.run(day, d.lookups, d.matches);
        const t = this.now();
        if (t - this.lastPrune > 3600) {
          this.lastPrune = t;
          this.db.prepare('DELETE FROM sighting_log WHERE ts < ?').run(t - this.retentionS);
        }
      }).immediate();
    } catch (e) {
      // Put the batch back (merged with anything recorded meanwhile); drop only what does not fit.
      this.requeue(batch, days);
      if ((e as { code?: string }).code === 'SQLITE_BUSY' || (e as { code?: string }).code === 'SQLITE_LOCKED') {
        this.counters.busy++;
        return 0;
      }
      throw e;
    }
    this.counters.flushes++;
    this.counters.written += batch.size;
    return batch.size;
  }

  /** Merges a batch back into the queue; drops only what does not fit. */
  private requeue(batch: Map<string, Pending>, days: DayMap): void {
    for (const [day, d] of days) {
      const q = this.dayCounts.get(day) ?? { lookups: 0, matches: 0 };
      this.dayCounts.set(day, { lookups: q.lookups + d.lookups, matches: q.matches + d.matches });
    }
    for (const [k, p] of batch) {
      const q = this.pending.get(k);
      if (q) {
        q.count += p.count;
        q.first = Math.min(q.first, p.first);
        q.last = Math.max(q.last, p.last);
      } else if (this.pending.size < this.maxQueue) this.pending.set(k, p);
      else this.counters.dropped += p.count;
    }
  }

  stats(): SightingsStats {
    const t = this.threadCounts;
    return {
      queued: this.pending.size + t.queued,
      recorded: this.counters.recorded,
      written: this.counters.written + t.written,
      dropped: this.counters.dropped + t.dropped,
      flushes: this.counters.flushes + t.flushes,
      busy: this.counters.busy + t.busy,
    };
  }

  /** Stops the timer and writes what is queued (retrying briefly if the database is busy). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const w = this.thread;
    if (w) {
      // The last batch to the thread, which writes it with close()'s retries and answers once done.
      const done = new Promise<ThreadReply | null>((resolve) => (this.threadFinal = resolve));
      this.post(true);
      const timer = setTimeout(() => this.threadFinal?.(null), 10_000);
      await done;
      clearTimeout(timer);
      this.thread = null;
      await w.terminate();
    }
    for (let i = 0; i < 50 && (this.pending.size || this.dayCounts.size); i++) {
      this.flush();
      if (this.pending.size || this.dayCounts.size) await new Promise((r) => setTimeout(r, 100));
    }
    this.closed = true;
    if (this.ownsDb) this.db.close();
  }
}

// ------------------------------------------------------------------------------------------ reading

export interface Hit {
  type: string;
  value: string;
  /** Sightings in the window (all time without --since). */
  hits: number;
  total: number;
  first_seen: string;
  last_seen: string;
  clients: string[];
  last_verdict: string | null;
  feeds: string[];
  false_positive_at: string | null;
}

const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');
/** UTC day of a unix time, YYYY-MM-DD (the lookup_counts key). */
const dayOf = (s: number) => new Date(s * 1000).toISOString().slice(0, 10);

export interface DayCount {
  day: string;
  lookups: number;
  matches: number;
}

/** Lookups and matches per UTC day for the last `days` days ending today, oldest first; days without lookups are 0. */
export function lookupsPerDay(db: DB, days = 14, now = Date.now() / 1000): DayCount[] {
  const first = dayOf(now - (days - 1) * 86_400);
  const rows = db.prepare('SELECT day, lookups, matches FROM lookup_counts WHERE day >= ? ORDER BY day').all(first) as DayCount[];
  const byDay = new Map(rows.map((r) => [r.day, r]));
  const out: DayCount[] = [];
  for (let i = days - 1; i >= 0; i--) {
    const day = dayOf(now - i * 86_400);
    out.push(byDay.get(day) ?? { day, lookups: 0, matches: 0 });
  }
  return out;
}

/** `--since`: an ISO 8601 time, or a duration back from now: 90s, 30m, 24h, 7d, 2w. Unix seconds. */
export function parseSince(s: string, now = Date.now() / 1000): number {
  const m = /^(\d+)\s*([smhdw])$/i.exec(s.trim());
  if (m) return Math.floor(now - Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2].toLowerCase() as 's']);
  const t = Date.parse(s);
  if (!Number.isFinite(t)) throw new OutpostError('E_INPUT', `--since "${s}" is neither an ISO 8601 time nor a duration like 24h or 7d`);
  return Math.floor(t / 1000);
}

/** Most-sighted values, optionally only counting sightings since a time (unix seconds). */
export function listHits(db: DB, opts: { since?: number; top?: number } = {}): Hit[] {
  const top = opts.top ?? 50;
  if (!Number.isInteger(top) || top < 1 || top > 100_000) throw new OutpostError('E_INPUT', `top must be an integer 1-100000, got "${opts.top}"`);
  const rows = db
    .prepare(
      `SELECT l.type, l.value, sum(l.count) AS hits, group_concat(DISTINCT l.client) AS clients,
              s.count AS total, s.first_seen, s.last_seen, s.last_verdict, s.feeds, s.false_positive_at
         FROM sighting_log l JOIN sightings s ON s.type = l.type AND s.value = l.value
        WHERE l.ts >= ?
        GROUP BY l.type, l.value
        ORDER BY hits DESC, s.last_seen DESC, l.value
        LIMIT ?`,
    )
    .all(opts.since ?? 0, top) as {
    type: string; value: string; hits: number; clients: string | null; total: number; first_seen: number; last_seen: number;
    last_verdict: string | null; feeds: string | null; false_positive_at: string | null;
  }[];
  return rows.map((r) => ({
    type: r.type,
    value: r.value,
    hits: r.hits,
    total: r.total,
    first_seen: iso(r.first_seen),
    last_seen: iso(r.last_seen),
    clients: r.clients ? r.clients.split(',').sort() : [],
    last_verdict: r.last_verdict,
    feeds: r.feeds ? r.feeds.split(',') : [],
    false_positive_at: r.false_positive_at,
  }));
}

/**
 * Marks a sighted value as a false positive: creates a local allow override for exactly that value
 * (a domain covers its subtree) and notes it on the sighting. The value must have been sighted.
 */
export function markFalsePositive(db: DB, raw: string, reason: string, actor: string): { override: OverrideRow; value: string; type: string } {
  if (typeof raw !== 'string' || !raw) throw new OutpostError('E_INPUT', 'a value is required');
  const n = normalize(raw);
  if (!n.ok) throw new OutpostError('E_INPUT', `"${raw}": ${n.error}`);
  if (!(reason ?? '').trim()) throw new OutpostError('E_INPUT', 'marking a false positive needs a reason (--reason <text>)');
  return db.transaction(() => {
    const s = db.prepare('SELECT count FROM sightings WHERE type = ? AND value = ?').get(n.type, n.value) as { count: number } | undefined;
    if (!s) throw new OutpostError('E_NOT_FOUND', `${n.value} has no local sightings; to allow it anyway use: outpost override add allow ${n.value} --reason …`);
    const override = addOverride(db, { action: 'allow', value: n.value, reason: `false positive: ${reason.trim()}`, createdBy: actor });
    db.prepare('UPDATE sightings SET false_positive_at = ?, false_positive_override = ? WHERE type = ? AND value = ?').run(override.created_at, override.id, n.type, n.value);
    audit(db, actor, 'hits.false-positive', { subject: n.value, detail: { override_id: override.id, sightings: s.count } });
    return { override, value: n.value, type: n.type };
  })();
}

// ------------------------------------------------------------------------------------------ writer thread

if (!isMainThread && (workerData as { tag?: string } | null)?.tag === THREAD_TAG) {
  const { dbPath, retentionDays, flushMs } = workerData as { dbPath: string; retentionDays?: number; flushMs?: number };
  const db = new Database(dbPath);
  db.pragma('busy_timeout = 0');
  // The thread's own writer: same statements and busy handling; its timer retries what a busy database left.
  let clock = Math.floor(Date.now() / 1000);
  const writer = new SightingsWriter(db, { ownsDb: true, retentionDays, flushMs, now: () => clock });
  const reply = (final: boolean) => parentPort!.postMessage({ stats: writer.stats(), final } satisfies ThreadReply);
  parentPort!.on('message', (m: ThreadBatch) => {
    clock = m.now;
    writer.absorb(m.rows, m.days);
    if (m.final) {
      void writer.close().finally(() => reply(true));
      return;
    }
    try {
      writer.flush();
    } catch {
      // kept queued by flush(); retried on the writer's timer
    }
    reply(false);
  });
}
