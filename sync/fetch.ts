// Downloads from an upstream with Node's fetch: small signed documents with conditional requests, and
// packages into private staging — resumable with HTTP Range, capped at the size the signed metadata
// states (E_SIZE), bounded by a total deadline and a minimum throughput (E_TIMEOUT), and hash-checked
// (E_HASH) before anything reads the archive.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';
import type { Config } from '../appliance/config.ts';
import { MAX_DOC_BYTES } from './root.ts';

export interface FetchLimits {
  /** Whole-operation deadline per package (all attempts together), ms. */
  deadlineMs: number;
  /** A window with fewer bytes than minBytesPerSec × window is a stall. */
  minBytesPerSec: number;
  windowMs: number;
  /** Connection attempts per package; later ones resume with Range. */
  attempts: number;
  /** Deadline for one small document (root, index, latest), ms. */
  docDeadlineMs: number;
  /** Bearer tokens by upstream base URL (OUTPOST_SYNC_TOKEN_FILE), for mirrors that require one. */
  tokens?: { base: string; token: string }[];
}

export const DEFAULT_FETCH_LIMITS: FetchLimits = {
  deadlineMs: 30 * 60_000,
  minBytesPerSec: 4096,
  windowMs: 30_000,
  attempts: 3,
  docDeadlineMs: 60_000,
};

/** Limits from the one config module (OUTPOST_SYNC_DEADLINE_S, _MIN_BPS, _WINDOW_S, _TOKEN_FILE). */
export function fetchLimitsOf(cfg: Config): FetchLimits {
  return {
    ...DEFAULT_FETCH_LIMITS,
    deadlineMs: cfg.syncDeadlineS * 1000,
    minBytesPerSec: cfg.syncMinBps,
    windowMs: cfg.syncWindowS * 1000,
    tokens: cfg.syncTokenFile ? readTokenFile(cfg.syncTokenFile) : undefined,
  };
}

/**
 * `<base URL> <token>` per line (# comments): the bearer token for a mirror that requires one
 * (OUTPOST_MIRROR_AUTH=token there). Kept in a file, not the database or the environment, so it stays
 * out of backups, `upstream list` and process listings; refused when others may read it.
 */
export function readTokenFile(file: string): { base: string; token: string }[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new OutpostError('E_CONFIG', `OUTPOST_SYNC_TOKEN_FILE ${file} does not exist`);
  }
  if (st.mode & 0o077) throw new OutpostError('E_CONFIG', `OUTPOST_SYNC_TOKEN_FILE ${file} is readable by others; run: chmod 600 ${file}`);
  const out: { base: string; token: string }[] = [];
  fs.readFileSync(file, 'utf8').split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (!t || t.startsWith('#')) return;
    const m = /^(\S+)\s+(\S+)$/.exec(t);
    let base: URL | null = null;
    try {
      base = m ? new URL(m[1]) : null;
    } catch {
      /* reported below */
    }
    if (!m || !base || !/^https?:$/.test(base.protocol)) throw new OutpostError('E_CONFIG', `${file} line ${i + 1}: expected "<http(s) base URL> <token>"`);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    out.push({ base: base.href, token: m[2] });
  });
  return out;
}

/** Authorization for `url`: only a token whose base URL it lies under (longest base wins), so a token
 *  never travels to another upstream. */
function authHeaders(url: string, limits: FetchLimits): Record<string, string> {
  let best: { base: string; token: string } | undefined;
  for (const t of limits.tokens ?? []) if (url.startsWith(t.base) && (!best || t.base.length > best.base.length)) best = t;
  return best ? { authorization: `Bearer ${best.token}` } : {};
}

/** A timer-driven abort: whichever of the deadline or the stall watchdog fires first names the code. */
class Watchdog {
  readonly controller = new AbortController();
  reason: OutpostError | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private windowBytes = 0;

  constructor(deadlineAt: number, what: string, stall?: { minBytesPerSec: number; windowMs: number }) {
    const left = Math.max(0, deadlineAt - Date.now());
    this.timers.push(setTimeout(() => this.fire(new OutpostError('E_TIMEOUT', `${what}: deadline exceeded`)), left));
    if (stall) {
      const need = (stall.minBytesPerSec * stall.windowMs) / 1000;
      this.timers.push(setInterval(() => {
        if (this.windowBytes < need) this.fire(new OutpostError('E_TIMEOUT', `${what}: ${this.windowBytes} bytes in ${stall.windowMs} ms, below the minimum of ${stall.minBytesPerSec} bytes/s`));
        this.windowBytes = 0;
      }, stall.windowMs));
    }
  }

