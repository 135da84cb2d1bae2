// Upstreams this appliance pulls from: add (pinning the provider's root of trust), list, remove, and the
// per-upstream result and backoff state the scheduler honours across restarts. Stored in SQLite, audited.
import fs from 'node:fs';
import cron from 'node-cron';
import type { DB } from '../appliance/db.ts';
import { audit } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import { fetchDoc, type FetchLimits } from './fetch.ts';
import { authorizedKeys, checkRootFresh, verifyRootSelf, type RootDoc } from './root.ts';
import type { TrustedKey } from './verify.ts';

export const UPSTREAM_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const DEFAULT_SCHEDULE = '*/30 * * * *';

export interface UpstreamRow {
  name: string;
  base_url: string;
  schedule: string;
  added_at: string;
  root_version: number | null;
  index_doc: string | null;
  index_etag: string | null;
  index_modified: string | null;
  last_attempt_at: string | null;
  last_success_at: string | null;
  last_code: string | null;
  last_message: string | null;
  failures: number;
  next_attempt_at: string | null;
}

export interface AddUpstreamOptions {
  schedule?: string;
  /** A root.json obtained out of band (the secure way): pinned as the upstream's initial root. */
  rootFile?: string;
  /** Trust whatever root.json the upstream serves now (trust on first use) — only when asked for. */
  trustOnFirstUse?: boolean;
  limits?: FetchLimits;
  actor?: string;
}

