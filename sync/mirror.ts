// The mirror: /mirror/ serves what this appliance accepted from an upstream, unchanged and still signed, in
// the layout `provider publish` writes (root.json, root/<n>.json, index.json, feeds/<feed>/latest.json,
// packages/<sha256>.tar), so a downstream appliance can pull from it with the ORIGINAL provider's root of
// trust and no new trust at all. Documents are the exact texts kept at acceptance (roots.document,
// upstreams.index_doc, upstream_feeds.latest_doc); packages are the kept files under <data>/packages/<feed>/.
// The mirror is a conduit, not a signer: it never re-signs and never edits, and the downstream verifies
// everything again — a file damaged on this disk is refused there (E_HASH, E_SIG), never trusted.
//
// Only a fixed set of names resolves (no directory listings; no file path is ever built from the URL).
// A feed's latest.json is served only while this appliance has exactly that version and state applied, so
// every document points at data the appliance itself accepted. The full package a delta-synced appliance
// never downloaded is fetched on first demand (or after each scheduled sync), checked against the signed
// sha256, verified like an import, and kept.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Context, Hono } from 'hono';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, layout } from '../appliance/db.ts';
import { OutpostError, asOutpostError, type ErrorCode } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import { scopeAllows, TokenVerifier } from '../appliance/tokens.ts';
import type { AppEnv } from '../lookup/api.ts';
import { getFeed } from './apply.ts';
import { downloadPackage, fetchLimitsOf, type FetchLimits } from './fetch.ts';
import { stageAndVerify, trustedKeys } from './import.ts';
import { keptDir, keptName } from './kept.ts';
import { FEED_NAME } from './package-reader.ts';
import type { LatestDoc } from './publish.ts';
import { mergeKeys, parseEnvelope } from './root.ts';
import { UPSTREAM_NAME, currentRoot, getUpstream, upstreamKeys } from './upstreams.ts';

const HEX64 = /^[0-9a-f]{64}$/;
/** How long a request for a not-yet-fetched full package waits before answering 503 + Retry-After. */
const ON_DEMAND_WAIT_MS = 20_000;

export interface MirrorDeps {
  cfg: Config;
  db: DB;
  log?: Logger;
  /** Limits for fetching full packages from the upstream (default: from cfg). */
  limits?: FetchLimits;
}

/** What a mirror path names. */
export type MirrorTarget =
  | { kind: 'doc'; text: string; lastModified: Date }
  | { kind: 'package'; file: string; size: number; sha256: string }
  /** The full package of an accepted latest.json that this appliance reached by deltas: fetch, then serve. */
  | { kind: 'fetch'; upstream: string; feed: string; latest: LatestDoc };

// ---------- what is served ----------

function signedDoc(text: string): Record<string, unknown> | null {
  try {
    const doc = JSON.parse(parseEnvelope(text, 'document').signed);
    return doc && typeof doc === 'object' ? doc : null;
  } catch {
    return null;
  }
}

/** The document's own `created` time (signed), else the time we stored it. */
function createdOf(text: string, fallback: string | null): Date {
  const c = signedDoc(text)?.created;
  const t = typeof c === 'string' ? Date.parse(c) : NaN;
  return new Date(Number.isFinite(t) ? t : fallback ? Date.parse(fallback) || 0 : 0);
}

/** The upstream served at /mirror/ itself: the configured one, else the only one with a synced index. */
export function defaultMirrorUpstream(cfg: Config, db: DB): string | null {
  if (cfg.mirrorUpstream) return db.prepare('SELECT 1 FROM upstreams WHERE name = ?').get(cfg.mirrorUpstream) ? cfg.mirrorUpstream : null;
  const rows = db.prepare('SELECT name FROM upstreams WHERE index_doc IS NOT NULL').all() as { name: string }[];
  return rows.length === 1 ? rows[0].name : null;
}

/**
 * The accepted latest.json of an upstream feed, only while this appliance has exactly its version and state
 * applied (after a failed apply, a rollback or an offline import of another version it would point at data
 * this appliance does not hold). Feeds imported only offline have no upstream document and never appear.
 */