  bytes(n: number): void {
    this.windowBytes += n;
  }

  fire(err: OutpostError): void {
    if (this.reason) return;
    this.reason = err;
    this.controller.abort(err);
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
  }
}

function networkError(url: string, e: unknown): OutpostError {
  if (e instanceof OutpostError) return e;
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
  return new OutpostError('E_DOWNLOAD', `${url}: ${cause?.code ?? cause?.message ?? (e as Error)?.message ?? String(e)}`, { network: true });
}

export interface DocResult {
  status: 200 | 304 | 404;
  text?: string;
  etag?: string | null;
  lastModified?: string | null;
}

/**
 * GET a small document (≤ 1 MiB), conditionally when an ETag or Last-Modified is known. A connection-level
 * failure (e.g. a keep-alive socket the server just closed) is retried; HTTP answers are not.
 */
export async function fetchDoc(url: string, opts: { etag?: string | null; lastModified?: string | null; limits?: FetchLimits } = {}): Promise<DocResult> {
  const attempts = Math.max(1, (opts.limits ?? DEFAULT_FETCH_LIMITS).attempts);
  for (let i = 1; ; i++) {
    try {
      return await fetchDocOnce(url, opts);
    } catch (e) {
      if (!(e instanceof OutpostError && e.code === 'E_DOWNLOAD' && e.details?.network) || i >= attempts) throw e;
    }
  }
}

