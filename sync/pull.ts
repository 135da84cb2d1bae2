// `outpost sync`: pull one upstream — walk its root of trust forward, fetch and verify the signed index and
// each feed's latest.json (signature, expiry, never older than what was seen or applied), then apply the
// delta chain from the applied version or else the full package, each download hash-checked before it is
// staged. Any delta failure falls back to the full package. Every decision: an audit row and a log line.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, layout } from '../appliance/db.ts';
import { OutpostError, asOutpostError, type ErrorCode } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import { getFeed } from './apply.ts';
import { DEFAULT_FETCH_LIMITS, downloadPackage, fetchDoc, type FetchLimits, type PackageRef } from './fetch.ts';
import { importPackage, trustedKeys } from './import.ts';
import { FEED_NAME } from './package-reader.ts';
import { INDEX_TYPE, LATEST_TYPE, type LatestDoc } from './publish.ts';
import { checkRootFresh, mergeKeys, verifyRootUpdate, verifySignedDoc } from './root.ts';
import { currentRoot, getUpstream, listUpstreams, recordResult, storeRoot, upstreamKeys, type UpstreamRow } from './upstreams.ts';
import type { TrustedKey } from './verify.ts';

/** Root versions fetched in one sync at most: an endless root/<n>.json series is an attack, not a history. */
const MAX_ROOT_STEPS = 1000;
const HEX64 = /^[0-9a-f]{64}$/;

export interface SyncOptions {
  actor?: string;
  limits?: FetchLimits;
  log?: Logger;
  now?: () => Date;
}

export interface FeedOutcome {
  feed: string;
  action: 'applied' | 'up-to-date' | 'failed';
  version?: number;
  via?: 'delta' | 'full';
  /** Delta packages applied (via delta), or the code that sent us to the full package. */
  steps?: number;
  fallback?: ErrorCode;
  code?: ErrorCode;
  message?: string;
}

export interface UpstreamOutcome {
  upstream: string;
  ok: boolean;
  code?: ErrorCode;
  message?: string;
  root_version: number | null;
  feeds: FeedOutcome[];
}

interface Ctx {
  cfg: Config;
  db: DB;
  u: UpstreamRow;
  actor: string;
  limits: FetchLimits;
  log?: Logger;
  now: () => Date;
  keys: TrustedKey[];
  dlDir: string;
}

function decision(c: Ctx, action: string, level: 'info' | 'warn', subject: string, detail: Record<string, unknown>, code?: ErrorCode): void {
  audit(c.db, c.actor, action, { code: code ?? null, subject, detail: { upstream: c.u.name, ...detail } });
  c.log?.[level]({ upstream: c.u.name, action, subject, code, ...detail }, action);
}

/** Checks the parts of a verified latest.json we rely on (it is signed, but a signer can still be buggy). */
function checkLatest(doc: Record<string, unknown>, feed: string): LatestDoc {
  const bad = (m: string): never => {
    throw new OutpostError('E_FORMAT', `${feed} latest.json: ${m}`);
  };
  const d = doc as unknown as LatestDoc;
  if (d.feed !== feed) bad(`names feed ${JSON.stringify(d.feed)}`);
  if (!Number.isSafeInteger(d.version) || d.version < 1) bad('version must be a positive integer');
  if (typeof d.state !== 'string' || !HEX64.test(d.state)) bad('state must be 64 hex digits');
  const entry = (e: { sha256?: unknown; size?: unknown; path?: unknown } | undefined, what: string) => {
    if (!e || typeof e.sha256 !== 'string' || !HEX64.test(e.sha256) || !Number.isSafeInteger(e.size) || typeof e.path !== 'string') bad(`${what} needs sha256, size and path`);
    // Only our content-addressed layout: no absolute URLs, no "..", so a document cannot point elsewhere.
    if (e!.path !== `packages/${e!.sha256 as string}.tar`) bad(`${what} path must be packages/<sha256>.tar`);
  };
  entry(d.full, 'full');
  if (d.full.version !== d.version || d.full.state !== d.state) bad('full package is not the current version');
  if (!Array.isArray(d.deltas)) bad('deltas must be an array');
  d.deltas.forEach((x, i) => {
    entry(x, `deltas[${i}]`);
    if (!Number.isSafeInteger(x.from) || !Number.isSafeInteger(x.to) || !(x.to > x.from) || !HEX64.test(String(x.from_state)) || !HEX64.test(String(x.state))) bad(`deltas[${i}] needs from < to and both states`);
  });
  return d;
}