export function servedLatest(db: DB, upstream: string, feed: string): { text: string; latest: LatestDoc; fetchedAt: string } | null {
  const row = db.prepare('SELECT latest_doc, fetched_at FROM upstream_feeds WHERE upstream = ? AND feed = ?').get(upstream, feed) as
    | { latest_doc: string; fetched_at: string } | undefined;
  if (!row) return null;
  const latest = signedDoc(row.latest_doc) as LatestDoc | null;
  const applied = getFeed(db, feed);
  if (!latest || !applied || latest.feed !== feed || latest.version !== applied.version || latest.state !== applied.state) return null;
  return { text: row.latest_doc, latest, fetchedAt: row.fetched_at };
}

/** A kept package file (import's or the mirror's naming) with this sha256 prefix and the signed size. */
function findKept(cfg: Config, feed: string, sha256: string, size: number): string | null {
  const dir = keptDir(cfg, feed);
  const name = new RegExp(`^\\d+-(full|delta)-${sha256.slice(0, 16)}\\.tar$`);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return null;
  }
  for (const n of names.filter((x) => name.test(x))) {
    const st = fs.lstatSync(path.join(dir, n));
    // Regular files of the signed size only; the downstream checks the full hash anyway.
    if (st.isFile() && st.size === size) return path.join(dir, n);
  }
  return null;
}

/**
 * Maps a path under an upstream's mirror tree to what it serves, or null (404). `rel` is the raw path
 * after the tree's base: only the five layout names resolve, so "..", "%2e%2e", "//" and absolute paths
 * are simply names that do not exist.
 */
export function resolveMirror(cfg: Config, db: DB, upstream: string, rel: string): MirrorTarget | null {
  const u = db.prepare('SELECT index_doc, last_success_at, added_at FROM upstreams WHERE name = ?').get(upstream) as
    | { index_doc: string | null; last_success_at: string | null; added_at: string } | undefined;
  if (!u) return null;
  if (rel === 'root.json') {
    const r = db.prepare('SELECT document, accepted_at FROM roots WHERE upstream = ? ORDER BY version DESC LIMIT 1').get(upstream) as { document: string; accepted_at: string } | undefined;
    return r ? { kind: 'doc', text: r.document, lastModified: createdOf(r.document, r.accepted_at) } : null;
  }
  let m = /^root\/([1-9][0-9]{0,8})\.json$/.exec(rel);
  if (m) {
    const r = db.prepare('SELECT document, accepted_at FROM roots WHERE upstream = ? AND version = ?').get(upstream, Number(m[1])) as { document: string; accepted_at: string } | undefined;
    return r ? { kind: 'doc', text: r.document, lastModified: createdOf(r.document, r.accepted_at) } : null;
  }
  if (rel === 'index.json') return u.index_doc ? { kind: 'doc', text: u.index_doc, lastModified: createdOf(u.index_doc, u.last_success_at ?? u.added_at) } : null;
  m = /^feeds\/([^/]+)\/latest\.json$/.exec(rel);
  if (m) {
    if (!FEED_NAME.test(m[1])) return null;
    const s = servedLatest(db, upstream, m[1]);
    return s ? { kind: 'doc', text: s.text, lastModified: createdOf(s.text, s.fetchedAt) } : null;
  }
  m = /^packages\/([0-9a-f]{64})\.tar$/.exec(rel);
  if (m) {
    const sha = m[1];
    // Only packages a served latest.json names: the full package and the deltas this appliance kept.
    for (const { feed } of db.prepare('SELECT feed FROM upstream_feeds WHERE upstream = ?').all(upstream) as { feed: string }[]) {
      const s = servedLatest(db, upstream, feed);
      if (!s) continue;
      const entry = s.latest.full.sha256 === sha ? s.latest.full : s.latest.deltas.find((d) => d.sha256 === sha);
      if (!entry || !HEX64.test(entry.sha256) || !Number.isSafeInteger(entry.size)) continue;
      const file = findKept(cfg, feed, sha, entry.size);
      if (file) return { kind: 'package', file, size: entry.size, sha256: sha };
      // A delta we never applied is not ours to serve (the downstream falls back to the full package).
      if (entry === s.latest.full) return { kind: 'fetch', upstream, feed, latest: s.latest };
    }
  }
  return null;
}

// ---------- fetching full packages this appliance reached by deltas ----------

