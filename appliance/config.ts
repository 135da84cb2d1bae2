// The one configuration module: defaults, then OUTPOST_* environment, then command-line flags.
import path from 'node:path';
import { OutpostError } from './errors.ts';
import { EXPORT_FILE_SETS, type ExportFileSet } from './types.ts';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  logLevel: string;
  /** /healthz turns 503 "stale" when the newest applied data is older than this. */
  staleAfterS: number;
  /** Target false-positive rate of each Bloom filter (confirmed in SQLite anyway). */
  filterFpRate: number;
  /** Most values in one JSON batch request. */
  maxBatch: number;
  /** Largest request body accepted by the API, bytes. */
  maxBodyBytes: number;
  /** Largest package accepted for import, bytes (compressed). */
  maxPackageBytes: number;
  /** Largest decompressed indicator file, bytes. */
  maxUncompressedBytes: number;
  /** Do not build demo data on first start. */
  noDemo: boolean;
  // ---- sync and mirror (sync/fetch.ts, sync/scheduler.ts, sync/mirror.ts; docs/sync.md) ----
  /** Whole-download deadline per package, seconds (all attempts together). */
  syncDeadlineS: number;
  /** Minimum throughput of a download, bytes/s over each window; slower is a stall (E_TIMEOUT). */
  syncMinBps: number;
  /** Window the minimum throughput is measured over, seconds. */
  syncWindowS: number;
  /** Upper bound of the random delay before each scheduled sync, seconds. */
  syncJitterS: number;
  /** File of "<upstream base URL> <token>" lines: the bearer token sent to URLs under that base (a mirror with OUTPOST_MIRROR_AUTH=token); empty = none. */
  syncTokenFile: string;
  /** /mirror/: none (anonymous; it is signed public data), token (an export-scope API token) or off. */
  mirrorAuth: string;
  /** Upstream served at /mirror/ itself; empty = the only upstream with a synced index. Each is also at /mirror/upstreams/<name>/. */
  mirrorUpstream: string;
  // ---- end sync and mirror ----
  // ---- request limits (lookup/limits.ts, lookup/api.ts, appliance/serve.ts; table in docs/operations.md) ----
  /** Longest NDJSON input line, characters. */
  ndjsonMaxLine: number;
  /** Most values answered in one NDJSON stream. */
  ndjsonMaxValues: number;
  /** Longest an NDJSON stream may stay open, seconds (keep below requestTimeoutMs so the client gets an E_TIMEOUT line). */
  ndjsonMaxStreamS: number;
  /** Time a client has to send the complete request headers, ms (slowloris). */
  headersTimeoutMs: number;
  /** Time a client has to send the complete request (headers and body), ms; 0 = none. */
  requestTimeoutMs: number;
  /** Idle time before a keep-alive connection is closed, ms. */
  keepAliveTimeoutMs: number;
  /** Sustained requests per second per API token (token bucket); 0 = no rate limit. */
  rateLimitRps: number;
  /** Requests a token may send at once before the rate applies (bucket size). */
  rateLimitBurst: number;
  /** Database check at start: quick (PRAGMA quick_check), full (PRAGMA integrity_check) or off. */
  startCheck: string;
  /**
   * Stores larger than this (MiB) are checked in a background thread while serving starts (the check reads
   * the whole file: ~30 s at 10M indicators); a failed check then stops the appliance with the same E_DB.
   */
  startCheckInlineMb: number;
  /**
   * Export file sets serve rewrites after each new generation: `all`, `none`, or a comma list of
   * suricata, zeek-intel, rpz, csv, stix, misp-feed (exportFileSets). At 10M indicators all of them take
   * about 2.5 minutes of a core and 9.8 GB of writes per generation (docs/operations.md); the API streams
   * every format whatever this says.
   */
  exportFiles: string;
  /** Worker threads' scheduling: `idle` (nice 10 and SCHED_IDLE, with a starvation guard) or `nice` (nice 10 only); appliance/worker-priority.ts. */
  workerPriority: string;
  /** Kept packages (sync/kept.ts): `rollback` deletes those rollback and the mirror can no longer use; `all` keeps every one. */
  keepPackages: string;
  // ---- indicator expiry, purge, offline inbox (sync/expiry.ts, sync/inbox.ts; docs/operations-sync.md) ----
  /** Default lifetime of IP addresses and networks without their own `exp`, days after the package's creation (0 = none). */
  expiryIpDays: number;
  /** Same for URLs. */
  expiryUrlDays: number;
  /** Same for domains and e-mail addresses. */
  expiryDomainDays: number;
  /** Same for file hashes. */
  expiryHashDays: number;
  /** How often `serve` purges expired indicators, seconds (0 = never). */
  purgeIntervalS: number;
  /** How often `serve` rescans <data dir>/inbox besides fs.watch events, ms. */
  inboxScanMs: number;
  /** A dropped file is taken once its size and mtime stayed unchanged this long, ms (slow removable media). */
  inboxStableMs: number;
  // ---- verdicts (lookup/verdict.ts, docs/verdicts.md) ----
  /** Listed IPv4 networks wider than this prefix never make a value malicious by themselves. */
  maxBlockPrefixV4: number;
  /** The same for IPv6. */
  maxBlockPrefixV6: number;
  // ---- SIEM push (lookup/push.ts; docs/integrations.md) ----
  /** Syslog receiver for hits and sync events; empty = push off. */
  siemHost: string;
  /** Receiver port; 0 = 514 (tcp, udp) or 6514 (tls). */
  siemPort: number;
  /** tcp (RFC 6587 octet counting), tls (RFC 5425) or udp (RFC 5426). */
  siemTransport: string;
  /** Message body: cef or json. */
  siemFormat: string;
  /** Least verdict of hits forwarded: malicious, suspicious or benign (sync events always go). */
  siemMinVerdict: string;
  /** Most messages kept in the persistent retry queue (push_queue); beyond it the oldest are dropped and counted in /metrics. */
  siemQueue: number;
  /** Syslog facility number (16 = local0). */
  siemFacility: number;
  /** PEM CA file to verify a TLS receiver (default: system CAs). */
  siemTlsCa: string;
  /** Do not verify the TLS receiver's certificate. */
  siemTlsInsecure: boolean;
  // ---- end SIEM push ----
  // ---- webhook push (lookup/webhook.ts; docs/integrations.md) ----
  /** POST target for signed JSON batches of hits and sync events; empty = off. */
  webhookUrl: string;
  /** File (mode 0600) holding the HMAC secret. */
  webhookSecretFile: string;
  /** Most batches kept in the persistent retry queue; beyond it the oldest are dropped and counted. */
  webhookQueue: number;
  webhookMinVerdict: string;
  // ---- end webhook push ----
}

