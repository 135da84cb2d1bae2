// Platform push (docs/integrations.md): hits and sync events to a SIEM as RFC 5424 syslog and to a signed
// webhook (lookup/webhook.ts), both through the persistent bounded retry queue PushQueue (push_queue).
//
// Syslog sink: lookups that matched (verdict at or above a configured minimum) and sync events (package
// applied / rejected, from sync/events.ts) as RFC 5424 messages with a CEF or JSON body, over TCP with
// RFC 6587 octet counting, TLS (RFC 5425, same framing) or UDP (RFC 5426, one message per datagram).
// The lookup path only formats one line and buffers it; PushQueue writes it to SQLite and the sender
// writes batches of the oldest lines, reconnecting with capped backoff while the receiver is away.
// TCP/TLS: lines leave the queue only after the write to a connected socket completed (at least once: a
// batch whose write failed is sent again, whole); plain syslog has no receipt, so lines in the kernel's
// buffers when the receiver dies can still be lost. UDP: lines leave the queue once handed to the kernel;
// whether a datagram arrived is unknowable.
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { Logger } from '../appliance/log.ts';
import Database from 'better-sqlite3';
import { layout, type DB } from '../appliance/db.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import { AUDIT_CURSOR_KEY, SyncEventFollower, type SyncEvent } from '../sync/events.ts';
import { hitEvent, PushQueue, WebhookPush, webhookConfigFrom, type QueueStats } from './webhook.ts';
import type { Metrics } from './metrics.ts';
import type { SightingsWriter } from './sightings.ts';

export type PushTransport = 'tcp' | 'tls' | 'udp';
export type PushFormat = 'cef' | 'json';

export interface PushConfig {
  host: string;
  port: number;
  transport: PushTransport;
  format: PushFormat;
  /** Least verdict forwarded: malicious > suspicious > benign > unknown. */
  minVerdict: Verdict;
  /** Most lines kept in the retry queue; beyond it the oldest are dropped and counted. */
  queueMax: number;
  /** Most lines per write. */
  batchMax: number;
  /** Syslog facility (RFC 5424 table; 16 = local0). */
  facility: number;
  /** TLS: PEM CA bundle to verify the receiver (default: system CAs); insecure skips verification. */
  tlsCa?: string;
  tlsInsecure?: boolean;
  /** HOSTNAME field; default os.hostname(). */
  hostname?: string;
  /** push_queue.target (default 'syslog') and retry backoff (default 250 ms doubling to 30 s). */
  target?: string;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** false: queue only, another process sends (QueueOptions.sender). */
  sender?: boolean;
}

const RANK: Record<Verdict, number> = { unknown: 0, benign: 1, suspicious: 2, malicious: 3 };
/** RFC 5424 severities: malicious critical, suspicious warning, else informational. */
const SYSLOG_SEVERITY: Record<Verdict, number> = { malicious: 2, suspicious: 4, benign: 6, unknown: 6 };
/** CEF severity 0–10. */
const CEF_SEVERITY: Record<Verdict, number> = { malicious: 8, suspicious: 5, benign: 2, unknown: 0 };

const VERSION = (() => {
  try {
    return (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0';
  } catch {
    return '0';
  }
})();

// ---- CEF ----

/** CEF header fields: backslash and pipe escaped; line breaks cannot appear in a header, so they become spaces. */
export function cefHeader(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r\n|\r|\n/g, ' ');
}

/** CEF extension values: backslash, equals sign and line breaks escaped (pipes need no escape there). */
export function cefValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/=/g, '\\=').replace(/\r\n|\n/g, '\\n').replace(/\r/g, '\\r');
}

const FIELD_BY_TYPE: Record<string, string> = {
  ipv4: 'dst', ipv6: 'dst', domain: 'dhost', url: 'request', md5: 'fileHash', sha1: 'fileHash', sha256: 'fileHash', email: 'duser',
};

