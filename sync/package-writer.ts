// Provider side of the package format: gzip'd NDJSON data files, a manifest with their hashes, an Ed25519
// signature over the exact manifest bytes, all in a plain ustar tar written atomically. Also the canonical
// line form and the content-state hash, shared with the apply side so both compute the same `state`.
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { OutpostError } from '../appliance/errors.ts';
import type { Indicator, IndicatorType, Manifest, ManifestFile } from '../appliance/types.ts';
import { keyIdOf } from './keys.ts';
import { MAX_MANIFEST_BYTES, parseManifest } from './package-reader.ts';
import { compareIndicators } from './records.ts';

export const PACKAGE_FORMAT = 'outpost-package/1' as const;
export const DEFAULT_MAX_LINES_PER_FILE = 1_000_000;

/** Top-level keys of an Indicator line, in the one order every canonical line uses. */
const LINE_KEYS = ['t', 'v', 'cat', 'conf', 'fs', 'ls', 'exp', 'ports', 'tags', 'ctx'] as const;

function isEmpty(x: unknown): boolean {
  if (x === undefined || x === null) return true;
  if (Array.isArray(x)) return x.length === 0;
  if (typeof x === 'object') return Object.keys(x as object).length === 0;
  return false;
}

/** Nested objects (ctx) get sorted keys, so the line does not depend on insertion order. */
function sortKeys(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x && typeof x === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(x as object).sort()) out[k] = sortKeys((x as Record<string, unknown>)[k]);
    return out;
  }
  return x;
}

/**
 * The canonical NDJSON line of an indicator (without the newline): keys in the order
 * t, v, cat, conf, fs, ls, exp, ports, tags, ctx; absent, null, empty-array and empty-object fields
 * left out; nested object keys sorted. Unknown top-level keys are dropped. Data files hold exactly these.
 */
export function canonicalLine(ind: Indicator): string {
  const out: Record<string, unknown> = {};
  for (const k of LINE_KEYS) {
    const val = (ind as unknown as Record<string, unknown>)[k];
    if (!isEmpty(val)) out[k] = k === 'ctx' ? sortKeys(val) : val;
  }
  return JSON.stringify(out);
}

/**
 * Content state of a feed: sha256 over canonicalLine(ind) + "\n" for every indicator, fed in canonical
 * order — by t, then v, each compared by Unicode code point (= UTF-8 byte order = SQLite BINARY collation,
 * so `ORDER BY type, value` gives it). Out-of-order or duplicate input is refused rather than hashed.
 */
export class StateHasher {
  private readonly hash = crypto.createHash('sha256');
  private prev: Indicator | undefined;
  /** Lines not hashed yet: handed to sha256 64 KiB at a time (one call per line cost more than the hashing). */
  private batch = '';
  count = 0;

  update(ind: Indicator): void {
    if (this.prev && compareIndicators(this.prev, ind) >= 0) {
      throw new OutpostError('E_STATE', `state input not in canonical order or duplicated at ${ind.t} "${String(ind.v).slice(0, 80)}" (after ${this.prev.t} "${String(this.prev.v).slice(0, 80)}")`);
    }
    this.prev = ind;
    this.updateLine(canonicalLine(ind));
  }

  /**
   * A line that is already canonicalLine() of its indicator, from a source that guarantees the canonical
   * order itself (stateFromDb: SQLite's ORDER BY type, value); not checked again.
   */
  updateLine(line: string): void {
    this.batch += line + '\n';
    this.count++;
    if (this.batch.length >= 65536) {
      this.hash.update(this.batch);
      this.batch = '';
    }
  }

  digest(): string {
    this.hash.update(this.batch);
    this.batch = '';
    return this.hash.digest('hex');
  }
}

export interface PackageInputFile {
  role: ManifestFile['role'];
  indicators: Iterable<Indicator> | AsyncIterable<Indicator>;
}

export type PackageManifestInput = Omit<Manifest, 'files' | 'key_id' | 'format' | 'counts' | 'state'> & {
  /** Required for deltas; for full packages it is computed, and a given value must agree. */
  state?: string;
  counts?: Partial<Manifest['counts']>;
};

export interface WritePackageOptions {
  outDir: string;
  privateKey: crypto.KeyObject;
  manifest: PackageManifestInput;
  files: PackageInputFile[];
  maxLinesPerFile?: number;
}

