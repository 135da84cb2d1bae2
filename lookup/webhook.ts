// Signed webhook push, and the persistent retry queue (PushQueue) both platform-push sinks use — the
// webhook here and syslog in lookup/push.ts.
//
// Webhook: hits (lookups at or above a minimum verdict) and sync events (package applied / rejected, read
// from the audit log by sync/events.ts) POSTed as JSON batches to one URL, each request signed with
// HMAC-SHA256 over "<timestamp>.<body>" (headers X-Outpost-Timestamp, X-Outpost-Signature: sha256=<hex>).
// The secret is read from a 0600 file, never logged.
//
// PushQueue: delivery is at least once and survives restarts. offer() only buffers in memory; a flush a
// moment later writes the buffered events as rows into SQLite (push_queue, one `target` per sink) on a
// connection that never waits for the write lock (busy → the buffer is kept and retried), and the sender
// delivers rows strictly oldest first; after a failed delivery it waits (capped exponential backoff) and
// retries the oldest row, so nothing newer overtakes it. A row is deleted only after its sink reported
// delivery. The queue is bounded in rows: beyond the cap the oldest rows are dropped and counted.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import type { SyncEvent } from '../sync/events.ts';

// ---------------------------------------------------------------------------------- the shared queue

export interface QueueOptions<E> {
  /** push_queue.target: one per sink ('webhook', 'syslog'). */
  target: string;
  /** Most rows kept; beyond it the oldest are dropped and counted. */
  queueMax: number;
  /** Most rows handed to send() at once. */
  rowsPerSend: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Buffered events → rows (a webhook batch body, a syslog line). */
  encode(events: E[]): string[];
  /** Delivers rows in order; true once they were delivered (they are then deleted). Never throws. */
  send(rows: string[]): Promise<boolean>;
  /** false: only write rows (another process on the same store sends them, e.g. HTTP workers of a cluster). */
  sender?: boolean;
  /** Sender: how often an idle queue looks for rows other processes wrote (default 1000 ms). */
  pollMs?: number;
}

export interface QueueStats {
  queued: number;
  sent: number;
  dropped: number;
  failures: number;
}

const isBusy = (e: unknown) => ['SQLITE_BUSY', 'SQLITE_LOCKED'].includes((e as { code?: string }).code ?? '');

export class PushQueue<E> {
  private buffer: E[] = [];
  private readonly bufferMax: number;
  private flushScheduled = false;
  private sending = false;
  private timer: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private poller: NodeJS.Timeout | null = null;
  private closed = false;
  /** Rows up to this id were delivered; their DELETE failed (database busy) and is retried before anything is sent. */
  private ackedThrough = 0;
  /** Rows up to this id are being sent: the cap never drops them from under the sender. */
  private inflightThrough = 0;
  /** Backoff after consecutive failed deliveries (in memory; a restart retries at once). */
  private failedInARow = 0;
  private retryAt = 0;
  private readonly counters = { sent: 0, dropped: 0, failures: 0 };
  private idle: (() => void)[] = [];

  constructor(private readonly db: DB, private readonly opts: QueueOptions<E>, private readonly log?: Logger) {
    this.bufferMax = Math.max(1_000, Math.min(opts.queueMax * 10, 100_000));
    if (opts.sender === false) return;
    // Rows left by an earlier run are due now: a restart is a good moment to retry.
    if (this.queued()) setImmediate(() => void this.pump());
    // Rows written by producers in other processes are noticed within a poll.
    this.poller = setInterval(() => void this.pump(), opts.pollMs ?? 1000);
    this.poller.unref();
  }

  get target(): string {
    return this.opts.target;
  }