export function cefMessage(r: LookupResult, client: string, at: number): string {
  const feeds = [...new Set(r.matches.map((m) => m.feed))];
  const category = r.matches.find((m) => m.category)?.category ?? '';
  const ext: [string, string | number][] = [
    ['rt', at],
    ['act', r.verdict],
    ['suser', client],
    ['cs1Label', 'indicator'],
    ['cs1', r.normalized ?? r.value],
    ['cs2Label', 'feeds'],
    ['cs2', feeds.join(',')],
    ['cs3Label', 'type'],
    ['cs3', r.type],
    ['cn1Label', 'confidence'],
    ['cn1', r.confidence],
    ['cat', category],
  ];
  const field = FIELD_BY_TYPE[r.type];
  if (field && r.normalized) ext.push([field, r.normalized]);
  if (r.reasons?.length) ext.push(['msg', r.reasons.join('; ')]);
  const head = ['CEF:0', 'Outpost', 'Outpost', VERSION, r.rule ?? r.verdict, `${r.verdict} ${r.type} lookup`, String(CEF_SEVERITY[r.verdict])].map((x, i) => (i === 0 ? x : cefHeader(x)));
  return `${head.join('|')}|${ext.map(([k, v]) => `${k}=${cefValue(String(v))}`).join(' ')}`;
}

export function jsonMessage(r: LookupResult, client: string, at: number): string {
  return JSON.stringify(hitEvent(r, client, at));
}

// ---- RFC 5424 ----

