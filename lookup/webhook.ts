// Signed webhook push: hits (lookups at or above a minimum verdict) and sync events (package applied /
// rejected) POSTed as JSON batches to one URL, each request signed with HMAC-SHA256 over
// "<timestamp>.<body>" (headers X-Outpost-Timestamp, X-Outpost-Signature: sha256=<hex>).
// Delivery is at least once and survives restarts: offer() only buffers in memory; a flush a moment later
// writes the buffered events as one batch row into SQLite (push_queue), and the sender delivers rows
// oldest first, retrying failures with capped exponential backoff. The queue is bounded in rows: beyond
// the cap the oldest batches are dropped and counted. The secret is read from a 0600 file, never logged.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import { syncEvents, type SyncEvent } from '../sync/events.ts';

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
}

export interface WebhookStats {
  queued: number;
  sent: number;
  dropped: number;
  failures: number;
}

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
  private buffer: unknown[] = [];
  private flushScheduled = false;
  private sending = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private sent = 0;
  private dropped = 0;
  private failures = 0;
  private idle: (() => void)[] = [];
  private readonly onSync = (e: SyncEvent) => this.offerEvent(e);

  constructor(private readonly db: DB, private readonly cfg: WebhookConfig, private readonly log?: Logger) {
    syncEvents.on('event', this.onSync);
    // Batches left by an earlier run are due now: a restart is a good moment to retry.
    this.db.prepare('UPDATE push_queue SET next_at = 0 WHERE target = ?').run(cfg.target);
    if (this.queued()) setImmediate(() => void this.pump());
  }

  /** Lookup path: filter and buffer; never waits, never throws. */
  offer(r: LookupResult, client: string): void {
    if (RANK[r.verdict] < RANK[this.cfg.minVerdict] || !r.matches.length) return;
    try {
      this.offerEvent(hitEvent(r, client, Date.now()));
    } catch {
      this.failures++;
    }
  }

  /** Any JSON event (sync events arrive here through sync/events.ts). */
  offerEvent(e: unknown): void {
    if (this.closed) return;
    this.buffer.push(e);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes buffered events as batch rows and trims the queue to its cap (oldest out). */
  flush(): void {
    this.flushScheduled = false;
    if (!this.buffer.length) return;
    const events = this.buffer.splice(0);
    try {
      const insert = this.db.prepare('INSERT INTO push_queue(target, body, attempts, next_at, created_at) VALUES (?, ?, 0, ?, ?)');
      this.db.transaction(() => {
        for (let i = 0; i < events.length; i += this.cfg.batchMax) {
          insert.run(this.cfg.target, JSON.stringify({ source: 'outpost', events: events.slice(i, i + this.cfg.batchMax) }), Date.now(), new Date().toISOString());
        }
        const excess = this.queued() - this.cfg.queueMax;
        if (excess > 0) {
          this.db.prepare('DELETE FROM push_queue WHERE id IN (SELECT id FROM push_queue WHERE target = ? ORDER BY id LIMIT ?)').run(this.cfg.target, excess);
          this.dropped += excess;
        }
      })();
    } catch (err) {
      this.failures++;
      this.log?.warn({ err: (err as Error).message }, 'webhook push: could not queue a batch');
    }
    void this.pump();
  }

  queued(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM push_queue WHERE target = ?').get(this.cfg.target) as { n: number }).n;
  }

  stats(): WebhookStats {
    return { queued: this.queued(), sent: this.sent, dropped: this.dropped, failures: this.failures };
  }

  renderMetrics(): string {
    const s = this.stats();
    const lines = [
      ['outpost_webhook_push_sent_total', 'counter', 'Webhook batches accepted by the receiver.', s.sent],
      ['outpost_webhook_push_dropped_total', 'counter', 'Webhook batches dropped because the retry queue was full.', s.dropped],
      ['outpost_webhook_push_failures_total', 'counter', 'Failed webhook deliveries (each is retried).', s.failures],
      ['outpost_webhook_push_queued', 'gauge', 'Webhook batches waiting in the retry queue.', s.queued],
    ] as const;
    return lines.map(([n, t, h, v]) => `# HELP ${n} ${h}\n# TYPE ${n} ${t}\n${n} ${v}`).join('\n') + '\n';
  }

  /** Resolves once nothing is buffered and no batch is due or in flight (batches waiting on backoff may remain). */
  async settled(): Promise<void> {
    if (this.buffer.length) this.flush();
    if (!this.sending && !this.due()) return;
    await new Promise<void>((r) => this.idle.push(r));
  }

  async close(): Promise<void> {
    syncEvents.off('event', this.onSync);
    if (this.buffer.length) this.flush(); // buffered events are kept for the next run
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.sending) await new Promise((r) => setTimeout(r, 10));
    for (const r of this.idle.splice(0)) r();
  }

  private due(): { id: number; body: string; attempts: number } | undefined {
    return this.db.prepare('SELECT id, body, attempts FROM push_queue WHERE target = ? AND next_at <= ? ORDER BY id LIMIT 1').get(this.cfg.target, Date.now()) as
      | { id: number; body: string; attempts: number }
      | undefined;
  }

  private async pump(): Promise<void> {
    if (this.sending || this.closed) return;
    this.sending = true;
    try {
      for (let row = this.due(); row && !this.closed; row = this.due()) {
        const ok = await this.post(row.body);
        if (ok) {
          this.db.prepare('DELETE FROM push_queue WHERE id = ?').run(row.id);
          this.sent++;
        } else {
          this.failures++;
          const delay = Math.min(this.cfg.backoffMaxMs, this.cfg.backoffBaseMs * 2 ** Math.min(row.attempts, 30));
          this.db.prepare('UPDATE push_queue SET attempts = attempts + 1, next_at = ? WHERE id = ?').run(Date.now() + delay, row.id);
          break; // keep order: nothing newer goes out before the oldest batch
        }
      }
    } catch (err) {
      this.failures++;
      this.log?.warn({ err: (err as Error).message }, 'webhook push: queue error');
    } finally {
      this.sending = false;
      this.scheduleNext();
      for (const r of this.idle.splice(0)) r();
    }
  }

  private scheduleNext(): void {
    if (this.closed || this.timer) return;
    const next = this.db.prepare('SELECT min(next_at) AS t FROM push_queue WHERE target = ?').get(this.cfg.target) as { t: number | null };
    if (next.t === null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.pump();
    }, Math.max(0, next.t - Date.now()));
    this.timer.unref();
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
