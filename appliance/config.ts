// The one configuration module: defaults, then OUTPOST_* environment, then command-line flags.
import path from 'node:path';
import { OutpostError } from './errors.ts';

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
  return cfg;
}

export const configEnvNames = ENV;
