// Provider side: turn source files into a signed full package (normalize, dedupe, sort, hash, sign),
// and with a base package also the delta from it (sync/delta.ts).
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';
import type { FeedKind, Manifest, SourceReport } from '../appliance/types.ts';
import { collectIndicators } from './collect.ts';
import { defaultTlp, parseTlp, TLP_LEVELS } from './context.ts';
import { loadPrivateKey } from './keys.ts';
import { StateHasher, writePackage } from './package-writer.ts';
import { canonicalIndicator } from './records.ts';
import { readBase, writeDelta } from './delta.ts';

export interface BuildOptions {
  feed: string;
  keyPath: string;
  outDir: string;
  files: string[];
  kind?: FeedKind;
  category?: string;
  confidence?: number;
  /** Defaults to the creation time in milliseconds, so later builds are always newer. */
  version?: number;
  /** Package expiry (freeze protection): an appliance refuses it after this many days. */
  expiresDays?: number;
  now?: Date;
  /** --base: also write a delta against this earlier package (delta path: sync/delta.ts). */
  base?: string;
  /** --tlp: TLP marking for indicators whose source gave none (sync/context.ts, docs/context.md). */
  tlp?: string;
}

export interface BuildResult {
  path: string;
  sha256: string;
  manifest: Manifest;
  reports: SourceReport[];
  /** With `base`: the delta package written beside the full one. */
  delta?: { path: string; sha256: string; manifest: Manifest; added: number; removed: number };
}

export const FEED_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export async function buildPackage(opts: BuildOptions): Promise<BuildResult> {
  if (!FEED_NAME.test(opts.feed)) throw new OutpostError('E_USAGE', `feed name "${opts.feed}" must match ${FEED_NAME} (lowercase letters, digits, . _ -)`);
  if (!opts.files.length) throw new OutpostError('E_USAGE', 'give at least one source file');
  const kind = opts.kind ?? 'block';
  const confidence = opts.confidence ?? (kind === 'allow' ? 100 : 80);
  if (!(confidence >= 0 && confidence <= 100)) throw new OutpostError('E_USAGE', '--confidence must be 0-100');
  const key = loadPrivateKey(opts.keyPath);
  const now = opts.now ?? new Date();
  const created = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const expires = new Date(created.getTime() + (opts.expiresDays ?? 30) * 86400_000);

  const tlp = opts.tlp === undefined ? undefined : parseTlp(opts.tlp);
  if (opts.tlp !== undefined && !tlp) throw new OutpostError('E_USAGE', `--tlp must be one of ${TLP_LEVELS.join(', ')} (got "${opts.tlp}")`);
  const { indicators, reports } = await collectIndicators(opts.files.map((f) => path.resolve(f)), { kind, category: opts.category, confidence });
  const lines = defaultTlp(indicators, tlp).map(canonicalIndicator);
  const hasher = new StateHasher();
  for (const ind of lines) hasher.update(ind);

  const common = {
    feed: opts.feed,
    kind,
    version: opts.version ?? created.getTime(),
    created: created.toISOString(),
    expires: expires.toISOString(),
    defaults: { category: opts.category ?? (kind === 'allow' ? 'known-benign' : 'malicious'), confidence },
    sources: reports,
  };
  // --base: read the base first so a bad base fails before anything is written.
  const base = opts.base ? await readBase(opts.base) : undefined;
  const res = await writePackage({
    outDir: opts.outDir,
    privateKey: key,
    manifest: { ...common, type: 'full', state: hasher.digest() },
    files: [{ role: 'indicators', indicators: lines }],
  });
  if (!base) return { ...res, reports };
  const delta = await writeDelta({ base, next: lines, privateKey: key, outDir: opts.outDir, manifest: common });
  return { ...res, reports, delta };
}
