// Provider side: lay signed packages out as a static HTTP tree any file server can serve —
//   root.json, root/<n>.json            root of trust (sync/root.ts), every version kept for the walk
//   index.json                          signed list of feeds
//   feeds/<feed>/latest.json            signed: current version, full package, newest deltas, expiry
//   packages/<sha256>.tar               content-addressed packages, unchanged
// Documents are written to a temporary name and renamed, packages before the documents naming them, so a
// client never sees a latest.json whose package is not there yet.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';
import { keyIdOf, loadPrivateKey } from './keys.ts';
import { stagePackage } from './package-reader.ts';
import { authorizedKeys, readCurrentRoot, rotateRoot, signEnvelope, verifySignedDoc, writeAtomic, type RootDoc } from './root.ts';
import { verifyPackage, type TrustedKey } from './verify.ts';

export const LATEST_TYPE = 'outpost-latest/1';
export const INDEX_TYPE = 'outpost-index/1';

export interface PackageEntry {
  sha256: string;
  size: number;
  /** Relative to the tree root. */
  path: string;
}

export interface LatestDoc {
  type: typeof LATEST_TYPE;
  feed: string;
  kind: 'block' | 'allow';
  version: number;
  state: string;
  created: string;
  expires: string;
  full: PackageEntry & { version: number; state: string };
  /** Newest first. Each turns `from` (with `from_state`) into `to` (with `state`). */
  deltas: (PackageEntry & { from: number; from_state: string; to: number; state: string })[];
}

export interface IndexDoc {
  type: typeof INDEX_TYPE;
  created: string;
  expires: string;
  feeds: { name: string; latest: string }[];
}

export interface PublishOptions {
  from: string;
  out: string;
  keyPath: string;
  /** Root keys for a tree without a root yet: creates root version 1 authorizing the signing key. */
  rootKeyPaths?: string[];
  threshold?: number;
  /** latest.json and index.json expire after this many days (default 7): re-publish before that. */
  expiresDays?: number;
  maxDeltas?: number;
  now?: Date;
}

export interface PublishResult {
  root: number | null;
  feeds: { feed: string; version: number; full: string; deltas: number }[];
  skipped: { file: string; reason: string }[];
}

interface Found {
  file: string;
  sha256: string;
  size: number;
  feed: string;
  kind: 'block' | 'allow';
  type: 'full' | 'delta';
  version: number;
  state: string;
  expires: string;
  base_version?: number;
  base_state?: string;
}

