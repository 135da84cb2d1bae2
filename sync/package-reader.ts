// Appliance side of the package format, before trust: stream-parse an untrusted tar into a private staging
// directory (regular files with flat names only, every limit counted on the bytes actually read), parse and
// schema-check the manifest, and later read indicator lines back with a cap on decompressed bytes.
// Nothing here decides trust: verify.ts checks signature, hashes and expiry on what this stages.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import stream, { Transform } from 'node:stream';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { OutpostError } from '../appliance/errors.ts';
import { INDICATOR_TYPES, type Indicator, type Manifest, type ManifestFile } from '../appliance/types.ts';

export interface Limits {
  /** Most bytes read for the whole tar (headers and padding included). */
  maxPackageBytes: number;
  /** Most decompressed bytes of one data file. */
  maxUncompressedBytes: number;
  /** Most bytes of manifest.json; default 1 MiB. */
  maxManifestBytes?: number;
  /** Most tar entries, manifest and signature included; default 1024. */
  maxFiles?: number;
}

export interface StagedPackage {
  /** Private (0700) directory holding the staged data files under our own names. */
  dir: string;
  /** sha256 of the whole tar as read. */
  sha256: string;
  size: number;
  /** The exact bytes that are signed. */
  manifestBytes: Buffer;
  signature: Buffer;
  /** Parsed and schema-checked, not yet trusted: verifyPackage decides that. */
  manifest: Manifest;
  /** Tar entry name → staged path, for every entry except manifest.json and manifest.sig. */
  files: Map<string, string>;
  /** Entry name → sha256 and size computed while streaming; verify re-hashes from disk when absent. */
  digests?: Map<string, { sha256: string; size: number }>;
  cleanup(): void;
}

export const MAX_MANIFEST_BYTES = 1024 * 1024;
export const DEFAULT_MAX_FILES = 1024;
export const SIGNATURE_BYTES = 64;
/** A flat name: no '/', no leading '.', so no absolute paths, no '..', no hidden files. */
export const ENTRY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const FEED_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const KEY_ID = /^[0-9a-f]{16}$/;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;
const MAX_LINE_BYTES = 1024 * 1024;
const RESERVED = new Set(['manifest.json', 'manifest.sig']);

// ---------- manifest schema ----------

function bad(msg: string): never {
  throw new OutpostError('E_FORMAT', `manifest: ${msg}`);
}

function isObj(x: unknown): x is Record<string, unknown> {
  return !!x && typeof x === 'object' && !Array.isArray(x);
}

function count(x: unknown, what: string): number {
  if (!Number.isSafeInteger(x) || (x as number) < 0) bad(`${what} must be a non-negative integer`);
  return x as number;
}

function date(x: unknown, what: string): number {
  if (typeof x !== 'string' || !ISO_DATE.test(x) || !Number.isFinite(Date.parse(x))) bad(`${what} must be an ISO 8601 UTC time like 2026-01-31T12:00:00Z`);
  return Date.parse(x as string);
}

function checkFiles(m: Record<string, unknown>): void {
  if (!Array.isArray(m.files)) bad('files must be an array');
  const seen = new Set<string>();
  // Reference packages (actors/families, sync/reference.ts) carry only `reference` files.
  const roles = m.kind === 'reference' ? ['reference'] : m.type === 'full' ? ['indicators'] : ['add', 'remove'];
  (m.files as unknown[]).forEach((f, i) => {
    const at = `files[${i}]`;
    if (!isObj(f)) bad(`${at} must be an object`);
    if (typeof f.name !== 'string' || !ENTRY_NAME.test(f.name) || RESERVED.has(f.name)) bad(`${at}.name must be a flat file name other than manifest.json/manifest.sig`);
    if (seen.has(f.name as string)) bad(`${at}.name "${f.name}" is listed twice`);
    seen.add(f.name as string);
    if (typeof f.role !== 'string' || !roles.includes(f.role)) bad(`${at}.role must be one of ${roles.join(', ')} in a ${String(m.type)} package`);
    if (typeof f.sha256 !== 'string' || !HEX64.test(f.sha256)) bad(`${at}.sha256 must be 64 lowercase hex chars`);
    count(f.size, `${at}.size`);
    count(f.uncompressed_size, `${at}.uncompressed_size`);
    count(f.count, `${at}.count`);
  });
}