  /** Buffers one event (lookup path: never waits, never throws). */
  offer(e: E): void {
    if (this.closed) return;
    if (this.buffer.length >= this.bufferMax) {
      this.buffer.shift(); // the database has been busy for long: oldest out, counted
      this.counters.dropped++;
    }
    this.buffer.push(e);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /**
   * Writes events as rows now, inside the caller's transaction if there is one (sync/events.ts commits
   * them with its audit cursor). Call trim() after the commit.
   */
  insert(events: E[]): void {
    if (!events.length) return;
    const stmt = this.db.prepare('INSERT INTO push_queue(target, body, attempts, next_at, created_at) VALUES (?, ?, 0, ?, ?)');
    const now = Date.now();
    const at = new Date(now).toISOString();
    for (const row of this.opts.encode(events)) stmt.run(this.opts.target, row, now, at);
  }

  /** Enforces the cap: the oldest rows beyond queueMax are deleted and counted. Then starts the sender. */
  trim(): void {
    try {
      const excess = this.queued() - this.opts.queueMax;
      if (excess > 0) {
        const info = this.db
          .prepare('DELETE FROM push_queue WHERE id IN (SELECT id FROM push_queue WHERE target = ? AND id > ? ORDER BY id LIMIT ?)')
          .run(this.opts.target, Math.max(this.ackedThrough, this.inflightThrough), excess);
        this.counters.dropped += info.changes;
      }
    } catch (err) {
      if (!isBusy(err)) this.log?.warn({ err: (err as Error).message, sink: this.opts.target }, 'push: could not trim the queue');
    }
    void this.pump();
  }

  /** Writes buffered events as rows and trims the queue. Database busy → the events stay buffered. */
  flush(): void {
    this.flushScheduled = false;
    if (!this.buffer.length) return;
    const events = this.buffer.splice(0);
    try {
      this.db.transaction(() => this.insert(events)).immediate();
    } catch (err) {
      if (isBusy(err) && !this.closed) {
        this.buffer.unshift(...events.slice(Math.max(0, events.length + this.buffer.length - this.bufferMax)));
        this.scheduleFlush();
        return;
      }
      this.counters.failures++;
      this.counters.dropped += events.length;
      this.log?.warn({ err: (err as Error).message, sink: this.opts.target }, 'push: could not queue events');
      return;
    }
    this.trim();
  }

  /** Rows waiting (delivered rows whose delete is pending are not counted). */
  queued(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM push_queue WHERE target = ? AND id > ?').get(this.opts.target, this.ackedThrough) as { n: number }).n;
  }

  stats(): QueueStats {
    return { queued: this.queued() + this.buffer.length, ...this.counters };
  }

  /** Prometheus lines for /metrics under `outpost_<prefix>_push_*`; `what` names the unit of the queue. */
  renderMetrics(prefix: string, what: string, extra: [string, string, string, number][] = []): string {
    const s = this.stats();
    const lines: [string, string, string, number][] = [
      [`outpost_${prefix}_push_sent_total`, 'counter', `${what} delivered to the receiver.`, s.sent],
      [`outpost_${prefix}_push_dropped_total`, 'counter', `${what} dropped because the retry queue was full (oldest first).`, s.dropped],
      [`outpost_${prefix}_push_failures_total`, 'counter', 'Failed deliveries (each is retried).', s.failures],
      [`outpost_${prefix}_push_queued`, 'gauge', `${what} waiting in the retry queue.`, s.queued],
      ...extra,
    ];
    return lines.map(([n, t, h, v]) => `# HELP ${n} ${h}\n# TYPE ${n} ${t}\n${n} ${v}`).join('\n') + '\n';
  }

  /** Resolves once nothing is buffered, in flight or due (rows waiting on backoff may remain). */
  async settled(): Promise<void> {
    for (;;) {
      if (this.buffer.length) this.flush();
      if (this.closed || this.opts.sender === false || (!this.sending && !this.buffer.length && !this.due())) return;
      await new Promise<void>((r) => {
        this.idle.push(r);
        if (!this.sending) void this.pump();
      });
    }
  }

  async close(): Promise<void> {
    // Buffered events are kept in the table for the next run (retrying briefly while an apply holds the lock).
    for (let i = 0; i < 50 && this.buffer.length; i++) {
      this.flush();
      if (this.buffer.length) await new Promise((r) => setTimeout(r, 100));
    }
    this.closed = true;
    if (this.poller) clearInterval(this.poller);
    for (const t of [this.timer, this.flushTimer]) if (t) clearTimeout(t);
    this.timer = this.flushTimer = null;
    while (this.sending) await new Promise((r) => setTimeout(r, 10));
    this.ack();
    for (const r of this.idle.splice(0)) r();
  }

  private due(): boolean {
    const head = this.head(1)[0];
    return !!head && this.retryAt <= Date.now();
  }

  private head(n: number): { id: number; body: string }[] {
    return this.db.prepare('SELECT id, body FROM push_queue WHERE target = ? AND id > ? ORDER BY id LIMIT ?').all(this.opts.target, this.ackedThrough, n) as { id: number; body: string }[];
  }

  /** Deletes delivered rows; busy → retried on the next round (they are skipped meanwhile). */
  private ack(): void {
    if (!this.ackedThrough) return;
    try {
      this.db.prepare('DELETE FROM push_queue WHERE target = ? AND id <= ?').run(this.opts.target, this.ackedThrough);
      this.ackedThrough = 0;
    } catch (err) {
      if (!isBusy(err)) throw err;
    }
  }

  private async pump(): Promise<void> {
    if (this.sending || this.closed || this.opts.sender === false) return;
    this.sending = true;
    let wakeIn: number | null = null;
    try {
      for (;;) {
        this.ack();
        const rows = this.closed ? [] : this.head(this.opts.rowsPerSend);
        if (!rows.length) break;
        if (this.retryAt > Date.now()) {
          wakeIn = this.retryAt - Date.now();
          break; // order kept: nothing newer goes out before the oldest row
        }
        this.inflightThrough = rows[rows.length - 1].id;
        const ok = await this.opts.send(rows.map((r) => r.body)).finally(() => (this.inflightThrough = 0));
        if (ok) {
          this.ackedThrough = rows[rows.length - 1].id; // consecutive ids of this target: delete up to the last
          this.counters.sent += rows.length;
          this.failedInARow = 0;
          this.retryAt = 0;
        } else {
          this.counters.failures++;
          const delay = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** Math.min(this.failedInARow++, 30));
          this.retryAt = Date.now() + delay;
          try {
            this.db.prepare('UPDATE push_queue SET attempts = attempts + 1, next_at = ? WHERE id = ?').run(this.retryAt, rows[0].id);
          } catch {
            /* attempts are informational; the backoff lives in memory */
          }
          wakeIn = delay;
          break;
        }
      }
    } catch (err) {
      this.counters.failures++;
      this.log?.warn({ err: (err as Error).message, sink: this.opts.target }, 'push: queue error');
      wakeIn = 250;
    } finally {
      this.sending = false;
      if (wakeIn !== null) this.wake(wakeIn);
      for (const r of this.idle.splice(0)) r();
    }
  }