/** SD-PARAM values escape `"`, `\` and `]` (RFC 5424 section 6.3.3). */
function sdValue(s: string): string {
  return s.replace(/[\\"\]]/g, (c) => `\\${c}`);
}

/** PRINTUSASCII without spaces, at most `max` characters, '-' when empty (HOSTNAME, APP-NAME …). */
function headerToken(s: string, max: number): string {
  const t = s.replace(/[^\x21-\x7e]/g, '').slice(0, max);
  return t || '-';
}

export function syslogLine(cfg: Pick<PushConfig, 'facility' | 'hostname'>, r: LookupResult, client: string, body: string, at: number): string {
  const pri = cfg.facility * 8 + SYSLOG_SEVERITY[r.verdict];
  // 32473 is the private enterprise number reserved for examples (RFC 5612): our SD-ID until we hold one.
  const sd = `[outpost@32473 verdict="${sdValue(r.verdict)}" type="${sdValue(r.type)}" client="${sdValue(client)}" confidence="${r.confidence}"]`;
  return `<${pri}>1 ${new Date(at).toISOString()} ${headerToken(cfg.hostname ?? os.hostname(), 255)} outpost ${process.pid} hit ${sd} ${body}`;
}

/** RFC 6587 octet counting: "<byte length> <message>". */
export function octetFrame(line: string): Buffer {
  const msg = Buffer.from(line, 'utf8');
  return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
}

// ---- sync events (sync/events.ts) ----

/** Refusals that mean tampering or a trust failure rather than a broken or late package. */
const TRUST_CODES = new Set(['E_SIG', 'E_UNKNOWN_KEY', 'E_REVOKED_KEY', 'E_ROOT', 'E_HASH', 'E_ROLLBACK', 'E_EQUIVOCATION', 'E_STATE', 'E_TAR']);

/** Syslog and CEF severity of a sync event: applied notice/3, refused warning/6, trust refusals critical/9. */
export function syncSeverity(e: SyncEvent): { syslog: number; cef: number } {
  if (e.event === 'package.applied') return { syslog: 5, cef: 3 };
  return e.code && TRUST_CODES.has(e.code) ? { syslog: 2, cef: 9 } : { syslog: 4, cef: 6 };
}

/** CEF signature ids of sync events: stable per kind, so a SIEM rule can key on them. */
export const SYNC_SIGNATURE: Record<SyncEvent['event'], string> = { 'package.applied': 'outpost-sync-applied', 'package.rejected': 'outpost-sync-rejected' };

export function cefSyncMessage(e: SyncEvent): string {
  const ext: [string, string | number][] = [
    ['rt', Date.parse(e.time)],
    ['act', e.event === 'package.applied' ? 'applied' : 'rejected'],
    ['outcome', e.event === 'package.applied' ? 'success' : 'failure'],
    ['suser', e.actor],
    ['externalId', e.audit_id],
  ];
  if (e.feed !== null) ext.push(['cs1Label', 'feed'], ['cs1', e.feed]);
  if (e.version !== null) ext.push(['cn1Label', 'version'], ['cn1', e.version]);
  if (e.type !== null) ext.push(['cs3Label', 'type'], ['cs3', e.type]);
  if (e.code) ext.push(['cs4Label', 'code'], ['cs4', e.code]);
  if (e.source !== null) ext.push(['cs5Label', 'source'], ['cs5', e.source]);
  if (e.added !== undefined) ext.push(['cn2Label', 'added'], ['cn2', e.added]);
  if (e.removed !== undefined) ext.push(['cn3Label', 'removed'], ['cn3', e.removed]);
  if (e.generation !== undefined) ext.push(['cs6Label', 'generation'], ['cs6', e.generation]);
  if (e.message) ext.push(['msg', e.message]);
  const name = e.event === 'package.applied' ? 'package applied' : `package rejected: ${e.code}`;
  const head = ['CEF:0', 'Outpost', 'Outpost', VERSION, SYNC_SIGNATURE[e.event], name, String(syncSeverity(e).cef)].map((x, i) => (i === 0 ? x : cefHeader(x)));
  return `${head.join('|')}|${ext.map(([k, v]) => `${k}=${cefValue(String(v))}`).join(' ')}`;
}

/** A sync event as one RFC 5424 line: MSGID "sync", SD with the event kind, feed, version and code. */
export function syncSyslogLine(cfg: Pick<PushConfig, 'facility' | 'hostname' | 'format'>, e: SyncEvent): string {
  const pri = cfg.facility * 8 + syncSeverity(e).syslog;
  const params: [string, unknown][] = [['event', e.event], ['feed', e.feed], ['version', e.version], ['code', e.code], ['audit_id', e.audit_id]];
  const sd = `[outpost@32473 ${params.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}="${sdValue(String(v))}"`).join(' ')}]`;
  const body = cfg.format === 'cef' ? cefSyncMessage(e) : JSON.stringify(e);
  return `<${pri}>1 ${e.time} ${headerToken(cfg.hostname ?? os.hostname(), 255)} outpost ${process.pid} sync ${sd} ${body}`;
}

// ---- the syslog sink ----

export interface PushStats extends QueueStats {
  connects: number;
  connected: boolean;
}

export class SiemPush {
  readonly queue: PushQueue<string>;
  private connects = 0;
  private sock: net.Socket | null = null;
  private udp: dgram.Socket | null = null;

  private readonly cfg: PushConfig;

  constructor(db: DB, cfg: PushConfig, private readonly log?: Logger) {
    this.cfg = { ...cfg, hostname: cfg.hostname ?? os.hostname() }; // once: not a syscall per message
    this.queue = new PushQueue<string>(
      db,
      {
        target: cfg.target ?? 'syslog',
        queueMax: cfg.queueMax,
        rowsPerSend: cfg.batchMax,
        backoffBaseMs: cfg.backoffBaseMs ?? 250,
        backoffMaxMs: cfg.backoffMaxMs ?? 30_000,
        encode: (lines) => lines,
        send: (lines) => this.send(lines),
        sender: cfg.sender,
      },
      log,
    );
  }

  /** Called on the lookup path: filter, format, buffer. Never waits and never throws. */
  offer(r: LookupResult, client: string): void {
    if (RANK[r.verdict] < RANK[this.cfg.minVerdict] || !r.matches.length) return;
    try {
      const at = Date.now();
      const body = this.cfg.format === 'cef' ? cefMessage(r, client, at) : jsonMessage(r, client, at);
      this.queue.offer(syslogLine(this.cfg, r, client, body, at));
    } catch {
      /* a push problem never reaches a lookup */
    }
  }

  offerMany(results: readonly LookupResult[], client: string): void {
    for (const r of results) this.offer(r, client);
  }

  /** Sync events, inside sync/events.ts's transaction (committed with its audit cursor). */
  insertSync(events: SyncEvent[]): void {
    this.queue.insert(events.map((e) => syncSyslogLine(this.cfg, e)));
  }

  flush(): void {
    this.queue.flush();
  }

  stats(): PushStats {
    return { ...this.queue.stats(), connects: this.connects, connected: !!this.sock || !!this.udp };
  }

  /** Prometheus lines for /metrics. */
  renderMetrics(): string {
    return this.queue.renderMetrics('siem', 'Syslog messages', [['outpost_siem_push_connected', 'gauge', '1 while connected to the receiver.', this.sock || this.udp ? 1 : 0]]);
  }

  /** Resolves when nothing is buffered, in flight or due (lines waiting on backoff may remain). */
  drained(): Promise<void> {
    return this.queue.settled();
  }

  async close(): Promise<void> {
    await this.queue.close();
    const sock = this.sock;
    this.sock = null;
    if (sock) await new Promise<void>((r) => sock.end(() => r()));
    this.udp?.close();
    this.udp = null;
  }

  private async send(lines: string[]): Promise<boolean> {
    if (!(await this.connect())) return false;
    return this.write(lines);
  }

  private connect(): Promise<boolean> {
    if (this.cfg.transport === 'udp') {
      if (!this.udp) {
        this.udp = dgram.createSocket(net.isIPv6(this.cfg.host) ? 'udp6' : 'udp4');
        this.udp.on('error', (err) => this.log?.warn({ err: err.message }, 'siem push: udp socket error'));
        this.connects++;
      }
      return Promise.resolve(true);
    }
    if (this.sock && !this.sock.destroyed && this.sock.writable) return Promise.resolve(true);
    this.sock = null;
    return new Promise((resolve) => {
      const onError = (err: Error) => {
        this.log?.warn({ err: err.message, host: this.cfg.host, port: this.cfg.port }, 'siem push: connection failed');
        s.destroy();
        resolve(false);
      };
      const ready = () => {
        s.off('error', onError);
        s.on('error', (err) => {
          this.log?.warn({ err: err.message }, 'siem push: connection lost');
          if (this.sock === s) this.sock = null;
        });
        // The receiver closing its side (a restart) drops the connection before the next write.
        s.on('end', () => s.destroy());
        s.on('close', () => {
          if (this.sock === s) this.sock = null;
        });
        s.resume(); // a syslog receiver sends nothing; read (and discard) so 'end' is seen
        s.setKeepAlive(true, 30_000);
        this.sock = s;
        this.connects++;
        resolve(true);
      };
      const s =
        this.cfg.transport === 'tls'
          ? tls.connect({ host: this.cfg.host, port: this.cfg.port, ca: this.cfg.tlsCa, rejectUnauthorized: !this.cfg.tlsInsecure, servername: net.isIP(this.cfg.host) ? undefined : this.cfg.host }, ready)
          : net.connect({ host: this.cfg.host, port: this.cfg.port }, ready);
      s.once('error', onError);
    });
  }

  /** True once every line was handed to the socket without error (TCP/TLS: written to the connection). */
  private write(batch: string[]): Promise<boolean> {
    if (this.cfg.transport === 'udp') {
      const udp = this.udp!;
      return Promise.all(
        batch.map((line) => new Promise<boolean>((res) => udp.send(Buffer.from(line, 'utf8'), this.cfg.port, this.cfg.host, (err) => res(!err)))),
      ).then((r) => r.every(Boolean));
    }
    const sock = this.sock!;
    return new Promise((resolve) => {
      sock.write(Buffer.concat(batch.map(octetFrame)), (err) => {
        if (err) {
          this.log?.warn({ err: err.message }, 'siem push: write failed; the batch stays queued');
          if (this.sock === sock) this.sock = null;
          sock.destroy();
        }
        resolve(!err);
      });
    });
  }
}

/** Settings from the configuration (OUTPOST_SIEM_*); null when no host is set (push off). */
export function pushConfigFrom(c: {
  siemHost: string; siemPort: number; siemTransport: string; siemFormat: string; siemMinVerdict: string; siemQueue: number; siemFacility: number; siemTlsCa: string; siemTlsInsecure: boolean;
}): PushConfig | null {
  if (!c.siemHost) return null;
  const transport = c.siemTransport as PushTransport;
  return {
    host: c.siemHost,
    port: c.siemPort || (transport === 'tls' ? 6514 : 514),
    transport,
    format: c.siemFormat as PushFormat,
    minVerdict: c.siemMinVerdict as Verdict,
    queueMax: c.siemQueue,
    batchMax: 500,
    facility: c.siemFacility,
    tlsCa: c.siemTlsCa ? fs.readFileSync(c.siemTlsCa, 'utf8') : undefined,
    tlsInsecure: c.siemTlsInsecure,
  };
}

// ---- both sinks together (serve's integrations block) ----

export interface PlatformPush {
  siem: SiemPush | null;
  webhook: WebhookPush | null;
  /** null for a producer (opts.producerOnly). */
  follower: SyncEventFollower | null;
  /** Lookup path: a recorded result offered to every sink. */
  offer(r: LookupResult, client: string): void;
  renderMetrics(): string;
  close(): Promise<void>;
}

type PushSettings = Parameters<typeof pushConfigFrom>[0] & Parameters<typeof webhookConfigFrom>[0] & { dataDir: string };

/**
 * Every result the hit log records (the API's lookups with matches) is offered to the push as well, and
 * the push's queue figures join /metrics. offer() only buffers, so the lookup path never waits for a
 * receiver or the disk.
 */
export function attachPlatformPush(push: PlatformPush, sightings: SightingsWriter, metrics: Metrics): void {
  metrics.extra.push(() => push.renderMetrics());
  const record = sightings.record.bind(sightings);
  sightings.record = (r, client) => {
    record(r, client);
    push.offer(r, client);
  };
}

/**
 * Starts the configured sinks (null when none is): on their own connection to the store that never waits
 * for the write lock, plus the audit follower that queues sync events for both in one transaction.
 * producerOnly: another process on the same data dir (serve's primary) sends and follows the audit log;
 * this one only queues its hits (an HTTP worker of a cluster that answers lookups).
 */
export function startPlatformPush(c: PushSettings, log?: Logger, opts: { followMs?: number; producerOnly?: boolean } = {}): PlatformPush | null {
  const sender = !opts.producerOnly;
  const siemCfg = pushConfigFrom(c);
  const webhookCfg = webhookConfigFrom(c);
  if (!siemCfg && !webhookCfg) {
    if (sender) forgetAuditCursor(c.dataDir);
    return null;
  }
  const db = new Database(layout(c.dataDir).db);
  db.pragma('busy_timeout = 0');
  const siem = siemCfg ? new SiemPush(db, { ...siemCfg, sender }, log) : null;
  const webhook = webhookCfg ? new WebhookPush(db, { ...webhookCfg, sender }, log) : null;
  const follower = sender
    ? new SyncEventFollower(
        db,
        (events) => {
          siem?.insertSync(events);
          webhook?.insertSync(events);
        },
        () => {
          siem?.queue.trim();
          webhook?.queue.trim();
        },
        { intervalMs: opts.followMs, log },
      ).start()
    : null;
  return {
    siem,
    webhook,
    follower,
    offer(r, client) {
      siem?.offer(r, client);
      webhook?.offer(r, client);
    },
    renderMetrics: () => (siem?.renderMetrics() ?? '') + (webhook?.renderMetrics() ?? ''),
    async close() {
      follower?.stop();
      await siem?.close();
      await webhook?.close();
      db.close();
    },
  };
}

/** Push off: events from now on are not owed to a sink configured later (it starts at the newest audit row). */
function forgetAuditCursor(dataDir: string): void {
  const db = new Database(layout(dataDir).db);
  try {
    db.pragma('busy_timeout = 2000');
    db.prepare('DELETE FROM meta WHERE key = ?').run(AUDIT_CURSOR_KEY);
  } catch {
    /* busy: the cursor stays; a later sink then also gets the events of this run */
  } finally {
    db.close();
  }
}
