// Import of one package (offline file, inbox or download): stage → verify → sequence check → apply in a
// worker → keep the package for rollback and mirroring. Every refusal is recorded with its stable code.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { audit, layout } from '../appliance/db.ts';
import { ERRORS, OutpostError, asOutpostError, type ErrorCode } from '../appliance/errors.ts';
import type { Manifest } from '../appliance/types.ts';
import { getFeed, checkSequence, stageVerified, startApply, type ApplyFilterOptions, type StageRequest, type ApplyProgress, type ApplyResult, type PendingApply } from './apply.ts';
import type { Limits, StagedPackage } from './package-reader.ts';
import type { TrustedKey } from './verify.ts';
import { mergeKeys } from './root.ts';
import { importReference, isReferenceManifest } from './reference.ts';
import { keepPackage, pruneKept } from './kept.ts';

export interface ApplyJob {
  dbPath: string;
  staged: Omit<StagedPackage, 'files' | 'cleanup'> & { files: [string, string][] };
  limits: Limits;
  meta: { source: string; actor: string; packagePath: string | null };
  /** The worker also builds the new generation's filters (a delta's: when the previous set can be extended) and persists them where the engine looks. */
  filters?: ApplyFilterOptions;
}

export interface ImportOptions {
  dryRun?: boolean;
  source?: string;
  actor?: string;
  now?: Date;
  onProgress?: (p: ApplyProgress) => void;
  /** rollback re-applies a kept older package past the version floor. */
  allowOlder?: boolean;
  /** Keys authorized for this package's source besides `trust add` ones (an upstream's root of trust);
   *  a key revoked in either list is revoked. */
  extraKeys?: TrustedKey[];
}

export interface ImportResult extends Partial<ApplyResult> {
  feed: string;
  version: number;
  type: 'full' | 'delta';
  dryRun: boolean;
  sha256: string;
  manifest: Manifest;
}

export function limitsOf(cfg: Config): Limits {
  return { maxPackageBytes: cfg.maxPackageBytes, maxUncompressedBytes: cfg.maxUncompressedBytes };
}

export function trustedKeys(db: DB): TrustedKey[] {
  return db.prepare('SELECT key_id, public_pem, revoked_at FROM trusted_keys').all() as TrustedKey[];
}

/** The keys a package may be signed with: `trust add` ones, plus an upstream's root of trust. */
function keysFor(db: DB, extraKeys: TrustedKey[] = []): TrustedKey[] {
  return extraKeys.length ? mergeKeys(trustedKeys(db), extraKeys) : trustedKeys(db);
}

/** What stageVerified needs for a package at tarPath: this appliance's staging dir, limits and keys. */
function stageRequest(cfg: Config, db: DB, tarPath: string, now = new Date(), extraKeys: TrustedKey[] = []): StageRequest {
  return { tarPath, stagingRoot: layout(cfg.dataDir).staging, limits: limitsOf(cfg), keys: keysFor(db, extraKeys), now: now.getTime() };
}

/** Stages and verifies a package without touching the store; the caller must call staged.cleanup(). */
export function stageAndVerify(cfg: Config, db: DB, tarPath: string, now = new Date(), extraKeys: TrustedKey[] = []): Promise<StagedPackage> {
  return stageVerified(stageRequest(cfg, db, tarPath, now, extraKeys));
}

function recordRejection(db: DB, source: string, actor: string, err: OutpostError, m?: Manifest, sha256?: string): void {
  try {
    db.prepare('INSERT INTO packages(received_at, source, feed, version, type, sha256, status, code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      new Date().toISOString(), source, m?.feed ?? null, m?.version ?? null, m?.type ?? null, sha256 ?? null, 'rejected', err.code, err.message,
    );
    audit(db, actor, 'package.reject', { code: err.code, subject: m ? `${m.feed}@${m.version}` : path.basename(source), detail: { message: err.message, source, feed: m?.feed, version: m?.version, type: m?.type } });
  } catch {
    /* recording must never mask the original refusal */
  }
}

export async function importPackage(cfg: Config, db: DB, tarPath: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const source = opts.source ?? path.resolve(tarPath);
  const actor = opts.actor ?? 'cli';
  let staged: StagedPackage | undefined;
  let apply: PendingApply | undefined;
  try {
    if (!fs.existsSync(tarPath) || !fs.statSync(tarPath).isFile()) throw new OutpostError('E_NOT_FOUND', `no package file at ${tarPath}`);
    // The apply worker loads while the package is staged and verified; it gets its job only after that.
    if (!opts.dryRun) apply = startApply();
    // Staged and verified in the apply worker (lower priority, off the thread that answers lookups); a dry
    // run, which starts no worker, does it here.
    const req = stageRequest(cfg, db, tarPath, opts.now, opts.extraKeys);
    staged = apply ? await apply.stage(req) : await stageVerified(req);
    const m = staged.manifest;
    // Reference data (actors/families, sync/reference.ts): verified above like any package, its own store.
    if (isReferenceManifest(m)) return await importReference(db, staged, limitsOf(cfg), { dryRun: opts.dryRun, source, actor });
    checkSequence(getFeed(db, m.feed), m, staged.sha256, { allowOlder: opts.allowOlder });
    if (opts.dryRun) {
      return { feed: m.feed, version: m.version, type: m.type, dryRun: true, sha256: staged.sha256, manifest: m };
    }
    const { dest: kept, created } = await keepPackage(cfg, tarPath, m, staged.sha256);
    const job: ApplyJob = {
      dbPath: layout(cfg.dataDir).db,
      staged: { dir: staged.dir, sha256: staged.sha256, size: staged.size, manifestBytes: staged.manifestBytes, signature: staged.signature, manifest: m, files: [...staged.files] },
      limits: limitsOf(cfg),
      meta: { source, actor: opts.allowOlder ? `rollback:${actor}` : actor, packagePath: kept },
      filters: { fpRate: cfg.filterFpRate, dir: path.join(path.dirname(layout(cfg.dataDir).db), 'filters') },
    };
    try {
      const result = await apply!.run(job, opts.onProgress);
      await pruneAfterApply(cfg, db, m.feed, actor);
      return { ...result, dryRun: false, sha256: staged.sha256, manifest: m };
    } catch (e) {
      if (created) fs.rmSync(kept, { force: true });
      const code = e && typeof e === 'object' && 'code' in e ? (e as { code: string }).code : undefined;
      throw code && code in ERRORS ? new OutpostError(code as ErrorCode, (e as Error).message) : asOutpostError(e);
    }
  } catch (e) {
    const err = asOutpostError(e);
    if (!opts.dryRun) recordRejection(db, source, actor, err, staged?.manifest, staged?.sha256);
    throw err;
  } finally {
    apply?.cancel();
    staged?.cleanup();
  }
}

/** Retention of kept packages after an apply (sync/kept.ts); a failure is recorded, never the import's. */
async function pruneAfterApply(cfg: Config, db: DB, feedName: string, actor: string): Promise<void> {
  try {
    const feed = getFeed(db, feedName);
    if (!feed) return;
    const r = await pruneKept(cfg, feed);
    if (r.removed.length) audit(db, actor, 'package.prune', { subject: feedName, detail: { removed: r.removed, bytes: r.bytes, kept: r.kept } });
  } catch (e) {
    const err = asOutpostError(e);
    try {
      audit(db, actor, 'package.prune', { code: err.code, subject: feedName, detail: { message: err.message } });
    } catch {
      /* recording must never fail the import that already applied */
    }
  }
}
