// SIEM push: lookups that matched (verdict at or above a configured minimum) forwarded as RFC 5424
// syslog messages with a CEF or JSON body, over TCP with RFC 6587 octet counting, TLS (RFC 5425, same
// framing) or UDP (RFC 5426, one message per datagram).
// The lookup path only formats one line and appends it to a bounded in-memory queue (full → the line is
// dropped and counted); a background loop sends batches, reconnecting with capped backoff while the
// receiver is away. Delivery is at most once: lines written into a connection that then fails are lost
// (counted as errors), lines still queued survive a reconnect.
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import type { Logger } from '../appliance/log.ts';
import type { LookupResult, Verdict } from '../appliance/types.ts';
import { hitEvent } from './webhook.ts';

export type PushTransport = 'tcp' | 'tls' | 'udp';
export type PushFormat = 'cef' | 'json';

export interface PushConfig {
  host: string;
  port: number;
  transport: PushTransport;
  format: PushFormat;
  /** Least verdict forwarded: malicious > suspicious > benign > unknown. */
  minVerdict: Verdict;
  /** Most lines waiting; beyond it new lines are dropped and counted. */
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

// ---- the sender ----

export interface PushStats {
  queued: number;
  sent: number;
  dropped: number;
  errors: number;
  connects: number;
  connected: boolean;
}

export class SiemPush {
  private queue: string[] = [];
  private sent = 0;
  private dropped = 0;
  private errors = 0;
  private connects = 0;
  private sock: net.Socket | null = null;
  private udp: dgram.Socket | null = null;
  private sending = false;
  private backoffMs = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private idle: (() => void)[] = [];

  constructor(private readonly cfg: PushConfig, private readonly log?: Logger) {}

  /** Called on the lookup path: filter, format, enqueue. Never waits and never throws. */
  offer(r: LookupResult, client: string): void {
    if (this.closed || RANK[r.verdict] < RANK[this.cfg.minVerdict] || !r.matches.length) return;
    if (this.queue.length >= this.cfg.queueMax) {
      this.dropped++;
      return;
    }
    try {
      const at = Date.now();
      const body = this.cfg.format === 'cef' ? cefMessage(r, client, at) : jsonMessage(r, client, at);
      this.queue.push(syslogLine(this.cfg, r, client, body, at));
    } catch {
      this.errors++;
      return;
    }
    if (!this.sending) setImmediate(() => void this.pump());
  }

  offerMany(results: readonly LookupResult[], client: string): void {
    for (const r of results) this.offer(r, client);
  }

  stats(): PushStats {
    return { queued: this.queue.length, sent: this.sent, dropped: this.dropped, errors: this.errors, connects: this.connects, connected: !!this.sock || !!this.udp };
  }

  /** Prometheus lines for /metrics. */
  renderMetrics(): string {
    const s = this.stats();
    const lines = [
      ['outpost_siem_push_sent_total', 'counter', 'Syslog messages written to the SIEM receiver.', s.sent],
      ['outpost_siem_push_dropped_total', 'counter', 'Hits not forwarded because the push queue was full.', s.dropped],
      ['outpost_siem_push_errors_total', 'counter', 'Messages lost to connection errors.', s.errors],
      ['outpost_siem_push_queued', 'gauge', 'Messages waiting to be sent.', s.queued],
      ['outpost_siem_push_connected', 'gauge', '1 while connected to the receiver.', s.connected ? 1 : 0],
    ] as const;
    return lines.map(([n, t, h, v]) => `# HELP ${n} ${h}\n# TYPE ${n} ${t}\n${n} ${v}`).join('\n') + '\n';
  }

  /** Resolves when the queue is empty and nothing is in flight (tests, shutdown). */
  drained(): Promise<void> {
    if (!this.queue.length && !this.sending) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const sock = this.sock;
    this.sock = null;
    if (sock) await new Promise<void>((r) => sock.end(() => r()));
    this.udp?.close();
    this.udp = null;
    for (const r of this.idle.splice(0)) r();
  }

  private connect(): Promise<boolean> {
    if (this.cfg.transport === 'udp') {
      if (!this.udp) {
        this.udp = dgram.createSocket(net.isIPv6(this.cfg.host) ? 'udp6' : 'udp4');
        this.udp.on('error', () => this.errors++);
        this.connects++;
      }
      return Promise.resolve(true);
    }
    if (this.sock) return Promise.resolve(true);
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
        s.on('close', () => {
          if (this.sock === s) this.sock = null;
        });
        s.setKeepAlive(true, 30_000);
        this.sock = s;
        this.connects++;
        this.backoffMs = 0;
        resolve(true);
      };
      const s =
        this.cfg.transport === 'tls'
          ? tls.connect({ host: this.cfg.host, port: this.cfg.port, ca: this.cfg.tlsCa, rejectUnauthorized: !this.cfg.tlsInsecure, servername: net.isIP(this.cfg.host) ? undefined : this.cfg.host }, ready)
          : net.connect({ host: this.cfg.host, port: this.cfg.port }, ready);
      s.once('error', onError);
    });
  }

  private async pump(): Promise<void> {
    if (this.sending || this.closed) return;
    this.sending = true;
    try {
      while (this.queue.length && !this.closed) {
        if (!(await this.connect())) {
          this.scheduleRetry();
          return;
        }
        const batch = this.queue.splice(0, this.cfg.batchMax);
        const ok = await this.write(batch);
        if (ok) this.sent += batch.length;
        else this.errors += batch.length;
      }
    } finally {
      this.sending = false;
      if (!this.queue.length) for (const r of this.idle.splice(0)) r();
    }
  }

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
          if (this.sock === sock) this.sock = null;
          sock.destroy();
        }
        resolve(!err);
      });
    });
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.backoffMs = Math.min(30_000, this.backoffMs ? this.backoffMs * 2 : 250);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.pump();
    }, this.backoffMs);
    this.retryTimer.unref();
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