/** Writes one gzip'd NDJSON part, hashing the compressed bytes as they go to disk. */
class PartWriter {
  // Default level 6: level 9 costs ~7x the time for ~10% smaller files on indicator lines.
  readonly gz = zlib.createGzip({ level: 6 });
  private readonly sha = crypto.createHash('sha256');
  size = 0;
  rawSize = 0;
  count = 0;
  private pending: string[] = [];
  private pendingBytes = 0;
  private readonly done: Promise<void>;

  constructor(readonly name: string, readonly role: ManifestFile['role'], readonly file: string) {
    const tap = new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        this.sha.update(chunk);
        this.size += chunk.length;
        cb(null, chunk);
      },
    });
    this.done = pipeline(this.gz, tap, fs.createWriteStream(file, { flags: 'wx', mode: 0o600 }));
    this.done.catch(() => {}); // awaited in finish(); avoid an unhandled rejection in between
  }

  async add(line: string): Promise<void> {
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.count++;
    if (this.pendingBytes >= 64 * 1024) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.pending.length) return;
    const buf = Buffer.from(this.pending.join('\n') + '\n', 'utf8');
    this.pending = [];
    this.pendingBytes = 0;
    this.rawSize += buf.length;
    if (!this.gz.write(buf)) await once(this.gz, 'drain');
  }

  async finish(): Promise<ManifestFile> {
    await this.flush();
    this.gz.end();
    await this.done;
    return { name: this.name, role: this.role, sha256: this.sha.digest('hex'), size: this.size, uncompressed_size: this.rawSize, count: this.count };
  }
}

/** Manifest text: one top-level key per line and one files[] entry per line, so `grep`/`sed` can read it by hand. */
export function serializeManifest(m: Manifest): Buffer {
  const order = ['format', 'feed', 'kind', 'type', 'version', 'base_version', 'base_state', 'created', 'expires', 'key_id', 'state', 'defaults', 'counts', 'files', 'sources'];
  const keys = [...order.filter((k) => k in m), ...Object.keys(m).filter((k) => !order.includes(k))];
  const lines: string[] = [];
  for (const k of keys) {
    const val = (m as unknown as Record<string, unknown>)[k];
    if (val === undefined) continue;
    if ((k === 'files' || k === 'sources') && Array.isArray(val) && val.length) {
      lines.push(`  ${JSON.stringify(k)}: [\n${val.map((x) => `    ${JSON.stringify(x)}`).join(',\n')}\n  ]`);
    } else {
      lines.push(`  ${JSON.stringify(k)}: ${JSON.stringify(val)}`);
    }
  }
  return Buffer.from(`{\n${lines.join(',\n')}\n}\n`, 'utf8');
}

function partName(role: ManifestFile['role'], n: number): string {
  return `${role}-${String(n).padStart(4, '0')}.ndjson.gz`;
}

/** Streams a staged file into a tar entry of known size. */
async function addFileEntry(pack: tar.Pack, name: string, file: string, size: number, mtime: Date): Promise<void> {
  let entry!: ReturnType<tar.Pack['entry']>;
  const entryDone = new Promise<void>((resolve, reject) => {
    entry = pack.entry({ name, size, mode: 0o644, mtime, type: 'file' }, (err) => (err ? reject(err) : resolve()));
  });
  for await (const chunk of fs.createReadStream(file)) {
    if (!entry.write(chunk)) await once(entry as unknown as NodeJS.EventEmitter, 'drain');
  }
  (entry as unknown as { end(): void }).end();
  await entryDone;
}

/**
 * Writes `<outDir>/<feed>-<version>-<full|delta>.tar` (atomically: temp name, then rename). Indicators must
 * come sorted by (t, v) in canonical order and without duplicates within each role; they are written as
 * canonical lines, split into parts of at most maxLinesPerFile lines.
 */