/** `http(s)://host[:port]/path/` — always with one trailing slash, so relative paths resolve under it. */
export function normalizeBaseUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new OutpostError('E_USAGE', `"${raw}" is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new OutpostError('E_USAGE', `upstream URL must be http or https, got ${u.protocol}`);
  if (u.username || u.password) throw new OutpostError('E_USAGE', 'upstream URL must not carry credentials');
  u.search = '';
  u.hash = '';
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.href;
}

export function getUpstream(db: DB, name: string): UpstreamRow {
  const row = db.prepare('SELECT * FROM upstreams WHERE name = ?').get(name) as UpstreamRow | undefined;
  if (!row) throw new OutpostError('E_NOT_FOUND', `no upstream named "${name}" (outpost upstream list)`);
  return row;
}

export function listUpstreams(db: DB): UpstreamRow[] {
  return db.prepare('SELECT * FROM upstreams ORDER BY name').all() as UpstreamRow[];
}

export async function addUpstream(db: DB, name: string, baseUrl: string, o: AddUpstreamOptions = {}): Promise<UpstreamRow & { root: RootDoc | null }> {
  if (!UPSTREAM_NAME.test(name)) throw new OutpostError('E_USAGE', `upstream name "${name}" must match ${UPSTREAM_NAME}`);
  const url = normalizeBaseUrl(baseUrl);
  const schedule = o.schedule ?? DEFAULT_SCHEDULE;
  if (!cron.validate(schedule)) throw new OutpostError('E_USAGE', `"${schedule}" is not a cron expression (e.g. "*/30 * * * *")`);
  if (o.rootFile && o.trustOnFirstUse) throw new OutpostError('E_USAGE', 'give either --root <root.json> or --trust-on-first-use, not both');
  if (db.prepare('SELECT 1 FROM upstreams WHERE name = ?').get(name)) throw new OutpostError('E_CONFLICT', `upstream "${name}" exists; remove it first`);

  let root: { root: RootDoc; text: string } | null = null;
  if (o.rootFile) {
    if (!fs.existsSync(o.rootFile)) throw new OutpostError('E_NOT_FOUND', `no root file at ${o.rootFile}`);
    root = verifyRootSelf(fs.readFileSync(o.rootFile), o.rootFile);
  } else if (o.trustOnFirstUse) {
    const res = await fetchDoc(new URL('root.json', url).href, { limits: o.limits });
    if (res.status !== 200) throw new OutpostError('E_NOT_FOUND', `${url}root.json: not found; this upstream publishes no root of trust`);
    root = verifyRootSelf(res.text!, `${url}root.json`);
  }
  if (root) checkRootFresh(root.root);
  const now = new Date().toISOString();
  db.transaction(() => {
    db.prepare('INSERT INTO upstreams(name, base_url, schedule, added_at, root_version) VALUES (?, ?, ?, ?, ?)').run(name, url, schedule, now, root?.root.version ?? null);
    if (root) db.prepare('INSERT INTO roots(upstream, version, document, accepted_at) VALUES (?, ?, ?, ?)').run(name, root.root.version, root.text, now);
    audit(db, o.actor ?? 'cli', 'upstream.add', {
      subject: name,
      detail: { url, schedule, root_version: root?.root.version ?? null, pinned: o.rootFile ? 'file' : o.trustOnFirstUse ? 'trust-on-first-use' : 'none', root_keys: root?.root.root_keys.map((k) => k.key_id) ?? [] },
    });
  })();
  return { ...getUpstream(db, name), root: root?.root ?? null };
}

export function removeUpstream(db: DB, name: string, actor = 'cli'): void {
  db.transaction(() => {
    getUpstream(db, name);
    db.prepare('DELETE FROM upstreams WHERE name = ?').run(name);
    audit(db, actor, 'upstream.remove', { subject: name });
  })();
}

/** The current pinned root of an upstream, or null when it verifies with directly trusted keys only. */
export function currentRoot(db: DB, name: string): { root: RootDoc; text: string } | null {
  const row = db.prepare('SELECT document FROM roots WHERE upstream = ? ORDER BY version DESC LIMIT 1').get(name) as { document: string } | undefined;
  // Re-verified on every read: the stored text is the evidence, not the row.
  return row ? verifyRootSelf(row.document, `stored root of ${name}`) : null;
}

export function storeRoot(db: DB, name: string, root: RootDoc, text: string, actor: string): void {
  db.transaction(() => {
    db.prepare('INSERT INTO roots(upstream, version, document, accepted_at) VALUES (?, ?, ?, ?)').run(name, root.version, text, new Date().toISOString());
    db.prepare('UPDATE upstreams SET root_version = ? WHERE name = ?').run(root.version, name);
    audit(db, actor, 'sync.root', { subject: `${name}@root${root.version}`, detail: { threshold: root.threshold, root_keys: root.root_keys.map((k) => k.key_id), signing_keys: root.signing_keys.map((k) => k.key_id), revoked: root.revoked_keys.map((k) => k.key_id) } });
  })();
}

/** Keys that may sign for this upstream: those its root authorizes, or none without a root. */
export function upstreamKeys(root: RootDoc | null, now = new Date()): TrustedKey[] {
  return root ? authorizedKeys(root, now) : [];
}

// ---------- result and backoff ----------

const BACKOFF_BASE_MS = 15 * 60_000;
const BACKOFF_CAP_MS = 24 * 3600_000;

/** Safe Browsing's rule: after the N-th failure in a row wait min(2^(N−1) · 15 min · (1 + rand), 24 h). */
export function backoffMs(failures: number, rand: number = Math.random()): number {
  if (failures <= 0) return 0;
  return Math.min(2 ** Math.min(failures - 1, 30) * BACKOFF_BASE_MS * (1 + rand), BACKOFF_CAP_MS);
}

export function recordResult(db: DB, name: string, err: OutpostError | null, now = new Date(), rand: number = Math.random()): UpstreamRow {
  const row = getUpstream(db, name);
  if (!err) {
    db.prepare('UPDATE upstreams SET last_attempt_at = ?, last_success_at = ?, last_code = NULL, last_message = ?, failures = 0, next_attempt_at = NULL WHERE name = ?')
      .run(now.toISOString(), now.toISOString(), 'ok', name);
  } else {
    const failures = row.failures + 1;
    const next = new Date(now.getTime() + backoffMs(failures, rand)).toISOString();
    db.prepare('UPDATE upstreams SET last_attempt_at = ?, last_code = ?, last_message = ?, failures = ?, next_attempt_at = ? WHERE name = ?')
      .run(now.toISOString(), err.code, err.message.slice(0, 500), failures, next, name);
  }
  return getUpstream(db, name);
}

/** The scheduler skips an upstream until its backoff has passed. */
export function isDue(row: UpstreamRow, now = new Date()): boolean {
  return !row.next_attempt_at || Date.parse(row.next_attempt_at) <= now.getTime();
}