const DEFAULTS: Config = {
  host: '127.0.0.1',
  port: 8080,
  dataDir: './var',
  logLevel: 'info',
  staleAfterS: 7 * 24 * 3600,
  filterFpRate: 0.001,
  maxBatch: 10_000,
  maxBodyBytes: 4 * 1024 * 1024,
  maxPackageBytes: 2 * 1024 * 1024 * 1024,
  maxUncompressedBytes: 8 * 1024 * 1024 * 1024,
  noDemo: false,
  // ---- sync and mirror ----
  syncDeadlineS: 1800,
  syncMinBps: 4096,
  syncWindowS: 30,
  syncJitterS: 300,
  syncTokenFile: '',
  mirrorAuth: 'none',
  mirrorUpstream: '',
  // ---- end sync and mirror ----
  ndjsonMaxLine: 64 * 1024,
  ndjsonMaxValues: 10_000_000,
  ndjsonMaxStreamS: 240,
  headersTimeoutMs: 15_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 5_000,
  // Per token and process: an IDS sensor asks about every connection it sees, so one token may
  // legitimately send tens of thousands of lookups a second; the limit stops a runaway client, it must not
  // throttle the clients the appliance serves (one process here answers ~15-20k single GETs a second).
  rateLimitRps: 50_000,
  rateLimitBurst: 100_000,
  startCheck: 'quick',
  exportFiles: 'all',
  startCheckInlineMb: 256,
  workerPriority: 'idle',
  keepPackages: 'rollback',
  expiryIpDays: 30,
  expiryUrlDays: 60,
  expiryDomainDays: 180,
  expiryHashDays: 365,
  purgeIntervalS: 3600,
  inboxScanMs: 2000,
  inboxStableMs: 1000,
  maxBlockPrefixV4: 16,
  maxBlockPrefixV6: 32,
  // ---- SIEM push ----
  siemHost: '',
  siemPort: 0,
  siemTransport: 'tcp',
  siemFormat: 'cef',
  siemMinVerdict: 'suspicious',
  siemQueue: 10_000,
  siemFacility: 16,
  siemTlsCa: '',
  siemTlsInsecure: false,
  // ---- end SIEM push ----
  // ---- webhook push ----
  webhookUrl: '',
  webhookSecretFile: '',
  webhookQueue: 1_000,
  webhookMinVerdict: 'suspicious',
  // ---- end webhook push ----
};