async function fetchDocOnce(url: string, opts: { etag?: string | null; lastModified?: string | null; limits?: FetchLimits }): Promise<DocResult> {
  const limits = opts.limits ?? DEFAULT_FETCH_LIMITS;
  const dog = new Watchdog(Date.now() + limits.docDeadlineMs, url);
  const headers: Record<string, string> = authHeaders(url, limits);
  if (opts.etag) headers['if-none-match'] = opts.etag;
  if (opts.lastModified) headers['if-modified-since'] = opts.lastModified;
  try {
    // A token never follows a redirect (it could lead to another host): with one, redirects are errors.
    const res = await fetch(url, { headers, signal: dog.controller.signal, redirect: headers.authorization ? 'error' : 'follow', cache: 'no-store' });
    if (res.status === 304) {
      await res.body?.cancel();
      return { status: 304 };
    }
    if (res.status === 404 || res.status === 410) {
      await res.body?.cancel();
      return { status: 404 };
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new OutpostError('E_DOWNLOAD', `${url}: HTTP ${res.status}`);
    }
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > MAX_DOC_BYTES) {
      await res.body?.cancel();
      throw new OutpostError('E_SIZE', `${url}: ${declared} bytes, documents are at most ${MAX_DOC_BYTES}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body ?? []) {
      size += chunk.length;
      if (size > MAX_DOC_BYTES) {
        dog.controller.abort();
        throw new OutpostError('E_SIZE', `${url}: more than ${MAX_DOC_BYTES} bytes`);
      }
      chunks.push(Buffer.from(chunk));
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
    } catch {
      throw new OutpostError('E_FORMAT', `${url}: not UTF-8`);
    }
    return { status: 200, text, etag: res.headers.get('etag'), lastModified: res.headers.get('last-modified') };
  } catch (e) {
    throw dog.reason ?? networkError(url, e);
  } finally {
    dog.stop();
  }
}

export interface PackageRef {
  url: string;
  sha256: string;
  size: number;
}

function hashFile(p: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(p, 'r');
  const buf = Buffer.alloc(1024 * 1024);
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** Parses `bytes <start>-<end>/<total>`; null when absent or malformed. */
function rangeStart(header: string | null): number | null {
  const m = header ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim()) : null;
  return m ? Number(m[1]) : null;
}

/**
 * Downloads `ref` into `<dir>/<sha256>.tar` and returns that path. A partial `<sha256>.part` from an
 * earlier attempt (or an earlier sync) is resumed with a Range request. Never keeps more than ref.size
 * bytes (E_SIZE); the finished file must hash to ref.sha256 (E_HASH, and the partial file is discarded).
 */
export async function downloadPackage(ref: PackageRef, dir: string, limits: FetchLimits = DEFAULT_FETCH_LIMITS,
  onEvent?: (e: { event: 'resume' | 'retry' | 'restart'; offset: number; error?: string }) => void): Promise<string> {
  if (!/^[0-9a-f]{64}$/.test(ref.sha256)) throw new OutpostError('E_FORMAT', `package sha256 "${ref.sha256}" is not 64 hex digits`);
  if (!Number.isSafeInteger(ref.size) || ref.size < 0) throw new OutpostError('E_FORMAT', `package size ${ref.size} is not a byte count`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const final = path.join(dir, `${ref.sha256}.tar`);
  const part = path.join(dir, `${ref.sha256}.part`);
  if (fs.existsSync(final)) {
    if (hashFile(final) === ref.sha256) return final;
    fs.rmSync(final, { force: true });
  }
  const deadlineAt = Date.now() + limits.deadlineMs;
  let lastError: OutpostError | undefined;
  for (let attempt = 1; attempt <= limits.attempts; attempt++) {
    let have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    if (have > ref.size) {
      fs.rmSync(part, { force: true });
      have = 0;
    }
    if (have === ref.size) break;
    if (have > 0) onEvent?.({ event: 'resume', offset: have });
    const dog = new Watchdog(deadlineAt, ref.url, { minBytesPerSec: limits.minBytesPerSec, windowMs: limits.windowMs });
    let fd: number | undefined;
    try {
      const auth = authHeaders(ref.url, limits);
      const res = await fetch(ref.url, { headers: { ...auth, ...(have > 0 ? { range: `bytes=${have}-` } : {}) }, signal: dog.controller.signal, redirect: auth.authorization ? 'error' : 'follow', cache: 'no-store' });
      if (res.status === 206 && rangeStart(res.headers.get('content-range')) === have) {
        fd = fs.openSync(part, 'a', 0o600);
      } else if (res.status === 200 || res.status === 206) {
        // No usable range support: start over from the first byte.
        if (have > 0) onEvent?.({ event: 'restart', offset: 0 });
        if (res.status === 206) {
          await res.body?.cancel();
          throw new OutpostError('E_DOWNLOAD', `${ref.url}: answered a range from another offset`);
        }
        have = 0;
        fd = fs.openSync(part, 'w', 0o600);
      } else {
        await res.body?.cancel();
        throw new OutpostError('E_DOWNLOAD', `${ref.url}: HTTP ${res.status}`);
      }
      const declared = Number(res.headers.get('content-length') ?? NaN);
      if (Number.isFinite(declared) && have + declared > ref.size) {
        await res.body?.cancel();
        throw new OutpostError('E_SIZE', `${ref.url}: server offers ${have + declared} bytes; the signed metadata says ${ref.size}`);
      }
      for await (const chunk of res.body ?? []) {
        const buf = Buffer.from(chunk);
        if (have + buf.length > ref.size) {
          dog.controller.abort();
          throw new OutpostError('E_SIZE', `${ref.url}: more than the ${ref.size} bytes the signed metadata states`);
        }
        fs.writeSync(fd, buf);
        have += buf.length;
        dog.bytes(buf.length);
      }
      if (have === ref.size) break;
      throw new OutpostError('E_DOWNLOAD', `${ref.url}: connection ended after ${have} of ${ref.size} bytes`);
    } catch (e) {
      const err = dog.reason ?? networkError(ref.url, e);
      // Oversize, hash and deadline are final; a broken connection is retried (resuming).
      if (err.code !== 'E_DOWNLOAD') {
        if (err.code === 'E_SIZE') fs.rmSync(part, { force: true });
        throw err;
      }
      lastError = err;
      if (attempt < limits.attempts) onEvent?.({ event: 'retry', offset: have, error: err.message });
    } finally {
      dog.stop();
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
  const got = fs.existsSync(part) ? fs.statSync(part).size : 0;
  if (got !== ref.size) throw lastError ?? new OutpostError('E_DOWNLOAD', `${ref.url}: ${got} of ${ref.size} bytes`);
  const sha = hashFile(part);
  if (sha !== ref.sha256) {
    fs.rmSync(part, { force: true });
    throw new OutpostError('E_HASH', `${ref.url}: sha256 ${sha.slice(0, 16)}… differs from the signed ${ref.sha256.slice(0, 16)}…`);
  }
  fs.renameSync(part, final);
  return final;
}