/** Delta steps from (version, state) to the latest version, or null when the published deltas do not reach. */
export function planDeltas(latest: LatestDoc, version: number, state: string): LatestDoc['deltas'] | null {
  const chain: LatestDoc['deltas'] = [];
  let v = version;
  let s = state;
  while (v !== latest.version) {
    // Prefer the longest step available from here (fewest downloads).
    const step = latest.deltas.filter((d) => d.from === v && d.from_state === s && d.to <= latest.version).sort((a, b) => b.to - a.to)[0];
    if (!step || chain.length >= latest.deltas.length) return null;
    chain.push(step);
    v = step.to;
    s = step.state;
  }
  return chain.length && s === latest.state ? chain : null;
}

async function fetchAndImport(c: Ctx, ref: PackageRef, feed: string): Promise<Awaited<ReturnType<typeof importPackage>>> {
  const file = await downloadPackage(ref, c.dlDir, c.limits, (e) => decision(c, `sync.download.${e.event}`, 'info', feed, { url: ref.url, offset: e.offset, error: e.error }));
  try {
    return await importPackage(c.cfg, c.db, file, { source: ref.url, actor: c.actor, extraKeys: c.keys });
  } finally {
    fs.rmSync(file, { force: true });
  }
}

async function syncFeed(c: Ctx, feed: string): Promise<FeedOutcome> {
  const url = new URL(`feeds/${feed}/latest.json`, c.u.base_url).href;
  const cached = c.db.prepare('SELECT * FROM upstream_feeds WHERE upstream = ? AND feed = ?').get(c.u.name, feed) as
    | { version: number; latest_doc: string; etag: string | null; last_modified: string | null } | undefined;
  const res = await fetchDoc(url, { etag: cached?.etag, lastModified: cached?.last_modified, limits: c.limits });
  const text = res.status === 200 ? res.text! : res.status === 304 ? cached?.latest_doc : undefined;
  if (!text) throw new OutpostError('E_DOWNLOAD', `${url}: ${res.status === 304 ? 'not modified, but nothing cached' : 'not found'}`);
  // Re-verified on a 304 too: a cached document that has expired is a freeze, not "up to date".
  const latest = checkLatest(verifySignedDoc(text, c.keys, LATEST_TYPE, `${feed} latest.json`, c.now()), feed);

  if (cached && latest.version < cached.version) {
    throw new OutpostError('E_ROLLBACK', `${feed} latest.json announces version ${latest.version}; version ${cached.version} was announced before (replayed document)`);
  }
  const applied = getFeed(c.db, feed);
  if (applied && latest.version < applied.version) {
    throw new OutpostError('E_ROLLBACK', `${feed} latest.json announces version ${latest.version}, older than the applied version ${applied.version}`);
  }
  if (res.status === 200) {
    c.db.prepare(
      `INSERT INTO upstream_feeds(upstream, feed, version, latest_doc, etag, last_modified, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(upstream, feed) DO UPDATE SET version = excluded.version, latest_doc = excluded.latest_doc, etag = excluded.etag,
         last_modified = excluded.last_modified, fetched_at = excluded.fetched_at`,
    ).run(c.u.name, feed, latest.version, text, res.etag ?? null, res.lastModified ?? null, c.now().toISOString());
  }
  if (applied && latest.version === applied.version) {
    if (latest.state !== applied.state) {
      throw new OutpostError('E_EQUIVOCATION', `${feed} version ${latest.version} is announced with state ${latest.state.slice(0, 12)}…; the applied one has ${applied.state.slice(0, 12)}…`);
    }
    return { feed, action: 'up-to-date', version: applied.version };
  }

  const chain = applied ? planDeltas(latest, applied.version, applied.state) : null;
  let fallback: ErrorCode | undefined;
  if (chain) {
    try {
      for (const step of chain) {
        const r = await fetchAndImport(c, { url: new URL(step.path, c.u.base_url).href, sha256: step.sha256, size: step.size }, feed);
        decision(c, 'sync.apply', 'info', `${feed}@${r.version}`, { via: 'delta', from: step.from, added: r.added, removed: r.removed, total: r.total });
      }
      return { feed, action: 'applied', version: latest.version, via: 'delta', steps: chain.length };
    } catch (e) {
      const err = asOutpostError(e);
      fallback = err.code;
      decision(c, 'sync.fallback', 'warn', feed, { message: err.message, to: 'full' }, err.code);
    }
  }
  const r = await fetchAndImport(c, { url: new URL(latest.full.path, c.u.base_url).href, sha256: latest.full.sha256, size: latest.full.size }, feed);
  decision(c, 'sync.apply', 'info', `${feed}@${r.version}`, { via: 'full', added: r.added, removed: r.removed, total: r.total, fallback });
  return { feed, action: 'applied', version: latest.version, via: 'full', fallback };
}

