// Fixture for sync part B tests (inbox, rollback, expiry, crash, lookups during sync): real indicators from
// ../shared/data, grown to size by deriving child domains of real listed domains, written as signed packages.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Indicator } from '../appliance/types.ts';
import { collectIndicators } from '../sync/collect.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { writePackage } from '../sync/package-writer.ts';
import { canonicalIndicator, compareIndicators } from '../sync/records.ts';
import { DATA } from './helpers.ts';

export const REAL_SOURCES = [
  'ipsum/levels/3.txt',
  'maltrail/malware/emotet.txt',
  'maltrail/malware/lummac2.txt',
  'firehol/firehol_level1.netset',
  'urlhaus/urls.csv',
  'signature-base/hash-iocs.txt',
].map((f) => path.join(DATA, f));

export const BIG_SOURCES = [...REAL_SOURCES, path.join(DATA, 'ipsum/ipsum.txt')];

/** Canonical, sorted, de-duplicated indicators from real files. */
export async function realIndicators(files = REAL_SOURCES): Promise<Indicator[]> {
  const { indicators } = await collectIndicators(files, { kind: 'block', category: 'malware', confidence: 80 });
  return indicators.map(canonicalIndicator);
}

/**
 * Real indicators grown to at least `n` by adding `<prefix><i>.<real domain>` children of real listed
 * domains (valid, canonical, never colliding with a real value). Sorted canonically.
 */
export function grow(real: Indicator[], n: number, prefix: string): Indicator[] {
  const out = real.slice();
  const domains = real.filter((x) => x.t === 'domain').map((x) => x.v);
  if (!domains.length) throw new Error('no domains to derive from');
  for (let i = 0; out.length < n; i++) out.push({ t: 'domain', v: `${prefix}${Math.floor(i / domains.length)}.${domains[i % domains.length]}`, conf: 60 });
  return sortUnique(out);
}

export function sortUnique(list: Indicator[]): Indicator[] {
  const sorted = list.slice().sort(compareIndicators);
  return sorted.filter((x, i) => i === 0 || compareIndicators(sorted[i - 1], x) !== 0);
}

export function makeKeys(dir: string): { keyPath: string; pubPath: string; key: crypto.KeyObject } {
  const k = generateKeyPair(dir, 'provider');
  return { keyPath: k.privatePath, pubPath: k.publicPath, key: loadPrivateKey(k.privatePath) };
}

export async function writeFull(
  key: crypto.KeyObject, outDir: string, feed: string, version: number, indicators: Indicator[],
  opts: { created?: Date; expiresDays?: number } = {},
): Promise<{ path: string; sha256: string }> {
  const created = new Date(Math.floor((opts.created ?? new Date()).getTime() / 1000) * 1000);
  const expires = new Date(Date.now() + (opts.expiresDays ?? 30) * 86_400_000);
  const r = await writePackage({
    outDir,
    privateKey: key,
    manifest: { feed, kind: 'block', type: 'full', version, created: created.toISOString(), expires: new Date(Math.floor(expires.getTime() / 1000) * 1000).toISOString(), defaults: { category: 'malware', confidence: 80 } },
    files: [{ role: 'indicators', indicators }],
  });
  return { path: r.path, sha256: r.sha256 };
}

/** Digest of one feed's indicator rows (every column) and its version/state: "the feed's content". */
export function feedDigest(dbFile: string, feed: string): string {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    const h = crypto.createHash('sha256');
    // Raw rows joined by unit separators: exact for every column, and fast enough to run after each kill.
    let chunk = '';
    for (const row of db.prepare('SELECT * FROM indicators WHERE feed = ? ORDER BY type, value').raw().iterate(feed) as IterableIterator<unknown[]>) {
      chunk += row.map((x) => (x === null ? '\u0000' : x)).join('\u001f') + '\u001e';
      if (chunk.length > 1 << 20) {
        h.update(chunk);
        chunk = '';
      }
    }
    h.update(chunk);
    const f = db.prepare('SELECT version, state FROM feeds WHERE name = ?').get(feed);
    h.update(JSON.stringify(f ?? null));
    return h.digest('hex');
  } finally {
    db.close();
  }
}

/** Copies a data dir's database (after a checkpoint) so each crash run starts from the same old state. */
export function copyDb(fromDir: string, toDir: string): void {
  fs.mkdirSync(toDir, { recursive: true, mode: 0o700 });
  const src = new Database(path.join(fromDir, 'outpost.db'));
  src.pragma('wal_checkpoint(TRUNCATE)');
  src.close();
  for (const f of fs.readdirSync(toDir)) if (f.startsWith('outpost.db')) fs.rmSync(path.join(toDir, f));
  fs.copyFileSync(path.join(fromDir, 'outpost.db'), path.join(toDir, 'outpost.db'));
  fs.chmodSync(path.join(toDir, 'outpost.db'), 0o600);
}

/** Flips one byte inside the first data file entry of a package (after the manifest and signature). */
export function tamper(src: string, dest: string): void {
  const buf = fs.readFileSync(src);
  // ustar: 512-byte header + data padded to 512. Walk to the third entry (first data part).
  let off = 0;
  for (let i = 0; i < 2; i++) {
    const size = parseInt(buf.subarray(off + 124, off + 136).toString('ascii').replace(/\0.*$/, '').trim(), 8);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  const name = buf.subarray(off, off + 100).toString('ascii').replace(/\0.*$/, '');
  if (!name.endsWith('.ndjson.gz')) throw new Error(`unexpected third entry ${name}`);
  buf[off + 512 + 40] ^= 0xff;
  fs.writeFileSync(dest, buf);
}