export async function writePackage(opts: WritePackageOptions): Promise<{ path: string; sha256: string; manifest: Manifest }> {
  const input = opts.manifest;
  const key = opts.privateKey;
  if (!key || key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') {
    throw new OutpostError('E_KEY', 'packages must be signed with an Ed25519 private key');
  }
  const maxLines = opts.maxLinesPerFile ?? DEFAULT_MAX_LINES_PER_FILE;
  if (!Number.isInteger(maxLines) || maxLines < 1) throw new OutpostError('E_USAGE', 'maxLinesPerFile must be a positive integer');
  for (const f of opts.files) {
    const allowed = (input.kind as string) === 'reference' ? ['reference'] : input.type === 'full' ? ['indicators'] : ['add', 'remove'];
    if (!allowed.includes(f.role)) throw new OutpostError('E_INPUT', `a ${input.type} package cannot carry a "${f.role}" file`);
  }

  fs.mkdirSync(opts.outDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(opts.outDir, '.build-'));
  try {
    const parts: ManifestFile[] = [];
    const byType: Partial<Record<IndicatorType, number>> = {};
    const lineCount = { indicators: 0, add: 0, remove: 0, reference: 0 };
    const partNo = { indicators: 0, add: 0, remove: 0, reference: 0 };
    const lastOf: Partial<Record<ManifestFile['role'], Indicator>> = {};
    const state = input.type === 'full' ? new StateHasher() : undefined;

    for (const f of opts.files) {
      let part: PartWriter | undefined;
      for await (const ind of f.indicators) {
        if (!ind || typeof ind.v !== 'string' || typeof ind.t !== 'string') {
          throw new OutpostError('E_INPUT', `${f.role} line ${lineCount[f.role] + 1}: not an indicator (needs string v and t)`);
        }
        const prev = lastOf[f.role];
        if (prev && compareIndicators(prev, ind) >= 0) {
          throw new OutpostError('E_INPUT', `${f.role} indicators must be sorted by type then value without duplicates: ${ind.t} "${ind.v.slice(0, 80)}" comes after ${prev.t} "${prev.v.slice(0, 80)}"`);
        }
        lastOf[f.role] = ind;
        if (!part || part.count >= maxLines) {
          if (part) parts.push(await part.finish());
          const name = partName(f.role, ++partNo[f.role]);
          part = new PartWriter(name, f.role, path.join(work, name));
        }
        await part.add(canonicalLine(ind));
        state?.update(ind);
        lineCount[f.role]++;
        if (f.role === 'indicators') byType[ind.t] = (byType[ind.t] ?? 0) + 1;
      }
      if (part) parts.push(await part.finish());
    }

    let stateHex: string;
    if (state) {
      stateHex = state.digest();
      if (input.state !== undefined && input.state !== stateHex) {
        throw new OutpostError('E_STATE', `manifest state ${input.state.slice(0, 16)}… does not match the lines written (${stateHex.slice(0, 16)}…)`);
      }
    } else {
      if (!input.state) throw new OutpostError('E_INPUT', 'a delta package needs the state hash of the feed after applying it');
      stateHex = input.state;
    }

    let counts: Manifest['counts'];
    if (input.type === 'full') {
      counts = { total: lineCount.indicators + lineCount.reference, by_type: byType };
    } else {
      if (typeof input.counts?.total !== 'number') throw new OutpostError('E_INPUT', 'a delta package needs counts.total (indicators in the feed after applying it)');
      counts = { total: input.counts.total, by_type: input.counts.by_type ?? {}, added: lineCount.add, removed: lineCount.remove };
    }

    const { counts: _c, state: _s, ...rest } = input;
    const manifest: Manifest = {
      ...rest,
      format: PACKAGE_FORMAT,
      key_id: keyIdOf(key),
      state: stateHex,
      counts,
      files: parts,
    };
    const manifestBytes = serializeManifest(manifest);
    if (manifestBytes.length > MAX_MANIFEST_BYTES) {
      throw new OutpostError('E_SIZE', `manifest is ${manifestBytes.length} bytes; appliances refuse more than ${MAX_MANIFEST_BYTES} (trim the source reports)`);
    }
    // The writer runs the reader's schema check, so it never produces a package an appliance refuses on form.
    try {
      parseManifest(manifestBytes);
    } catch (e) {
      throw new OutpostError('E_INPUT', `manifest would not be accepted: ${(e as Error).message}`);
    }
    const signature = crypto.sign(null, manifestBytes, key);

    const fileName = `${manifest.feed}-${manifest.version}-${manifest.type}.tar`;
    const dest = path.join(opts.outDir, fileName);
    const tmp = path.join(work, fileName);
    const mtime = new Date(Date.parse(manifest.created));
    const pack = tar.pack();
    const sha = crypto.createHash('sha256');
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        sha.update(chunk);
        cb(null, chunk);
      },
    });
    const written = pipeline(pack, tap, fs.createWriteStream(tmp, { flags: 'wx', mode: 0o644 }));
    written.catch(() => {});
    pack.entry({ name: 'manifest.json', mode: 0o644, mtime }, manifestBytes);
    pack.entry({ name: 'manifest.sig', mode: 0o644, mtime }, signature);
    for (const p of parts) await addFileEntry(pack, p.name, path.join(work, p.name), p.size, mtime);
    pack.finalize();
    await written;
    fs.renameSync(tmp, dest);
    return { path: dest, sha256: sha.digest('hex'), manifest };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