const inflight = new Map<string, Promise<string>>();
/** sha256 → when its last on-demand fetch failed: downstream retries must not become an upstream download storm. */
const failedAt = new Map<string, number>();
const RETRY_FETCH_MS = 5 * 60_000;

export interface PrefetchOutcome {
  upstream: string;
  feed: string;
  version: number;
  sha256: string;
  action: 'present' | 'fetched' | 'failed';
  code?: ErrorCode;
  message?: string;
}

/**
 * Downloads the full package a served latest.json names (hash-checked against the signed sha256 while
 * downloading), verifies it like an import (signature by a key the upstream's root authorizes, feed,
 * version and state as announced) and keeps it beside the imported ones. One download per package at a time.
 */
export function fetchFullPackage(cfg: Config, db: DB, upstream: string, feed: string, latest: LatestDoc, o: { limits?: FetchLimits; log?: Logger; actor?: string } = {}): Promise<string> {
  const key = latest.full.sha256;
  let p = inflight.get(key);
  if (!p) {
    p = doFetchFull(cfg, db, upstream, feed, latest, o).finally(() => inflight.delete(key));
    inflight.set(key, p);
  }
  return p;
}

async function doFetchFull(cfg: Config, db: DB, upstream: string, feed: string, latest: LatestDoc, o: { limits?: FetchLimits; log?: Logger; actor?: string }): Promise<string> {
  const actor = o.actor ?? `mirror:${upstream}`;
  const subject = `${feed}@${latest.version}`;
  const full = latest.full;
  try {
    const existing = findKept(cfg, feed, full.sha256, full.size);
    if (existing) return existing;
    const u = getUpstream(db, upstream);
    if (full.path !== `packages/${full.sha256}.tar` || !HEX64.test(full.sha256)) throw new OutpostError('E_FORMAT', `${subject}: full package path must be packages/<sha256>.tar`);
    const url = new URL(full.path, u.base_url).href;
    const dlDir = path.join(layout(cfg.dataDir).staging, 'downloads', `mirror-${upstream}`);
    const file = await downloadPackage({ url, sha256: full.sha256, size: full.size }, dlDir, o.limits ?? fetchLimitsOf(cfg));
    try {
      const keys = mergeKeys(trustedKeys(db), upstreamKeys(currentRoot(db, upstream)?.root ?? null));
      const staged = await stageAndVerify(cfg, db, file, new Date(), keys);
      try {
        const m = staged.manifest;
        if (m.feed !== feed || m.type !== 'full' || m.version !== full.version || m.state !== full.state) {
          throw new OutpostError('E_STATE', `${url}: package is ${m.feed}@${m.version} (${m.type}, state ${m.state.slice(0, 12)}…); latest.json announces ${subject} state ${full.state.slice(0, 12)}…`);
        }
      } finally {
        staged.cleanup();
      }
      const dir = keptDir(cfg, feed);
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const dest = path.join(dir, keptName(full.version, 'full', full.sha256));
      fs.renameSync(file, dest);
      audit(db, actor, 'mirror.fetch', { subject, detail: { upstream, sha256: full.sha256, size: full.size, url } });
      o.log?.info({ upstream, feed, version: full.version, sha256: full.sha256 }, 'mirror: kept the full package for downstream appliances');
      return dest;
    } finally {
      fs.rmSync(file, { force: true });
    }
  } catch (e) {
    const err = asOutpostError(e);
    audit(db, actor, 'mirror.reject', { code: err.code, subject, detail: { upstream, sha256: full.sha256, message: err.message } });
    o.log?.warn({ upstream, feed, code: err.code, err: err.message }, 'mirror: could not keep the full package');
    throw err;
  }
}