/** Walks root/<n+1>.json, … until 404; each must be signed by a threshold of the previous root's keys. */
async function updateRoot(c: Ctx): Promise<number | null> {
  let root = currentRoot(c.db, c.u.name);
  if (!root) return null;
  for (let i = 0; i < MAX_ROOT_STEPS; i++) {
    const url = new URL(`root/${root.root.version + 1}.json`, c.u.base_url).href;
    const res = await fetchDoc(url, { limits: c.limits });
    if (res.status === 404) break;
    if (res.status !== 200) throw new OutpostError('E_DOWNLOAD', `${url}: unexpected HTTP status`);
    const next = verifyRootUpdate(root.root, res.text!);
    storeRoot(c.db, c.u.name, next.root, next.text, c.actor);
    c.log?.info({ upstream: c.u.name, action: 'sync.root', version: next.root.version }, 'accepted new root of trust');
    root = next;
  }
  checkRootFresh(root.root, c.now());
  c.keys = mergeKeys(trustedKeys(c.db), upstreamKeys(root.root, c.now()));
  return root.root.version;
}

async function fetchIndex(c: Ctx): Promise<string[]> {
  const url = new URL('index.json', c.u.base_url).href;
  const res = await fetchDoc(url, { etag: c.u.index_etag, lastModified: c.u.index_modified, limits: c.limits });
  const text = res.status === 200 ? res.text! : res.status === 304 ? c.u.index_doc : null;
  if (!text) throw new OutpostError('E_DOWNLOAD', `${url}: ${res.status === 404 ? 'not found — is this a tree written by outpost provider publish?' : 'not modified, but nothing cached'}`);
  const doc = verifySignedDoc(text, c.keys, INDEX_TYPE, 'index.json', c.now());
  if (!Array.isArray(doc.feeds)) throw new OutpostError('E_FORMAT', 'index.json: feeds must be an array');
  const names = (doc.feeds as { name?: unknown }[]).map((f) => f?.name);
  for (const n of names) if (typeof n !== 'string' || !FEED_NAME.test(n)) throw new OutpostError('E_FORMAT', `index.json: feed name ${JSON.stringify(n)} is not valid`);
  if (res.status === 200) {
    c.db.prepare('UPDATE upstreams SET index_doc = ?, index_etag = ?, index_modified = ? WHERE name = ?').run(text, res.etag ?? null, res.lastModified ?? null, c.u.name);
  }
  return [...new Set(names as string[])];
}

export async function syncUpstream(cfg: Config, db: DB, name: string, o: SyncOptions = {}): Promise<UpstreamOutcome> {
  const u = getUpstream(db, name);
  const c: Ctx = {
    cfg, db, u, actor: o.actor ?? `sync:${name}`, limits: o.limits ?? DEFAULT_FETCH_LIMITS, log: o.log, now: o.now ?? (() => new Date()),
    keys: trustedKeys(db), dlDir: path.join(layout(cfg.dataDir).staging, 'downloads', name),
  };
  const out: UpstreamOutcome = { upstream: name, ok: true, root_version: u.root_version, feeds: [] };
  let failure: OutpostError | null = null;
  try {
    out.root_version = await updateRoot(c);
    for (const feed of await fetchIndex(c)) {
      try {
        out.feeds.push(await syncFeed(c, feed));
      } catch (e) {
        const err = asOutpostError(e);
        failure ??= err;
        out.feeds.push({ feed, action: 'failed', code: err.code, message: err.message });
        decision(c, 'sync.reject', 'warn', feed, { message: err.message }, err.code);
      }
    }
  } catch (e) {
    failure = asOutpostError(e);
    decision(c, 'sync.reject', 'warn', name, { message: failure.message }, failure.code);
  }
  if (failure) Object.assign(out, { ok: false, code: failure.code, message: failure.message });
  const row = recordResult(db, name, failure, c.now());
  decision(c, 'sync.result', failure ? 'warn' : 'info', name, { ok: out.ok, failures: row.failures, next_attempt_at: row.next_attempt_at, feeds: out.feeds.map((f) => `${f.feed}:${f.action}${f.code ? `:${f.code}` : ''}`) }, failure?.code);
  return out;
}

/** Syncs the named upstreams (all when none named), one after another. */
export async function syncAll(cfg: Config, db: DB, names: string[] = [], o: SyncOptions = {}): Promise<UpstreamOutcome[]> {
  const list = names.length ? names.map((n) => getUpstream(db, n).name) : listUpstreams(db).map((u) => u.name);
  if (!list.length) throw new OutpostError('E_NOT_FOUND', 'no upstreams configured (outpost upstream add <name> <base-url>)');
  const out: UpstreamOutcome[] = [];
  for (const n of list) out.push(await syncUpstream(cfg, db, n, o));
  return out;
}