  private wake(ms: number): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.pump();
    }, Math.max(0, ms));
    this.timer.unref();
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, 250);
    this.flushTimer.unref();
  }
}

// ----------------------------------------------------------------------------------------- webhook

export interface WebhookConfig {
  url: string;
  secret: Buffer;
  /** Least verdict forwarded for hits. */
  minVerdict: Verdict;
  /** Most batch rows kept in push_queue for this target. */
  queueMax: number;
  /** Most events per batch. */
  batchMax: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
  /** push_queue.target; lets several pushers share the table. */
  target: string;
  /** false: queue only, another process sends (QueueOptions.sender). */
  sender?: boolean;
}

export type WebhookStats = QueueStats;

const RANK: Record<Verdict, number> = { unknown: 0, benign: 1, suspicious: 2, malicious: 3 };

/** The signature a receiver recomputes: hex HMAC-SHA256 over "<timestamp>.<body>". */
export function signBody(secret: Buffer | string, timestamp: string, body: string): string {
  return crypto.createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** Receiver side: constant-time check of the signature and a timestamp within `toleranceS` of now. */
export function verifySignature(secret: Buffer | string, timestamp: string, body: string, header: string, toleranceS = 300, nowMs = Date.now()): boolean {
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(nowMs / 1000 - Number(timestamp)) > toleranceS) return false;
  const want = Buffer.from(`sha256=${signBody(secret, timestamp, body)}`);
  const got = Buffer.from(header);
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

/** Reads the HMAC secret; the file must be private to its owner (no group/other bits). */
export function readSecretFile(file: string): Buffer {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new OutpostError('E_CONFIG', `webhook secret file ${file} not readable`);
  }
  if (!st.isFile()) throw new OutpostError('E_CONFIG', `webhook secret file ${file} is not a file`);
  if (st.mode & 0o077) throw new OutpostError('E_CONFIG', `webhook secret file ${file} must have mode 0600 (is ${(st.mode & 0o777).toString(8)})`);
  const secret = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'utf8');
  if (secret.length < 16) throw new OutpostError('E_CONFIG', `webhook secret in ${file} must be at least 16 bytes`);
  return secret;
}