const ENV: Record<keyof Config, string> = {
  host: 'OUTPOST_HOST',
  port: 'OUTPOST_PORT',
  dataDir: 'OUTPOST_DATA_DIR',
  logLevel: 'OUTPOST_LOG_LEVEL',
  staleAfterS: 'OUTPOST_STALE_AFTER_S',
  filterFpRate: 'OUTPOST_FILTER_FP_RATE',
  maxBatch: 'OUTPOST_MAX_BATCH',
  maxBodyBytes: 'OUTPOST_MAX_BODY_BYTES',
  maxPackageBytes: 'OUTPOST_MAX_PACKAGE_BYTES',
  maxUncompressedBytes: 'OUTPOST_MAX_UNCOMPRESSED_BYTES',
  noDemo: 'OUTPOST_NO_DEMO',
  // ---- sync and mirror ----
  syncDeadlineS: 'OUTPOST_SYNC_DEADLINE_S',
  syncMinBps: 'OUTPOST_SYNC_MIN_BPS',
  syncWindowS: 'OUTPOST_SYNC_WINDOW_S',
  syncJitterS: 'OUTPOST_SYNC_JITTER_S',
  syncTokenFile: 'OUTPOST_SYNC_TOKEN_FILE',
  mirrorAuth: 'OUTPOST_MIRROR_AUTH',
  mirrorUpstream: 'OUTPOST_MIRROR_UPSTREAM',
  // ---- end sync and mirror ----
  ndjsonMaxLine: 'OUTPOST_NDJSON_MAX_LINE',
  ndjsonMaxValues: 'OUTPOST_NDJSON_MAX_VALUES',
  ndjsonMaxStreamS: 'OUTPOST_NDJSON_MAX_STREAM_S',
  headersTimeoutMs: 'OUTPOST_HEADERS_TIMEOUT_MS',
  requestTimeoutMs: 'OUTPOST_REQUEST_TIMEOUT_MS',
  keepAliveTimeoutMs: 'OUTPOST_KEEPALIVE_TIMEOUT_MS',
  rateLimitRps: 'OUTPOST_RATE_LIMIT_RPS',
  rateLimitBurst: 'OUTPOST_RATE_LIMIT_BURST',
  startCheck: 'OUTPOST_START_CHECK',
  exportFiles: 'OUTPOST_EXPORT_FILES',
  startCheckInlineMb: 'OUTPOST_START_CHECK_INLINE_MB',
  workerPriority: 'OUTPOST_WORKER_PRIORITY',
  keepPackages: 'OUTPOST_KEEP_PACKAGES',
  expiryIpDays: 'OUTPOST_EXPIRY_IP_DAYS',
  expiryUrlDays: 'OUTPOST_EXPIRY_URL_DAYS',
  expiryDomainDays: 'OUTPOST_EXPIRY_DOMAIN_DAYS',
  expiryHashDays: 'OUTPOST_EXPIRY_HASH_DAYS',
  purgeIntervalS: 'OUTPOST_PURGE_INTERVAL_S',
  inboxScanMs: 'OUTPOST_INBOX_SCAN_MS',
  inboxStableMs: 'OUTPOST_INBOX_STABLE_MS',
  maxBlockPrefixV4: 'OUTPOST_MAX_BLOCK_PREFIX_V4',
  maxBlockPrefixV6: 'OUTPOST_MAX_BLOCK_PREFIX_V6',
  // ---- SIEM push ----
  siemHost: 'OUTPOST_SIEM_HOST',
  siemPort: 'OUTPOST_SIEM_PORT',
  siemTransport: 'OUTPOST_SIEM_TRANSPORT',
  siemFormat: 'OUTPOST_SIEM_FORMAT',
  siemMinVerdict: 'OUTPOST_SIEM_MIN_VERDICT',
  siemQueue: 'OUTPOST_SIEM_QUEUE',
  siemFacility: 'OUTPOST_SIEM_FACILITY',
  siemTlsCa: 'OUTPOST_SIEM_TLS_CA',
  siemTlsInsecure: 'OUTPOST_SIEM_TLS_INSECURE',
  // ---- end SIEM push ----
  // ---- webhook push ----
  webhookUrl: 'OUTPOST_WEBHOOK_URL',
  webhookSecretFile: 'OUTPOST_WEBHOOK_SECRET_FILE',
  webhookQueue: 'OUTPOST_WEBHOOK_QUEUE',
  webhookMinVerdict: 'OUTPOST_WEBHOOK_MIN_VERDICT',
  // ---- end webhook push ----
};