/** Structural check of a parsed manifest object; throws E_FORMAT naming the first bad field. */
export function checkManifest(m: unknown): Manifest {
  if (!isObj(m)) bad('must be a JSON object');
  if (m.format !== 'outpost-package/1') bad(`format must be "outpost-package/1", got ${JSON.stringify(m.format)}`);
  if (typeof m.feed !== 'string' || !FEED_NAME.test(m.feed)) bad(`feed must match ${FEED_NAME}`);
  if (m.kind !== 'block' && m.kind !== 'allow' && m.kind !== 'reference') bad('kind must be "block", "allow" or "reference"');
  if (m.type !== 'full' && m.type !== 'delta') bad('type must be "full" or "delta"');
  if (m.kind === 'reference' && m.type !== 'full') bad('a reference package is always full');
  if (!Number.isSafeInteger(m.version) || (m.version as number) < 1) bad('version must be a positive integer');
  const created = date(m.created, 'created');
  const expires = date(m.expires, 'expires');
  if (expires <= created) bad('expires must be after created');
  if (typeof m.key_id !== 'string' || !KEY_ID.test(m.key_id)) bad('key_id must be 16 lowercase hex chars');
  if (typeof m.state !== 'string' || !HEX64.test(m.state)) bad('state must be 64 lowercase hex chars');
  if (m.type === 'delta') {
    if (!Number.isSafeInteger(m.base_version) || (m.base_version as number) < 1 || (m.base_version as number) >= (m.version as number)) {
      bad('base_version of a delta must be a positive integer below version');
    }
    if (typeof m.base_state !== 'string' || !HEX64.test(m.base_state)) bad('base_state of a delta must be 64 lowercase hex chars');
  } else if (m.base_version !== undefined || m.base_state !== undefined) {
    bad('a full package has no base_version/base_state');
  }
  if (!isObj(m.defaults)) bad('defaults must be an object');
  const d = m.defaults;
  if (d.category !== undefined && typeof d.category !== 'string') bad('defaults.category must be a string');
  if (d.confidence !== undefined && !(typeof d.confidence === 'number' && d.confidence >= 0 && d.confidence <= 100)) bad('defaults.confidence must be 0-100');
  checkFiles(m);
  if (!isObj(m.counts)) bad('counts must be an object');
  const c = m.counts;
  count(c.total, 'counts.total');
  if (!isObj(c.by_type)) bad('counts.by_type must be an object');
  for (const [t, n] of Object.entries(c.by_type)) {
    if (!(INDICATOR_TYPES as readonly string[]).includes(t)) bad(`counts.by_type has unknown type "${t}"`);
    count(n, `counts.by_type.${t}`);
  }
  if (c.added !== undefined) count(c.added, 'counts.added');
  if (c.removed !== undefined) count(c.removed, 'counts.removed');
  if (m.sources !== undefined && (!Array.isArray(m.sources) || !m.sources.every(isObj))) bad('sources must be an array of objects');
  return m as unknown as Manifest;
}

/** Parses the exact manifest bytes (strict UTF-8 JSON, no BOM) and schema-checks them. */
export function parseManifest(bytes: Uint8Array): Manifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    bad('not valid UTF-8');
  }
  if (text.charCodeAt(0) === 0xfeff) bad('must not start with a byte order mark');
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    bad(`not valid JSON (${(e as Error).message})`);
  }
  return checkManifest(obj);
}

// ---------- staging ----------

const show = (name: string) => JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);

function mapError(e: unknown): OutpostError {
  if (e instanceof OutpostError) return e;
  const err = e as NodeJS.ErrnoException;
  const msg = err?.message ?? String(e);
  if (/Unexpected end of data/i.test(msg)) return new OutpostError('E_FORMAT', 'truncated tar: the archive ends inside an entry');
  if (/Invalid tar header/i.test(msg)) return new OutpostError('E_FORMAT', `not a valid tar archive (${msg})`);
  if (/Header exceeds max size/i.test(msg)) return new OutpostError('E_TAR', `a pax or long-name header is too large (${msg})`);
  if (err?.code === 'ENOENT') return new OutpostError('E_NOT_FOUND', msg);
  if (typeof err?.code === 'string' && /^E[A-Z]+$/.test(err.code)) return new OutpostError('E_INTERNAL', `staging failed: ${msg}`);
  return new OutpostError('E_FORMAT', `unreadable archive (${msg})`);
}

