// Kept packages: every accepted package is kept under <data dir>/packages/<feed>/<version>-<type>-<sha16>.tar
// (import.ts after verification, the mirror's prefetch for full packages it serves). Rollback rebuilds the
// previous version from them (rollback.ts); the mirror serves those of the current version (mirror.ts).
//
// Retention (OUTPOST_KEEP_PACKAGES): `rollback`, the default, keeps after every applied package exactly what
// rollback and the mirror can still use — every package of the current version or newer, and the chains
// (newest full package, then each delta) that rebuild the current and the previous version. `all` never
// deletes. A chain that cannot be read (a kept file missing or damaged) prunes nothing for that feed.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../appliance/config.ts';
import { layout } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { Manifest } from '../appliance/types.ts';
import type { FeedRow } from './apply.ts';
import { readManifestOnly } from './package-reader.ts';

/** `<version>-<full|delta>-<first 16 hex of the package sha256>.tar` */
export const KEPT_NAME = /^(\d+)-(full|delta)-[0-9a-f]{16}\.tar$/;

/** The directory of one feed's kept packages. */
export function keptDir(cfg: Config, feed: string): string {
  return path.join(layout(cfg.dataDir).packages, feed.replace(/[^A-Za-z0-9._-]/g, '_'));
}

export function keptName(version: number, type: 'full' | 'delta', sha256: string): string {
  return `${version}-${type}-${sha256.slice(0, 16)}.tar`;
}

/** Keeps an accepted package (content-addressed by name); resolves with the kept path and whether it is new. */
export async function keepPackage(cfg: Config, tarPath: string, m: Manifest, sha256: string): Promise<{ dest: string; created: boolean }> {
  const dir = keptDir(cfg, m.feed);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const dest = path.join(dir, keptName(m.version, m.type, sha256));
  if (fs.existsSync(dest)) return { dest, created: false };
  const tmp = `${dest}.tmp-${process.pid}`;
  await fs.promises.copyFile(tarPath, tmp); // a copy of a large package costs the event loop nothing
  fs.renameSync(tmp, dest);
  return { dest, created: true };
}

/**
 * The kept packages that rebuild the version of `target` (a kept package path), oldest first: the target,
 * and while it is a delta, a kept package of its base version (a full one preferred). Reads only each
 * package's (unverified) manifest; whatever is imported from the chain is verified again.
 */
export async function keptChain(cfg: Config, feed: string, target: string): Promise<string[]> {
  const dir = keptDir(cfg, feed);
  const kept = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => KEPT_NAME.test(f)) : [];
  const chain: string[] = [];
  // A data dir restored or moved elsewhere still names its packages by their old paths: same file name here.
  let file = fs.existsSync(target) ? target : path.join(dir, path.basename(target));
  for (let hops = 0; hops < 10_000; hops++) {
    if (!fs.existsSync(file)) throw new OutpostError('E_NOT_FOUND', `kept package ${file} is missing; cannot rebuild a version of feed "${feed}" from the kept packages`);
    const m = await readManifestOnly(file);
    if (m.feed !== feed) throw new OutpostError('E_CONFLICT', `kept package ${path.basename(file)} belongs to feed "${m.feed}", not "${feed}"`);
    chain.unshift(file);
    if (m.type === 'full') return chain;
    // A delta: its base version, preferring a full package of that version over another delta.
    const candidates = kept
      .map((f) => ({ f, x: KEPT_NAME.exec(f)! }))
      .filter(({ x }) => Number(x[1]) === m.base_version)
      .sort((a, b) => (a.x[2] === b.x[2] ? 0 : a.x[2] === 'full' ? -1 : 1));
    if (!candidates.length) {
      throw new OutpostError('E_NOT_FOUND', `version ${m.version} of feed "${feed}" was a delta on version ${m.base_version}, and no package of version ${m.base_version} is kept; import a full package instead`);
    }
    file = path.join(dir, candidates[0].f);
  }
  throw new OutpostError('E_INTERNAL', 'delta chain does not end');
}

export interface PruneResult {
  feed: string;
  removed: string[];
  bytes: number;
  kept: number;
}

/**
 * Deletes the feed's kept packages that neither rollback nor the mirror can use any more (see the top of
 * this file). `feed` is the feed's row after an apply: its version, package and previous package.
 */
export async function pruneKept(cfg: Config, feed: Pick<FeedRow, 'name' | 'version' | 'package_path' | 'prev_package'>): Promise<PruneResult> {
  const result: PruneResult = { feed: feed.name, removed: [], bytes: 0, kept: 0 };
  const dir = keptDir(cfg, feed.name);
  if (cfg.keepPackages === 'all' || !fs.existsSync(dir)) return result;
  const needed = new Set<string>();
  for (const target of [feed.package_path, feed.prev_package]) {
    // The previous version is usually in the current one's chain (a delta on it): its chain is read already.
    if (!target || needed.has(path.basename(target))) continue;
    // A chain that cannot be followed here (keptChain throws: a file missing or damaged) prunes nothing.
    for (const f of await keptChain(cfg, feed.name, target)) needed.add(path.basename(f));
  }
  for (const name of fs.readdirSync(dir)) {
    const m = KEPT_NAME.exec(name);
    if (!m) continue; // not ours (or a copy in progress)
    if (needed.has(name) || Number(m[1]) >= feed.version) {
      result.kept++;
      continue;
    }
    const file = path.join(dir, name);
    const size = fs.statSync(file).size;
    fs.rmSync(file, { force: true });
    result.removed.push(name);
    result.bytes += size;
  }
  return result;
}