function coerce<K extends keyof Config>(key: K, raw: string | number | boolean): Config[K] {
  const def = DEFAULTS[key];
  if (typeof def === 'number') {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new OutpostError('E_CONFIG', `${ENV[key]} must be a non-negative number, got "${raw}"`);
    if (key === 'port' && (!Number.isInteger(n) || n > 65535)) throw new OutpostError('E_CONFIG', `port must be 0-65535, got "${raw}"`);
    return n as Config[K];
  }
  if (typeof def === 'boolean') return (raw === true || raw === '1' || raw === 'true' || raw === 'yes') as Config[K];
  return String(raw) as Config[K];
}

/** Builds the configuration; `overrides` are command-line flags (undefined = not given). */
export function loadConfig(
  overrides: Partial<Record<keyof Config, string | number | boolean | undefined>> = {},
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const cfg = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof Config)[]) {
    const fromEnv = env[ENV[key]];
    const raw = overrides[key] ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : undefined);
    if (raw !== undefined) (cfg as Record<string, unknown>)[key] = coerce(key, raw);
  }
  cfg.dataDir = path.resolve(cfg.dataDir);
  // ---- sync and mirror ----
  for (const k of ['syncDeadlineS', 'syncMinBps', 'syncWindowS'] as const) if (!(cfg[k] > 0)) throw new OutpostError('E_CONFIG', `${ENV[k]} must be a positive number, got "${cfg[k]}"`);
  if (!['none', 'token', 'off'].includes(cfg.mirrorAuth)) throw new OutpostError('E_CONFIG', `${ENV.mirrorAuth} must be none, token or off, got "${cfg.mirrorAuth}"`);
  if (cfg.syncTokenFile) cfg.syncTokenFile = path.resolve(cfg.syncTokenFile);
  // ---- end sync and mirror ----
  if (!['nice', 'idle'].includes(cfg.workerPriority)) throw new OutpostError('E_CONFIG', `${ENV.workerPriority} must be nice or idle, got "${cfg.workerPriority}"`);
  if (!['rollback', 'all'].includes(cfg.keepPackages)) throw new OutpostError('E_CONFIG', `${ENV.keepPackages} must be rollback or all, got "${cfg.keepPackages}"`);
  if (!['quick', 'full', 'off'].includes(cfg.startCheck)) throw new OutpostError('E_CONFIG', `${ENV.startCheck} must be quick, full or off, got "${cfg.startCheck}"`);
  exportFileSets(cfg); // E_CONFIG for a set that does not exist
  if (cfg.requestTimeoutMs > 0 && cfg.headersTimeoutMs > cfg.requestTimeoutMs) {
    throw new OutpostError('E_CONFIG', `${ENV.headersTimeoutMs} (${cfg.headersTimeoutMs}) must not exceed ${ENV.requestTimeoutMs} (${cfg.requestTimeoutMs})`);
  }
  if (!Number.isInteger(cfg.maxBlockPrefixV4) || cfg.maxBlockPrefixV4 > 32) throw new OutpostError('E_CONFIG', `${ENV.maxBlockPrefixV4} must be an integer 0-32`);
  if (!Number.isInteger(cfg.maxBlockPrefixV6) || cfg.maxBlockPrefixV6 > 128) throw new OutpostError('E_CONFIG', `${ENV.maxBlockPrefixV6} must be an integer 0-128`);
  if (cfg.rateLimitRps > 0 && cfg.rateLimitBurst < 1) throw new OutpostError('E_CONFIG', `${ENV.rateLimitBurst} must be at least 1 when a rate limit is set`);
  // ---- SIEM push ----
  if (!['tcp', 'tls', 'udp'].includes(cfg.siemTransport)) throw new OutpostError('E_CONFIG', `${ENV.siemTransport} must be tcp, tls or udp, got "${cfg.siemTransport}"`);
  if (!['cef', 'json'].includes(cfg.siemFormat)) throw new OutpostError('E_CONFIG', `${ENV.siemFormat} must be cef or json, got "${cfg.siemFormat}"`);
  if (!['malicious', 'suspicious', 'benign'].includes(cfg.siemMinVerdict)) throw new OutpostError('E_CONFIG', `${ENV.siemMinVerdict} must be malicious, suspicious or benign, got "${cfg.siemMinVerdict}"`);
  if (!Number.isInteger(cfg.siemFacility) || cfg.siemFacility > 23) throw new OutpostError('E_CONFIG', `${ENV.siemFacility} must be a syslog facility 0-23`);
  if (cfg.siemPort > 65535 || !Number.isInteger(cfg.siemPort)) throw new OutpostError('E_CONFIG', `${ENV.siemPort} must be 0-65535`);
  if (cfg.siemHost && cfg.siemQueue < 1) throw new OutpostError('E_CONFIG', `${ENV.siemQueue} must be at least 1`);
  // ---- end SIEM push ----
  // ---- webhook push ----
  if (cfg.webhookUrl) {
    if (!/^https?:\/\/[^\s]+$/.test(cfg.webhookUrl)) throw new OutpostError('E_CONFIG', `${ENV.webhookUrl} must be an http(s) URL`);
    if (!cfg.webhookSecretFile) throw new OutpostError('E_CONFIG', `${ENV.webhookSecretFile} is required with ${ENV.webhookUrl}`);
    if (!Number.isInteger(cfg.webhookQueue) || cfg.webhookQueue < 1) throw new OutpostError('E_CONFIG', `${ENV.webhookQueue} must be an integer of at least 1`);
    if (!['malicious', 'suspicious', 'benign'].includes(cfg.webhookMinVerdict)) throw new OutpostError('E_CONFIG', `${ENV.webhookMinVerdict} must be malicious, suspicious or benign, got "${cfg.webhookMinVerdict}"`);
    cfg.webhookSecretFile = path.resolve(cfg.webhookSecretFile);
  }
  // ---- end webhook push ----
  return cfg;
}

export const configEnvNames = ENV;

/** The export file sets `cfg.exportFiles` names, in EXPORT_FILE_SETS order; E_CONFIG for an unknown one. */
export function exportFileSets(cfg: Pick<Config, 'exportFiles'>): ExportFileSet[] {
  const raw = cfg.exportFiles.trim().toLowerCase();
  if (raw === 'all') return [...EXPORT_FILE_SETS];
  if (raw === 'none' || raw === '') return [];
  const named = raw.split(',').map((x) => x.trim()).filter(Boolean);
  for (const n of named) {
    if (!(EXPORT_FILE_SETS as readonly string[]).includes(n)) {
      throw new OutpostError('E_CONFIG', `${ENV.exportFiles} must be all, none or a comma list of ${EXPORT_FILE_SETS.join(', ')}; got "${n}"`);
    }
  }
  return EXPORT_FILE_SETS.filter((s) => named.includes(s));
}