async function collect(entry: AsyncIterable<Buffer>, cap: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    n += c.length;
    if (n > cap) throw new OutpostError('E_SIZE', `${what} is larger than ${cap} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

interface Parsed {
  sha256: string;
  size: number;
  manifestBytes: Buffer;
  signature: Buffer;
  manifest: Manifest;
  files: Map<string, string>;
  digests: Map<string, { sha256: string; size: number }>;
}

function parseTar(input: NodeJS.ReadableStream, dir: string, limits: Limits): Promise<Parsed> {
  const maxManifest = limits.maxManifestBytes ?? MAX_MANIFEST_BYTES;
  const maxFiles = limits.maxFiles ?? DEFAULT_MAX_FILES;
  return new Promise((resolve, reject) => {
    const sha = crypto.createHash('sha256');
    let total = 0;
    let index = 0;
    let lastEnd = 0; // stream offset just past the last entry's data and padding
    const names = new Set<string>();
    const files = new Map<string, string>();
    const digests = new Map<string, { sha256: string; size: number }>();
    let manifestBytes: Buffer | undefined;
    let signature: Buffer | undefined;
    let manifest: Manifest | undefined;

    // Framing is held to what a well-behaved writer produces, so no byte of the tar can change silently:
    // block padding after each entry's data must be zero and each header's checksum field canonical
    // (tar-stream ignores both). Only chunks that may still hold such bytes are kept (from `keepFrom` on).
    let keepFrom = 0;
    let kept: { start: number; buf: Buffer }[] = [];
    let pending: { name: string; start: number; end: number } | undefined; // padding not yet checked
    const bytesAt = (start: number, end: number): Buffer => {
      const out = Buffer.alloc(end - start);
      for (const k of kept) {
        const a = Math.max(start, k.start);
        const b = Math.min(end, k.start + k.buf.length);
        if (a < b) k.buf.copy(out, a - start, a - k.start, b - k.start);
      }
      return out;
    };
    const checkPadding = () => {
      if (!pending || pending.end <= pending.start) return;
      const pad = bytesAt(pending.start, pending.end);
      const bad = pad.findIndex((b) => b !== 0);
      if (bad !== -1) throw new OutpostError('E_FORMAT', `non-zero padding after entry ${show(pending.name)} at byte ${pending.start + bad}`);
    };
    const checkFraming = (name: string, dataStart: number, size: number) => {
      checkPadding();
      const headerStart = dataStart - 512;
      // Only when this header directly follows the previous entry (no pax/GNU extension blocks between).
      if (headerStart >= keepFrom) {
        const field = bytesAt(headerStart + 148, headerStart + 156).toString('latin1');
        if (!/^[0-7]{6}( \0|\0 )$/.test(field)) throw new OutpostError('E_FORMAT', `header of entry ${show(name)} has a malformed checksum field`);
      }
      const end = dataStart + size;
      pending = { name, start: end, end: dataStart + Math.ceil(size / 512) * 512 };
      keepFrom = end;
      kept = kept.filter((k) => k.start + k.buf.length > keepFrom);
    };

    // Every byte is counted and hashed here, before the parser sees it: header sizes are never trusted alone.
    let offset = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        total += chunk.length;
        if (total > limits.maxPackageBytes) return cb(new OutpostError('E_SIZE', `package is larger than ${limits.maxPackageBytes} bytes`));
        sha.update(chunk);
        if (offset + chunk.length > keepFrom) kept.push({ start: offset, buf: chunk });
        offset += chunk.length;
        cb(null, chunk);
      },
    });
    const extract = tar.extract();

    // Streams fail in cascades (a refused entry destroys the parser, which errors its source…); collect
    // them and report the first of our own errors, so the cause, not a side effect, reaches the caller.
    const errors: unknown[] = [];
    const fail = (e: unknown) => {
      errors.push(e);
      if (errors.length > 1) return;
      (input as stream.Readable).unpipe?.(counter);
      (input as stream.Readable).destroy?.();
      counter.destroy();
      extract.destroy();
      setImmediate(() => reject(mapError(errors.find((x) => x instanceof OutpostError) ?? errors[0])));
    };

    const onEntry = async (header: tar.Header, entry: AsyncIterable<Buffer>) => {
      index++;
      const name = header.name ?? '';
      if (header.type !== 'file') {
        const link = header.linkname ? ` -> ${show(header.linkname)}` : '';
        throw new OutpostError('E_TAR', `entry ${show(name)} is a ${(header.type as string | null) ?? 'entry of unknown type'}${link}; only regular files are allowed`);
      }
      if (!ENTRY_NAME.test(name)) {
        throw new OutpostError('E_TAR', `entry ${show(name)} is not a flat file name (absolute paths, "..", "/" and odd characters are refused)`);
      }
      if (names.has(name)) throw new OutpostError('E_TAR', `entry ${show(name)} appears twice`);
      names.add(name);
      if (index > maxFiles) throw new OutpostError('E_SIZE', `more than ${maxFiles} entries (at ${show(name)})`);
      const size = header.size ?? 0;
      const dataStart = (header as tar.Header & { byteOffset?: number }).byteOffset ?? total;
      if (dataStart + size > limits.maxPackageBytes) {
        throw new OutpostError('E_SIZE', `entry ${show(name)} declares ${size} bytes; the package limit is ${limits.maxPackageBytes}`);
      }
      if (index === 1 && name !== 'manifest.json') throw new OutpostError('E_FORMAT', `the first entry must be manifest.json, found ${show(name)}`);
      if (index === 2 && name !== 'manifest.sig') throw new OutpostError('E_FORMAT', `the second entry must be manifest.sig, found ${show(name)}`);

      if (name === 'manifest.json') {
        if (size > maxManifest) throw new OutpostError('E_SIZE', `manifest.json is ${size} bytes; the limit is ${maxManifest}`);
        manifestBytes = await collect(entry, maxManifest, 'manifest.json');
        manifest = parseManifest(manifestBytes);
        for (const f of manifest.files) {
          if (f.uncompressed_size > limits.maxUncompressedBytes) {
            throw new OutpostError('E_SIZE', `${f.name} declares ${f.uncompressed_size} bytes decompressed; the limit is ${limits.maxUncompressedBytes}`);
          }
        }
      } else if (name === 'manifest.sig') {
        if (size !== SIGNATURE_BYTES) throw new OutpostError('E_FORMAT', `manifest.sig must be ${SIGNATURE_BYTES} bytes (a raw Ed25519 signature), found ${size}`);
        signature = await collect(entry, SIGNATURE_BYTES, 'manifest.sig');
      } else {
        // Our own name on disk: the entry name never touches a path.
        const staged = path.join(dir, `data-${String(index).padStart(4, '0')}`);
        const h = crypto.createHash('sha256');
        let n = 0;
        const fh = await fs.promises.open(staged, 'wx', 0o600);
        try {
          for await (const c of entry) {
            h.update(c);
            n += c.length;
            await fh.write(c);
          }
        } finally {
          await fh.close();
        }
        if (n !== size) throw new OutpostError('E_FORMAT', `truncated tar: entry ${show(name)} has ${n} of ${size} bytes`);
        files.set(name, staged);
        digests.set(name, { sha256: h.digest('hex'), size: n });
      }
      lastEnd = dataStart + Math.ceil(size / 512) * 512;
    };

    // The parser may emit 'finish' while the last entry is still being written out, so 'finish' waits for it.
    let inflight: Promise<void> = Promise.resolve();
    extract.on('entry', (header, entry, next) => {
      // An entry stream destroyed before we iterate it would otherwise raise an unhandled 'error'; the
      // same error reaches us through the parser or the iteration.
      entry.on('error', () => {});
      try {
        checkFraming(header.name ?? '', (header as tar.Header & { byteOffset?: number }).byteOffset ?? total, header.size ?? 0);
      } catch (e) {
        fail(e);
        return;
      }
      inflight = onEntry(header, entry as unknown as AsyncIterable<Buffer>).then(() => next(), fail);
    });
    extract.on('finish', () => inflight.then(() => {
      if (errors.length) return;
      try {
        checkPadding();
        if (total === 0) throw new OutpostError('E_FORMAT', 'empty file: not a tar archive');
        // A tar ends with two zero blocks; without them the file was cut at an entry boundary.
        if (total < lastEnd + 1024) throw new OutpostError('E_FORMAT', 'truncated tar: the end-of-archive blocks are missing');
        if (!manifestBytes || !manifest) throw new OutpostError('E_FORMAT', 'no manifest.json in the archive');
        if (!signature) throw new OutpostError('E_FORMAT', 'no manifest.sig in the archive');
        resolve({ sha256: sha.digest('hex'), size: total, manifestBytes, signature, manifest, files, digests });
      } catch (e) {
        fail(e);
      }
    }));
    extract.on('error', fail);
    counter.on('error', fail);
    input.on('error', fail);
    input.pipe(counter).pipe(extract as unknown as NodeJS.WritableStream);
  });
}

/**
 * Stream-parses an untrusted package tar into a fresh private directory under stagingRoot. Refuses
 * (E_TAR) anything but regular files with flat names, duplicates and links; enforces every limit on the
 * bytes actually read (E_SIZE); reports a cut-off archive as E_FORMAT "truncated". On any error the
 * staging directory is removed before the error is thrown.
 */
export async function stagePackage(source: string | NodeJS.ReadableStream, stagingRoot: string, limits: Limits): Promise<StagedPackage> {
  fs.mkdirSync(stagingRoot, { recursive: true, mode: 0o700 });
  const dir = fs.mkdtempSync(path.join(stagingRoot, 'pkg-'));
  fs.chmodSync(dir, 0o700);
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    if (typeof source === 'string') {
      const st = fs.statSync(source, { throwIfNoEntry: false });
      if (!st) throw new OutpostError('E_NOT_FOUND', `no package file at ${source}`);
      if (!st.isFile()) throw new OutpostError('E_INPUT', `${source} is not a regular file`);
      if (st.size > limits.maxPackageBytes) throw new OutpostError('E_SIZE', `package is ${st.size} bytes; the limit is ${limits.maxPackageBytes}`);
    }
    const input = typeof source === 'string' ? fs.createReadStream(source) : source;
    const parsed = await parseTar(input, dir, limits);
    return { dir, ...parsed, cleanup };
  } catch (e) {
    cleanup();
    throw mapError(e);
  }
}

/**
 * The manifest of a package file, read from its first entry without staging the rest: for planning with
 * packages this appliance already accepted and kept (rollback chains, pruning). Parsed and schema-checked,
 * NOT verified — whatever is then imported goes through stagePackage and verify like any package.
 */
export async function readManifestOnly(file: string, maxManifestBytes = MAX_MANIFEST_BYTES): Promise<Manifest> {
  const extract = tar.extract();
  const input = fs.createReadStream(file);
  input.pipe(extract as unknown as NodeJS.WritableStream);
  try {
    for await (const entry of extract) {
      if (entry.header.name !== 'manifest.json') throw new OutpostError('E_FORMAT', `${path.basename(file)}: the first entry is ${show(entry.header.name)}, not manifest.json`);
      return parseManifest(await collect(entry as AsyncIterable<Buffer>, maxManifestBytes, 'manifest.json'));
    }
    throw new OutpostError('E_FORMAT', `${path.basename(file)}: no manifest.json in the archive`);
  } catch (e) {
    throw mapError(e);
  } finally {
    input.destroy();
    extract.destroy();
  }
}

// ---------- reading indicator lines ----------

/** A run of consecutive lines of one data file, as text without their newlines. */
export interface LineBatch {
  lines: string[];
  /** 1-based line number of lines[0] in its file. */
  first: number;
}

export interface ReadLinesOptions {
  /** Receives every decompressed byte in order (the apply side hashes the lines' bytes as they are). */
  onBytes?: (chunk: Buffer) => void;
}

/**
 * Reads one staged data file back: gunzip with a byte-counting cap (the smaller of the limit and the
 * declared uncompressed size, E_SIZE), strict UTF-8 (a byte order mark is kept as a character, so the
 * text is exactly the bytes), no empty or over-long lines, every line ended by a newline (E_FORMAT
 * naming file and line). Lines come in batches: each stretch of complete lines is decoded in one call.
 * At the end the stored bytes' sha256, size, decompressed size and line count must match the manifest
 * again (E_HASH / E_FORMAT) — so a staged file changed after verification is still caught; the caller
 * applies inside a transaction and rolls back on any error.
 */
export async function* readLines(staged: StagedPackage, file: ManifestFile, limits: Limits, opts: ReadLinesOptions = {}): AsyncGenerator<LineBatch> {
  const stagedPath = staged.files.get(file.name);
  if (!stagedPath) throw new OutpostError('E_FORMAT', `${file.name} is listed in the manifest but not in the package`);
  const cap = Math.min(limits.maxUncompressedBytes, file.uncompressed_size);
  const sha = crypto.createHash('sha256');
  let stored = 0;
  let raw = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sha.update(chunk);
      stored += chunk.length;
      cb(null, chunk);
    },
  });
  const limiter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      raw += chunk.length;
      if (raw > cap) {
        const why = cap === file.uncompressed_size && cap < limits.maxUncompressedBytes ? `its declared ${file.uncompressed_size}` : `the limit of ${limits.maxUncompressedBytes}`;
        return cb(new OutpostError('E_SIZE', `${file.name} decompresses to more than ${why} bytes`));
      }
      cb(null, chunk);
    },
  });
  const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
  const src = fs.createReadStream(stagedPath, { highWaterMark: 256 * 1024 });
  const out = stream.pipeline(src, tap, gunzip, limiter, () => {});
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  let line = 0; // lines handed out so far
  let rest: Buffer = Buffer.alloc(0);

  /** Complete lines (the bytes end with a newline): one decode; on invalid UTF-8, find the line to name. */
  const decode = (bytes: Buffer): LineBatch => {
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      let at = 0;
      let n = line;
      for (;;) {
        const nl = bytes.indexOf(0x0a, at);
        n++;
        try {
          decoder.decode(bytes.subarray(at, nl));
        } catch {
          throw new OutpostError('E_FORMAT', `${file.name} line ${n}: not valid UTF-8`);
        }
        at = nl + 1;
      }
    }
    const lines = text.split('\n');
    lines.pop(); // the text ends with a newline
    const first = line + 1;
    for (let i = 0; i < lines.length; i++) {
      if (lines[i].length === 0) throw new OutpostError('E_FORMAT', `${file.name} line ${first + i}: empty line`);
    }
    line += lines.length;
    return { lines, first };
  };

  try {
    try {
      for await (const chunk of out as AsyncIterable<Buffer>) {
        opts.onBytes?.(chunk);
        const last = chunk.lastIndexOf(0x0a);
        if (last === -1) {
          rest = rest.length ? Buffer.concat([rest, chunk]) : Buffer.from(chunk);
        } else {
          const complete = rest.length ? Buffer.concat([rest, chunk.subarray(0, last + 1)]) : chunk.subarray(0, last + 1);
          rest = Buffer.from(chunk.subarray(last + 1));
          yield decode(complete);
        }
        if (rest.length > MAX_LINE_BYTES) throw new OutpostError('E_FORMAT', `${file.name} line ${line + 1}: longer than ${MAX_LINE_BYTES} bytes`);
      }
    } catch (e) {
      if (e instanceof OutpostError) throw e;
      throw new OutpostError('E_FORMAT', `${file.name}: not valid gzip data (${(e as Error).message})`);
    }
    if (rest.length) throw new OutpostError('E_FORMAT', `${file.name} line ${line + 1}: missing final newline (truncated data?)`);
    if (stored !== file.size || sha.digest('hex') !== file.sha256) {
      throw new OutpostError('E_HASH', `${file.name}: staged bytes no longer match the manifest's sha256/size`);
    }
    if (raw !== file.uncompressed_size) throw new OutpostError('E_FORMAT', `${file.name}: decompressed to ${raw} bytes, manifest says ${file.uncompressed_size}`);
    if (line !== file.count) throw new OutpostError('E_FORMAT', `${file.name}: has ${line} lines, manifest says ${file.count}`);
  } finally {
    src.destroy();
    out.destroy();
  }
}

/** One line as an indicator object: JSON with string "v" and "t" (E_FORMAT naming file and line). */
export function parseIndicatorLine(text: string, fileName: string, line: number): Indicator {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new OutpostError('E_FORMAT', `${fileName} line ${line}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(obj) || typeof obj.v !== 'string' || typeof obj.t !== 'string') {
    throw new OutpostError('E_FORMAT', `${fileName} line ${line}: not an indicator object (needs string "v" and "t")`);
  }
  return obj as unknown as Indicator;
}

/** readLines, one parsed indicator object per line. */
export async function* readIndicators(staged: StagedPackage, file: ManifestFile, limits: Limits): AsyncGenerator<Indicator> {
  for await (const { lines, first } of readLines(staged, file, limits)) {
    for (let i = 0; i < lines.length; i++) yield parseIndicatorLine(lines[i], file.name, first + i);
  }
}
