// Provider side: a delta package against an exact base version. Both sides are in canonical order, so one
// merge walk yields the removes (in the base, gone now) and the adds (new, or same key with any field
// changed — applied as upserts). The delta carries the base's version and state and the state after it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';
import type { Indicator, IndicatorType, Manifest } from '../appliance/types.ts';
import { readIndicators, stagePackage, type Limits } from './package-reader.ts';
import { StateHasher, canonicalLine, writePackage, type PackageManifestInput } from './package-writer.ts';
import { compareIndicators } from './records.ts';

const PROVIDER_LIMITS: Limits = { maxPackageBytes: 8 * 1024 ** 3, maxUncompressedBytes: 32 * 1024 ** 3 };

/** Reads every indicator of a full package the provider holds (hashes re-checked while reading). */
export async function readPackage(tarPath: string): Promise<{ manifest: Manifest; indicators: Indicator[] }> {
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-base-'));
  try {
    const staged = await stagePackage(tarPath, staging, PROVIDER_LIMITS);
    try {
      const indicators: Indicator[] = [];
      for (const f of staged.manifest.files) for await (const ind of readIndicators(staged, f, PROVIDER_LIMITS)) indicators.push(ind);
      return { manifest: staged.manifest, indicators };
    } finally {
      staged.cleanup();
    }
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * The full content of the base version. A delta base is resolved to the full package of the same feed,
 * version and state lying beside it (provider build --base always writes both).
 */
export async function readBase(basePath: string): Promise<{ manifest: Manifest; indicators: Indicator[] }> {
  const base = await readPackage(basePath);
  if (base.manifest.type === 'full') return base;
  const m = base.manifest;
  const dir = path.dirname(basePath);
  for (const name of fs.readdirSync(dir).filter((f) => f.endsWith('.tar')).sort()) {
    if (!name.startsWith(`${m.feed}-${m.version}-`)) continue;
    const full = await readPackage(path.join(dir, name));
    if (full.manifest.type === 'full' && full.manifest.feed === m.feed && full.manifest.version === m.version && full.manifest.state === m.state) return full;
  }
  throw new OutpostError('E_USAGE', `${basePath} is a delta; give the full package of ${m.feed} version ${m.version} as --base (provider build --base writes it beside the delta)`);
}

/** Removes and upserts turning `base` into `next`; both sorted in canonical order, no duplicates. */
export function diffIndicators(base: Indicator[], next: Indicator[]): { adds: Indicator[]; removes: Indicator[] } {
  const adds: Indicator[] = [];
  const removes: Indicator[] = [];
  let i = 0;
  let j = 0;
  while (i < base.length || j < next.length) {
    const c = i >= base.length ? 1 : j >= next.length ? -1 : compareIndicators(base[i], next[j]);
    if (c < 0) removes.push(base[i++]);
    else if (c > 0) adds.push(next[j++]);
    else {
      if (canonicalLine(base[i]) !== canonicalLine(next[j])) adds.push(next[j]);
      i++;
      j++;
    }
  }
  return { adds, removes };
}

export interface DeltaOptions {
  base: { manifest: Manifest; indicators: Indicator[] };
  /** The feed's new content, canonical and sorted (what the full package of this version holds). */
  next: Indicator[];
  privateKey: crypto.KeyObject;
  outDir: string;
  manifest: Omit<PackageManifestInput, 'type' | 'state' | 'counts' | 'base_version' | 'base_state'>;
}

export async function writeDelta(o: DeltaOptions): Promise<{ path: string; sha256: string; manifest: Manifest; added: number; removed: number }> {
  const bm = o.base.manifest;
  if (bm.feed !== o.manifest.feed) throw new OutpostError('E_USAGE', `--base is feed "${bm.feed}", building "${o.manifest.feed}"`);
  if (bm.kind !== o.manifest.kind) throw new OutpostError('E_USAGE', `--base is a ${bm.kind} feed, building a ${o.manifest.kind} feed`);
  if (!(o.manifest.version > bm.version)) throw new OutpostError('E_USAGE', `version ${o.manifest.version} must be newer than the base version ${bm.version}`);
  const hasher = new StateHasher();
  const byType: Partial<Record<IndicatorType, number>> = {};
  for (const ind of o.next) {
    hasher.update(ind);
    byType[ind.t] = (byType[ind.t] ?? 0) + 1;
  }
  const { adds, removes } = diffIndicators(o.base.indicators, o.next);
  const res = await writePackage({
    outDir: o.outDir,
    privateKey: o.privateKey,
    manifest: { ...o.manifest, type: 'delta', base_version: bm.version, base_state: bm.state, state: hasher.digest(), counts: { total: o.next.length, by_type: byType } },
    files: [
      { role: 'remove', indicators: removes },
      { role: 'add', indicators: adds },
    ],
  });
  return { ...res, added: adds.length, removed: removes.length };
}