/** Makes sure every served latest.json of every upstream (or one) has its full package kept here. */
export async function prefetchMirror(cfg: Config, db: DB, o: { upstream?: string; limits?: FetchLimits; log?: Logger; actor?: string } = {}): Promise<PrefetchOutcome[]> {
  const rows = (o.upstream
    ? db.prepare('SELECT upstream, feed FROM upstream_feeds WHERE upstream = ? ORDER BY feed').all(o.upstream)
    : db.prepare('SELECT upstream, feed FROM upstream_feeds ORDER BY upstream, feed').all()) as { upstream: string; feed: string }[];
  const out: PrefetchOutcome[] = [];
  for (const { upstream, feed } of rows) {
    const s = servedLatest(db, upstream, feed);
    if (!s) continue;
    const base = { upstream, feed, version: s.latest.version, sha256: s.latest.full.sha256 };
    if (findKept(cfg, feed, s.latest.full.sha256, s.latest.full.size)) {
      out.push({ ...base, action: 'present' });
      continue;
    }
    try {
      await fetchFullPackage(cfg, db, upstream, feed, s.latest, o);
      out.push({ ...base, action: 'fetched' });
    } catch (e) {
      const err = asOutpostError(e);
      out.push({ ...base, action: 'failed', code: err.code, message: err.message });
    }
  }
  return out;
}

// ---------- HTTP: conditional requests, single byte ranges, HEAD ----------

interface Entity {
  etag: string;
  lastModified: Date;
  type: string;
  size: number;
  immutable: boolean;
  /** Bytes start..end (inclusive); called only for a GET that sends a body. */
  body(start: number, end: number): BodyInit;
  /** Releases what was opened when no body is sent. */
  release(): void;
}