/** One lookup hit as an event: the webhook's batch entries and the syslog JSON body share this shape. */
export function hitEvent(r: LookupResult, client: string, at: number): Record<string, unknown> {
  return {
    event: 'lookup.hit',
    time: new Date(at).toISOString(),
    client,
    value: r.value,
    type: r.type,
    normalized: r.normalized,
    verdict: r.verdict,
    confidence: r.confidence,
    rule: r.rule,
    matches: r.matches.map((m) => ({ feed: m.feed, kind: m.kind, indicator: m.indicator, category: m.category, confidence: m.confidence, feed_kind: m.feed_kind })),
    generation: r.generation,
  };
}

export class WebhookPush {
  readonly queue: PushQueue<unknown>;

  constructor(db: DB, private readonly cfg: WebhookConfig, private readonly log?: Logger) {
    this.queue = new PushQueue<unknown>(
      db,
      {
        target: cfg.target,
        queueMax: cfg.queueMax,
        rowsPerSend: 1,
        backoffBaseMs: cfg.backoffBaseMs,
        backoffMaxMs: cfg.backoffMaxMs,
        encode: (events) => {
          const rows: string[] = [];
          for (let i = 0; i < events.length; i += cfg.batchMax) rows.push(JSON.stringify({ source: 'outpost', events: events.slice(i, i + cfg.batchMax) }));
          return rows;
        },
        send: (rows) => this.post(rows[0]),
        sender: cfg.sender,
      },
      log,
    );
  }

  /** Lookup path: filter and buffer; never waits, never throws. */
  offer(r: LookupResult, client: string): void {
    if (RANK[r.verdict] < RANK[this.cfg.minVerdict] || !r.matches.length) return;
    try {
      this.queue.offer(hitEvent(r, client, Date.now()));
    } catch {
      /* a push problem never reaches a lookup */
    }
  }

  /** Sync events, inside sync/events.ts's transaction (committed with its audit cursor). */
  insertSync(events: SyncEvent[]): void {
    this.queue.insert(events);
  }

  flush(): void {
    this.queue.flush();
  }

  queued(): number {
    return this.queue.queued();
  }

  stats(): WebhookStats {
    return this.queue.stats();
  }

  renderMetrics(): string {
    return this.queue.renderMetrics('webhook', 'Webhook batches');
  }

  settled(): Promise<void> {
    return this.queue.settled();
  }

  close(): Promise<void> {
    return this.queue.close();
  }

  private async post(body: string): Promise<boolean> {
    const ts = String(Math.floor(Date.now() / 1000));
    try {
      const res = await fetch(this.cfg.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'outpost-webhook', 'x-outpost-timestamp': ts, 'x-outpost-signature': `sha256=${signBody(this.cfg.secret, ts, body)}` },
        body,
        signal: AbortSignal.timeout(this.cfg.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) this.log?.warn({ status: res.status, url: this.cfg.url }, 'webhook push: receiver refused a batch');
      return res.ok;
    } catch (err) {
      this.log?.warn({ err: (err as Error).message, url: this.cfg.url }, 'webhook push: delivery failed');
      return false;
    }
  }
}

/** Settings from the configuration (OUTPOST_WEBHOOK_*); null when no URL is set (push off). */
export function webhookConfigFrom(c: { webhookUrl: string; webhookSecretFile: string; webhookQueue: number; webhookMinVerdict: string }): WebhookConfig | null {
  if (!c.webhookUrl) return null;
  return {
    url: c.webhookUrl,
    secret: readSecretFile(c.webhookSecretFile),
    minVerdict: c.webhookMinVerdict as Verdict,
    queueMax: c.webhookQueue,
    batchMax: 500,
    backoffBaseMs: 1_000,
    backoffMaxMs: 5 * 60_000,
    timeoutMs: 10_000,
    target: 'webhook',
  };
}