/** Reads and verifies every package in `dir` with the keys appliances will use. Expired ones are skipped. */
async function scanPackages(dir: string, keys: TrustedKey[], now: Date, skipped: PublishResult['skipped']): Promise<Found[]> {
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-publish-'));
  const limits = { maxPackageBytes: 8 * 1024 ** 3, maxUncompressedBytes: 32 * 1024 ** 3 };
  const out: Found[] = [];
  try {
    for (const name of fs.readdirSync(dir).filter((f) => f.endsWith('.tar')).sort()) {
      const file = path.join(dir, name);
      const staged = await stagePackage(file, staging, limits);
      try {
        let m;
        try {
          m = verifyPackage(staged, keys, now);
        } catch (e) {
          if (e instanceof OutpostError && e.code === 'E_EXPIRED') {
            skipped.push({ file, reason: e.message });
            continue;
          }
          throw new OutpostError(e instanceof OutpostError ? e.code : 'E_INTERNAL', `${file}: ${(e as Error).message}`);
        }
        out.push({ file, sha256: staged.sha256, size: staged.size, feed: m.feed, kind: m.kind, type: m.type, version: m.version, state: m.state, expires: m.expires, base_version: m.base_version, base_state: m.base_state });
      } finally {
        staged.cleanup();
      }
    }
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  return out;
}

function copyPackage(out: string, f: Found): PackageEntry {
  const rel = `packages/${f.sha256}.tar`;
  const dest = path.join(out, rel);
  if (!fs.existsSync(dest) || fs.statSync(dest).size !== f.size) {
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.tmp-${process.pid}`;
    fs.copyFileSync(f.file, tmp);
    fs.chmodSync(tmp, 0o644);
    fs.renameSync(tmp, dest);
  }
  return { sha256: f.sha256, size: f.size, path: rel };
}

export async function publishTree(o: PublishOptions): Promise<PublishResult> {
  const now = o.now ?? new Date();
  const key = loadPrivateKey(o.keyPath);
  const keyId = keyIdOf(key);
  fs.mkdirSync(o.out, { recursive: true });

  let root: RootDoc | null = readCurrentRoot(o.out)?.root ?? null;
  if (!root && o.rootKeyPaths?.length) {
    root = rotateRoot({ tree: o.out, rootKeys: o.rootKeyPaths.map(loadPrivateKey), threshold: o.threshold, addSigningKeys: [key], now }).root;
  }
  let keys: TrustedKey[];
  if (root) {
    keys = authorizedKeys(root, now);
    const mine = keys.find((k) => k.key_id === keyId);
    if (!mine || mine.revoked_at) {
      throw new OutpostError(mine ? 'E_REVOKED_KEY' : 'E_KEY', `signing key ${keyId} is ${mine ? 'revoked or lapsed' : 'not authorized'} in root version ${root.version}; run: outpost provider rotate --out ${o.out} --add-signing-key <its .pub> --root-key <root.key>`);
    }
  } else {
    keys = [{ key_id: keyId, public_pem: crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString(), revoked_at: null }];
  }

  const skipped: PublishResult['skipped'] = [];
  const found = await scanPackages(o.from, keys, now, skipped);
  const created = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const docExpires = new Date(created.getTime() + (o.expiresDays ?? 7) * 86400_000);
  const result: PublishResult = { root: root?.version ?? null, feeds: [], skipped };
  const feeds = [...new Set(found.map((f) => f.feed))].sort();
  const index: IndexDoc = { type: INDEX_TYPE, created: created.toISOString(), expires: docExpires.toISOString(), feeds: [] };

  for (const feed of feeds) {
    const mine = found.filter((f) => f.feed === feed);
    const fulls = mine.filter((f) => f.type === 'full').sort((a, b) => b.version - a.version);
    const full = fulls[0];
    if (!full) {
      for (const f of mine) skipped.push({ file: f.file, reason: `feed ${feed} has no full package; a delta alone cannot be published` });
      continue;
    }
    for (const f of fulls.slice(1)) if (f.version === full.version && f.sha256 !== full.sha256) {
      throw new OutpostError('E_EQUIVOCATION', `${f.file} and ${full.file}: two different full packages of ${feed} version ${full.version}`);
    }
    const deltas = mine
      .filter((f) => f.type === 'delta' && f.version <= full.version)
      .sort((a, b) => b.version - a.version || (a.base_version ?? 0) - (b.base_version ?? 0))
      .slice(0, o.maxDeltas ?? 30);
    for (const f of mine) if (f.type === 'delta' && f.version > full.version) skipped.push({ file: f.file, reason: `newer than the newest full package (${full.version})` });

    const latestPath = path.join(o.out, 'feeds', feed, 'latest.json');
    if (fs.existsSync(latestPath)) {
      // The provider must not move its own feed backwards: appliances would refuse it anyway (E_ROLLBACK).
      try {
        const prev = verifySignedDoc(fs.readFileSync(latestPath), keys, LATEST_TYPE, latestPath, new Date(0));
        if (typeof prev.version === 'number' && prev.version > full.version) {
          throw new OutpostError('E_ROLLBACK', `${latestPath} already announces version ${prev.version}; newest full package here is ${full.version}`);
        }
      } catch (e) {
        if (e instanceof OutpostError && e.code === 'E_ROLLBACK') throw e;
      }
    }

    const fullEntry = copyPackage(o.out, full);
    const deltaEntries = deltas.map((d) => ({ ...copyPackage(o.out, d), from: d.base_version!, from_state: d.base_state!, to: d.version, state: d.state }));
    // A latest valid past its full package's expiry would send appliances to a package they must refuse.
    const expires = new Date(Math.min(docExpires.getTime(), Date.parse(full.expires)));
    const latest: LatestDoc = {
      type: LATEST_TYPE, feed, kind: full.kind, version: full.version, state: full.state,
      created: created.toISOString(), expires: expires.toISOString(),
      full: { ...fullEntry, version: full.version, state: full.state }, deltas: deltaEntries,
    };
    writeAtomic(latestPath, signEnvelope(latest, [key]));
    index.feeds.push({ name: feed, latest: `feeds/${feed}/latest.json` });
    result.feeds.push({ feed, version: full.version, full: fullEntry.path, deltas: deltaEntries.length });
  }
  writeAtomic(path.join(o.out, 'index.json'), signEnvelope(index, [key]));
  return result;
}