function etagMatches(header: string, etag: string): boolean {
  // If-None-Match uses the weak comparison: W/"x" matches "x".
  return header.split(',').map((t) => t.trim().replace(/^W\//, '')).some((t) => t === '*' || t === etag);
}

/** One `bytes=` range → [start, end]; 'unsatisfiable'; or null to ignore the header (multiple or malformed ranges). */
export function parseRange(header: string, size: number): [number, number] | 'unsatisfiable' | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return [Math.max(0, size - n), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? Infinity : Number(m[2]);
  if (!Number.isSafeInteger(start) || end < start) return null;
  if (start >= size) return 'unsatisfiable';
  return [start, Math.min(end, size - 1)];
}

function send(req: Request, e: Entity): Response {
  const lm = new Date(Math.floor(e.lastModified.getTime() / 1000) * 1000);
  const headers = new Headers({
    etag: e.etag,
    'last-modified': lm.toUTCString(),
    // Packages are content-addressed: never change. Documents change with every publish: revalidate.
    'cache-control': e.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  const inm = req.headers.get('if-none-match');
  const ims = Date.parse(req.headers.get('if-modified-since') ?? '');
  if (inm !== null ? etagMatches(inm, e.etag) : Number.isFinite(ims) && lm.getTime() <= ims) {
    e.release();
    return new Response(null, { status: 304, headers });
  }
  headers.set('content-type', e.type);
  headers.set('accept-ranges', 'bytes');
  let [start, end, status] = [0, e.size - 1, 200];
  const range = req.headers.get('range');
  const ifRange = req.headers.get('if-range');
  // If-Range: the range only if the client's copy is this one (strong ETag or exact date), else the whole.
  const rangeValid = ifRange === null || (ifRange.startsWith('"') ? ifRange === e.etag : Date.parse(ifRange) === lm.getTime());
  if (range !== null && rangeValid) {
    const r = parseRange(range, e.size);
    if (r === 'unsatisfiable') {
      e.release();
      headers.set('content-range', `bytes */${e.size}`);
      headers.delete('content-type');
      return new Response(null, { status: 416, headers });
    }
    if (r) {
      [start, end, status] = [r[0], r[1], 206];
      headers.set('content-range', `bytes ${start}-${end}/${e.size}`);
    }
  }
  headers.set('content-length', String(Math.max(0, end - start + 1)));
  if (req.method === 'HEAD' || e.size === 0) {
    e.release();
    return new Response(null, { status, headers });
  }
  return new Response(e.body(start, end), { status, headers });
}

function docEntity(text: string, lastModified: Date): Entity {
  const bytes = Buffer.from(text, 'utf8');
  return {
    etag: `"${crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`,
    lastModified,
    type: 'application/json; charset=utf-8',
    size: bytes.length,
    immutable: false,
    body: (s, e) => bytes.subarray(s, e + 1),
    release: () => {},
  };
}

function fileEntity(file: string, size: number, sha256: string): Entity | null {
  // Opened once: the bytes sent come from the file that was checked, even if it is replaced meanwhile.
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0));
  } catch {
    return null;
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile() || st.size !== size) {
    fs.closeSync(fd);
    return null;
  }
  return {
    etag: `"${sha256}"`,
    lastModified: st.mtime,
    type: 'application/x-tar',
    size,
    immutable: true,
    body: (start, end) => Readable.toWeb(fs.createReadStream('', { fd, start, end, autoClose: true })) as unknown as ReadableStream<Uint8Array>,
    release: () => fs.closeSync(fd),
  };
}

function notFound(c: Context, message = 'not in this mirror'): Response {
  return c.json({ error: { code: 'E_NOT_FOUND', message } }, 404);
}

/**
 * Mounts GET/HEAD /mirror/… (the default upstream's tree) and /mirror/upstreams/<name>/… (each upstream's).
 * cfg.mirrorAuth: `none` (anonymous: the content is signed public data, integrity does not depend on who
 * may read it), `token` (an API token of scope export or admin), `off` (404 everywhere).
 */
export function mountMirror(deps: MirrorDeps) {
  const { cfg, db, log } = deps;
  const tokens = new TokenVerifier(db);
  return (app: Hono<AppEnv>) => {
    const handler = async (c: Context<AppEnv>): Promise<Response> => {
      if (cfg.mirrorAuth === 'off') return notFound(c, 'the mirror is off (OUTPOST_MIRROR_AUTH=off)');
      if (cfg.mirrorAuth === 'token') {
        const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
        const row = m ? tokens.verify(m[1]) : null;
        if (!row) {
          c.header('WWW-Authenticate', 'Bearer realm="outpost-mirror"');
          return c.json({ error: { code: 'E_AUTH', message: 'this mirror needs an API token of scope export: Authorization: Bearer <token>' } }, 401);
        }
        if (!scopeAllows(row.scope, 'export')) return c.json({ error: { code: 'E_FORBIDDEN', message: `this token has scope "${row.scope}"; the mirror needs "export"` } }, 403);
      }
      // The raw path as received: percent-encoded names never match a layout name.
      const raw = new URL(c.req.url).pathname;
      if (!raw.startsWith('/mirror/')) return notFound(c);
      let rel = raw.slice('/mirror/'.length);
      let upstream: string | null;
      const m = /^upstreams\/([^/]+)\/(.*)$/.exec(rel);
      if (m) {
        if (!UPSTREAM_NAME.test(m[1])) return notFound(c);
        [upstream, rel] = [m[1], m[2]];
      } else {
        upstream = defaultMirrorUpstream(cfg, db);
        if (!upstream) return notFound(c, 'no default upstream to mirror: use /mirror/upstreams/<name>/ or set OUTPOST_MIRROR_UPSTREAM');
      }
      let target = resolveMirror(cfg, db, upstream, rel);
      if (target?.kind === 'fetch') {
        const t = target;
        const sha = t.latest.full.sha256;
        const recent = failedAt.get(sha);
        const fetching = recent !== undefined && Date.now() - recent < RETRY_FETCH_MS
          ? Promise.resolve('failed' as const)
          : fetchFullPackage(cfg, db, t.upstream, t.feed, t.latest, { limits: deps.limits, log }).then(
            () => (failedAt.delete(sha), 'done' as const),
            () => (failedAt.set(sha, Date.now()), 'failed' as const),
          );
        const ready = await Promise.race([fetching, new Promise<'wait'>((r) => setTimeout(r, ON_DEMAND_WAIT_MS, 'wait').unref())]);
        if (ready !== 'done') {
          c.header('Retry-After', '60');
          return c.json({ error: { code: 'E_DOWNLOAD', message: ready === 'wait' ? 'this mirror is fetching the package from its upstream; retry later' : 'this mirror could not fetch the package from its upstream (see its audit log, mirror.reject); retry later' } }, 503);
        }
        target = resolveMirror(cfg, db, upstream, rel);
      }
      if (!target || target.kind === 'fetch') return notFound(c);
      const entity = target.kind === 'doc' ? docEntity(target.text, target.lastModified) : fileEntity(target.file, target.size, target.sha256);
      if (!entity) return notFound(c);
      return send(c.req.raw, entity);
    };
    app.get('/mirror/*', handler);
  };
}
