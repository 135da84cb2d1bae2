// Hostile packages against stagePackage / verifyPackage / readIndicators: flipped bytes anywhere, wrong,
// unknown and revoked keys, expiry, missing and extra files, unsafe tar entries crafted with tar-stream
// directly, truncation, size limits, a gzip bomb and garbage. Each refusal has its exact code, and the
// staging directory is gone afterwards.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Indicator, Manifest } from '../appliance/types.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { readIndicators, stagePackage, type Limits } from '../sync/package-reader.ts';
import { serializeManifest, writePackage } from '../sync/package-writer.ts';
import { compareIndicators } from '../sync/records.ts';
import { verifyPackage, type TrustedKey } from '../sync/verify.ts';
import { DATA, tmpDir } from './helpers.ts';
import { mulberry32 } from '../scripts/prng.ts';

const LIMITS: Limits = { maxPackageBytes: 16 * 1024 * 1024, maxUncompressedBytes: 16 * 1024 * 1024 };
const EXPIRES = '2099-01-01T00:00:00.000Z';

interface RawEntry {
  header: Partial<tar.Header> & { name: string; pax?: Record<string, string> };
  data?: Buffer;
}

/** Packs entries exactly as given, with tar-stream's own encoder (no safety checks on our side). */
async function packTar(entries: RawEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(c as Buffer));
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = { mtime: new Date(0), ...e.header } as tar.Header;
      if (e.data) pack.entry(header, e.data, (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve())).end(undefined);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Reads a tar we made ourselves back into entries (test side only, trusted input). */
async function entriesOf(buf: Buffer): Promise<RawEntry[]> {
  const out: RawEntry[] = [];
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({ header: { name: header.name, type: header.type, mode: header.mode }, data: Buffer.concat(chunks) });
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(buf);
  await done;
  return out;
}

/** A raw ustar header block, for typeflags tar-stream's packer does not write (GNU long names). */
function ustarHeader(name: string, size: number, typeflag: string): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'utf8');
  b.write('0000644\0', 100);
  b.write('0000000\0', 108);
  b.write('0000000\0', 116);
  b.write(size.toString(8).padStart(11, '0') + '\0', 124);
  b.write('00000000000\0', 136);
  b.write(typeflag, 156);
  b.write('ustar\u000000', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

const pad512 = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

function signed(key: crypto.KeyObject, m: Manifest): RawEntry[] {
  const bytes = serializeManifest(m);
  return [
    { header: { name: 'manifest.json' }, data: bytes },
    { header: { name: 'manifest.sig' }, data: crypto.sign(null, bytes, key) },
  ];
}


describe('hostile packages', () => {
  const work = tmpDir();
  const stagingRoot = path.join(work, 'staging');
  let key: crypto.KeyObject;
  let keyId: string;
  let otherKey: crypto.KeyObject;
  let otherId: string;
  let trusted: TrustedKey[];
  let input: Indicator[];
  let good: { path: string; sha256: string; manifest: Manifest };
  let goodBytes: Buffer;
  let goodEntries: RawEntry[];
  let n = 0;
  const file = (buf: Buffer) => {
    const p = path.join(work, `case-${++n}.tar`);
    fs.writeFileSync(p, buf);
    return p;
  };

  /** Stage → verify → read every line. Returns 'accepted' or the error code and message; staging is always left empty. */
  async function outcome(source: Buffer | string | Readable, opts: { limits?: Limits; readLimits?: Limits; trusted?: TrustedKey[]; now?: Date } = {}) {
    let staged: Awaited<ReturnType<typeof stagePackage>> | undefined;
    const result: { code: string; message: string; manifest?: Manifest; lines?: Indicator[]; manifestBytes?: Buffer; signature?: Buffer; digests?: unknown } = { code: 'accepted', message: '' };
    try {
      staged = await stagePackage(Buffer.isBuffer(source) ? file(source) : source, stagingRoot, opts.limits ?? LIMITS);
      const m = verifyPackage(staged, opts.trusted ?? trusted, opts.now);
      const lines: Indicator[] = [];
      for (const f of m.files) for await (const ind of readIndicators(staged, f, opts.readLimits ?? opts.limits ?? LIMITS)) lines.push(ind);
      Object.assign(result, { manifest: m, lines, manifestBytes: staged.manifestBytes, signature: staged.signature, digests: new Map(staged.digests) });
    } catch (e) {
      const err = e as { code?: string; message: string };
      result.code = err.code ?? `not an OutpostError: ${err.message}`;
      result.message = err.message;
    } finally {
      staged?.cleanup();
    }
    expect(fs.readdirSync(stagingRoot)).toEqual([]);
    return result;
  }

  beforeAll(async () => {
    const k = generateKeyPair(path.join(work, 'keys'));
    key = loadPrivateKey(k.privatePath);
    keyId = k.keyId;
    const o = generateKeyPair(path.join(work, 'keys'), 'other');
    otherKey = loadPrivateKey(o.privatePath);
    otherId = o.keyId;
    trusted = [
      { key_id: keyId, public_pem: fs.readFileSync(k.publicPath, 'utf8'), revoked_at: null },
    ];
    fs.mkdirSync(stagingRoot);
    const values = fs.readFileSync(path.join(DATA, 'ipsum/levels/3.txt'), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    input = [...new Set(values)].slice(0, 1500).map((v): Indicator => ({ v, t: 'ipv4' })).sort(compareIndicators);
    good = await writePackage({
      outDir: path.join(work, 'out'),
      privateKey: key,
      manifest: { feed: 'ipsum', kind: 'block', type: 'full', version: 1, created: '2026-08-22T00:00:00.000Z', expires: EXPIRES, defaults: {} },
      files: [{ role: 'indicators', indicators: input }],
      maxLinesPerFile: 600,
    });
    goodBytes = fs.readFileSync(good.path);
    goodEntries = await entriesOf(goodBytes);
  });

  it('the untouched package is accepted (baseline for every case below)', async () => {
    const r = await outcome(good.path);
    expect(r.code).toBe('accepted');
    expect(r.lines).toEqual(input);
    expect(good.manifest.files.length).toBe(3);
  });

  it('a one-byte change at 200 seeded offsets is always refused — padding and header checksum fields included', async () => {
    // Map every byte of the genuine tar to what it carries.
    type Kind = 'manifest' | 'signature' | 'data' | 'header' | 'checksum' | 'padding' | 'end';
    const regions: { start: number; end: number; kind: Kind }[] = [];
    for (let off = 0; off + 512 <= goodBytes.length; ) {
      const block = goodBytes.subarray(off, off + 512);
      if (block.every((b) => b === 0)) {
        regions.push({ start: off, end: goodBytes.length, kind: 'end' });
        break;
      }
      const name = block.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
      const size = parseInt(block.subarray(124, 136).toString('latin1'), 8);
      regions.push({ start: off, end: off + 148, kind: 'header' }, { start: off + 148, end: off + 156, kind: 'checksum' }, { start: off + 156, end: off + 512, kind: 'header' });
      const content: Kind = name === 'manifest.json' ? 'manifest' : name === 'manifest.sig' ? 'signature' : 'data';
      regions.push({ start: off + 512, end: off + 512 + size, kind: content });
      const next = off + 512 + Math.ceil(size / 512) * 512;
      if (next > off + 512 + size) regions.push({ start: off + 512 + size, end: next, kind: 'padding' });
      off = next;
    }
    const kindAt = (o: number) => regions.find((r) => o >= r.start && o < r.end)!.kind;
    expect(regions.filter((r) => r.kind === 'data').length).toBe(3);

    const rand = mulberry32(20261124);
    const offsets = new Set<number>();
    for (const r of regions) for (const o of [r.start, Math.floor((r.start + r.end) / 2), r.end - 1]) offsets.add(o); // every region, both ends
    while (offsets.size < 200 + regions.length) offsets.add(Math.floor(rand() * goodBytes.length));

    // What each kind of byte may produce. A flipped key_id char names another (untrusted) key. tar-stream
    // itself ignores padding and the terminator bytes of the checksum field; the reader does not, so no
    // byte of the tar can change without a refusal.
    const allowed: Record<Kind, string[]> = {
      manifest: ['E_SIG', 'E_FORMAT', 'E_UNKNOWN_KEY'],
      signature: ['E_SIG'],
      data: ['E_HASH'],
      header: ['E_FORMAT'],
      checksum: ['E_FORMAT'],
      padding: ['E_FORMAT'],
      end: ['E_FORMAT'],
    };
    const seen = new Map<Kind, Set<string>>();
    for (const off of offsets) {
      const copy = Buffer.from(goodBytes);
      copy[off] ^= 1 + Math.floor(rand() * 255);
      const r = await outcome(copy);
      const kind = kindAt(off);
      if (!seen.has(kind)) seen.set(kind, new Set());
      seen.get(kind)!.add(r.code);
      expect(allowed[kind], `offset ${off} (${kind}): ${r.code} ${r.message}`).toContain(r.code);
      if (kind === 'padding') expect(r.message).toMatch(/non-zero padding/);
    }
    // The sample really covered the signed content, the signature, the data and the padding.
    expect(seen.get('manifest')!.size).toBeGreaterThan(0);
    expect([...seen.get('signature')!]).toEqual(['E_SIG']);
    expect([...seen.get('data')!]).toEqual(['E_HASH']);
    expect([...seen.get('padding')!]).toEqual(['E_FORMAT']);
    expect([...seen.get('checksum')!]).toEqual(['E_FORMAT']);
    expect([...seen.get('end')!]).toEqual(['E_FORMAT']);
  });

  it('a package signed by a key the appliance does not hold is E_UNKNOWN_KEY', async () => {
    const pkg = await writePackage({ outDir: path.join(work, 'other'), privateKey: otherKey, manifest: { ...good.manifest, version: 2 }, files: [{ role: 'indicators', indicators: input }] });
    const r = await outcome(pkg.path);
    expect(r.code).toBe('E_UNKNOWN_KEY');
    expect(r.message).toContain(otherId);
  });

  it('a key_id that names the trusted key over a signature by another key is E_SIG', async () => {
    const lying = signed(otherKey, { ...good.manifest, key_id: keyId });
    const r = await outcome(await packTar([...lying, ...goodEntries.slice(2)]));
    expect(r.code).toBe('E_SIG');
  });

  it("the trusted key's signature over other manifest bytes (a swapped signature) is E_SIG", async () => {
    const other = signed(key, { ...good.manifest, version: 99 });
    const r = await outcome(await packTar([goodEntries[0], other[1], ...goodEntries.slice(2)]));
    expect(r.code).toBe('E_SIG');
  });

  it('a revoked key is E_REVOKED_KEY', async () => {
    const r = await outcome(good.path, { trusted: [{ ...trusted[0], revoked_at: '2026-09-01T00:00:00Z' }] });
    expect(r.code).toBe('E_REVOKED_KEY');
  });

  it('an expired package is E_EXPIRED', async () => {
    expect((await outcome(good.path, { now: new Date('2099-01-01T00:00:00.000Z') })).code).toBe('E_EXPIRED');
    expect((await outcome(good.path, { now: new Date('2098-12-31T23:59:59.000Z') })).code).toBe('accepted');
    const old = await writePackage({ outDir: path.join(work, 'old'), privateKey: key, manifest: { ...good.manifest, version: 3, created: '2020-01-01T00:00:00Z', expires: '2020-02-01T00:00:00Z' }, files: [{ role: 'indicators', indicators: input }] });
    expect((await outcome(old.path)).code).toBe('E_EXPIRED');
  });

  it('a manifest listing a file the tar lacks is E_FORMAT; an unlisted extra file is E_FORMAT', async () => {
    const absent = await outcome(await packTar(goodEntries.slice(0, -1)));
    expect(absent.code).toBe('E_FORMAT');
    expect(absent.message).toMatch(/indicators-0003\.ndjson\.gz is listed in the manifest but absent/);
    const extra = await outcome(await packTar([...goodEntries, { header: { name: 'extra.txt' }, data: Buffer.from('hello\n') }]));
    expect(extra.code).toBe('E_FORMAT');
    expect(extra.message).toMatch(/extra\.txt is in the package but not listed/);
  });

  it('a duplicated entry name is E_TAR (even with identical content)', async () => {
    const r = await outcome(await packTar([...goodEntries, goodEntries[2]]));
    expect(r.code).toBe('E_TAR');
    expect(r.message).toMatch(/"indicators-0001\.ndjson\.gz" appears twice/);
  });

  it('unsafe names and non-regular entries are E_TAR naming the entry; nothing lands outside staging', async () => {
    const cases: [RawEntry, RegExp][] = [
      [{ header: { name: '../x' }, data: Buffer.from('x') }, /"\.\.\/x" is not a flat file name/],
      [{ header: { name: '/abs' }, data: Buffer.from('x') }, /"\/abs" is not a flat file name/],
      [{ header: { name: 'sub/file' }, data: Buffer.from('x') }, /"sub\/file" is not a flat file name/],
      [{ header: { name: '.hidden' }, data: Buffer.from('x') }, /"\.hidden" is not a flat file name/],
      [{ header: { name: 'evil', type: 'symlink', linkname: '/etc/passwd' } }, /"evil" is a symlink -> "\/etc\/passwd"/],
      [{ header: { name: 'hard', type: 'link', linkname: 'manifest.json' } }, /"hard" is a link -> "manifest.json"/],
      [{ header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 } }, /"null" is a character-device/],
      [{ header: { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 } }, /"sda" is a block-device/],
      [{ header: { name: 'pipe', type: 'fifo' } }, /"pipe" is a fifo/],
      [{ header: { name: 'dir', type: 'directory' } }, /"dir" is a directory/],
      // A pax header renaming an innocent-looking entry.
      [{ header: { name: 'innocent', pax: { path: '../evil' } }, data: Buffer.from('x') }, /"\.\.\/evil" is not a flat file name/],
    ];
    for (const [entry, msg] of cases) {
      for (const entries of [[...goodEntries.slice(0, 2), entry, ...goodEntries.slice(2)], [entry, ...goodEntries]]) {
        const r = await outcome(await packTar(entries));
        expect(r.code, `${entry.header.name}: ${r.message}`).toBe('E_TAR');
        expect(r.message).toMatch(msg);
      }
    }
    // A GNU long-name ('L') header doing the same trick.
    const longName = Buffer.from('../../gnu-evil\0');
    const gnu = Buffer.concat([ustarHeader('././@LongLink', longName.length, 'L'), pad512(longName), ustarHeader('innocent', 1, '0'), pad512(Buffer.from('x'))]);
    const head = await packTar(goodEntries.slice(0, 2));
    const r = await outcome(Buffer.concat([head.subarray(0, head.length - 1024), gnu, Buffer.alloc(1024)]));
    expect(r.code).toBe('E_TAR');
    expect(r.message).toMatch(/"\.\.\/\.\.\/gnu-evil" is not a flat file name/);
    for (const name of ['x', 'evil', 'gnu-evil', 'abs']) expect(fs.existsSync(path.join(work, name))).toBe(false);
  });

  it('entries out of order are E_FORMAT', async () => {
    const r = await outcome(await packTar([goodEntries[1], goodEntries[0], ...goodEntries.slice(2)]));
    expect(r.code).toBe('E_FORMAT');
    expect(r.message).toMatch(/first entry must be manifest\.json/);
  });

  it('a truncated tar is E_FORMAT "truncated" — cut inside an entry or before the end-of-archive blocks', async () => {
    for (const cut of [goodBytes.length - 1024 - 700, Math.floor(goodBytes.length / 2), 700, goodBytes.length - 1024]) {
      const r = await outcome(goodBytes.subarray(0, cut));
      expect(r.code, `cut at ${cut}: ${r.message}`).toBe('E_FORMAT');
      expect(r.message).toMatch(/truncated/);
    }
  });

  it('an oversize tar is E_SIZE, from a file and from a stream (counted while reading)', async () => {
    const small: Limits = { ...LIMITS, maxPackageBytes: goodBytes.length - 1 };
    expect((await outcome(good.path, { limits: small })).code).toBe('E_SIZE');
    const streamed = await outcome(Readable.from([goodBytes.subarray(0, 4096), goodBytes.subarray(4096)]), { limits: small });
    expect(streamed.code).toBe('E_SIZE');
    expect(streamed.message).toMatch(/larger than/);
    expect((await outcome(Readable.from([goodBytes]), { limits: { ...LIMITS, maxPackageBytes: goodBytes.length } })).code).toBe('accepted');
    // A header declaring far more than the limit is refused before its bytes arrive.
    const liar = Buffer.concat([(await packTar(goodEntries.slice(0, 2))).subarray(0, -1024), ustarHeader('big.bin', 1024 * 1024 * 1024, '0'), Buffer.alloc(4096)]);
    const r = await outcome(liar);
    expect(r.code).toBe('E_SIZE');
    expect(r.message).toMatch(/"big\.bin" declares 1073741824 bytes/);
  });

  it('too many entries or an oversize manifest is E_SIZE', async () => {
    expect((await outcome(good.path, { limits: { ...LIMITS, maxFiles: 4 } })).code).toBe('E_SIZE');
    expect((await outcome(good.path, { limits: { ...LIMITS, maxFiles: 5 } })).code).toBe('accepted');
    const r = await outcome(good.path, { limits: { ...LIMITS, maxManifestBytes: 200 } });
    expect(r.code).toBe('E_SIZE');
    expect(r.message).toMatch(/manifest\.json/);
  });

  describe('a gzip bomb (8 MiB of zeros in a few KB)', () => {
    const zeros = Buffer.alloc(8 * 1024 * 1024);
    const bomb = zlib.gzipSync(zeros, { level: 9 });
    const bombPackage = (declared: number) =>
      packTar([
        ...signed(key, {
          ...good.manifest,
          feed: 'bomb',
          counts: { total: 1, by_type: { ipv4: 1 } },
          files: [{ name: 'indicators-0001.ndjson.gz', role: 'indicators', sha256: crypto.createHash('sha256').update(bomb).digest('hex'), size: bomb.length, uncompressed_size: declared, count: 1 }],
        }),
        { header: { name: 'indicators-0001.ndjson.gz' }, data: bomb },
      ]);
    const small: Limits = { ...LIMITS, maxUncompressedBytes: 1024 * 1024 };

    it('declared honestly, it is refused at staging: E_SIZE', async () => {
      expect(bomb.length).toBeLessThan(16 * 1024);
      const r = await outcome(await bombPackage(zeros.length), { limits: small });
      expect(r.code).toBe('E_SIZE');
      expect(r.message).toMatch(/declares 8388608 bytes decompressed/);
    });

    it('declared as tiny, it passes the signature but decompression stops at the cap: E_SIZE', async () => {
      const r = await outcome(await bombPackage(100), { limits: small });
      expect(r.code).toBe('E_SIZE');
      expect(r.message).toMatch(/decompresses to more than its declared 100 bytes/);
      // …and a reader with a smaller limit than the declared size stops at the limit.
      const r2 = await outcome(await bombPackage(zeros.length), { limits: LIMITS, readLimits: small });
      expect(r2.code).toBe('E_SIZE');
      expect(r2.message).toMatch(/more than the limit of 1048576 bytes/);
    });
  });

  it('bad lines in a signed package are E_FORMAT naming the file and line', async () => {
    const make = async (text: Buffer) => {
      const gz = zlib.gzipSync(text);
      const lines = text.toString('latin1').split('\n').length - 1;
      return packTar([
        ...signed(key, {
          ...good.manifest,
          files: [{ name: 'indicators-0001.ndjson.gz', role: 'indicators', sha256: crypto.createHash('sha256').update(gz).digest('hex'), size: gz.length, uncompressed_size: text.length, count: lines }],
        }),
        { header: { name: 'indicators-0001.ndjson.gz' }, data: gz },
      ]);
    };
    const ok = '{"t":"ipv4","v":"1.1.1.1"}\n{"t":"ipv4","v":"1.1.1.2"}\n';
    const cases: [Buffer, RegExp][] = [
      [Buffer.from(ok + 'not json\n'), /indicators-0001\.ndjson\.gz line 3: not valid JSON/],
      [Buffer.from(ok + '{"t":"ipv4"}\n'), /indicators-0001\.ndjson\.gz line 3: not an indicator object/],
      [Buffer.from(ok + '[1,2]\n'), /line 3: not an indicator object/],
      [Buffer.from(ok + '\n'), /line 3: empty line/],
      [Buffer.concat([Buffer.from(ok), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])]), /line 3: not valid UTF-8/],
      [Buffer.from(ok + '{"t":"ipv4","v":"1.1.1.3"}'), /line 3: missing final newline/],
    ];
    for (const [text, msg] of cases) {
      const r = await outcome(await make(text));
      expect(r.code, r.message).toBe('E_FORMAT');
      expect(r.message).toMatch(msg);
    }
    // Bytes that are not gzip at all, correctly hashed and signed.
    const notGz = Buffer.from(ok);
    const r = await outcome(
      await packTar([
        ...signed(key, { ...good.manifest, files: [{ name: 'indicators-0001.ndjson.gz', role: 'indicators', sha256: crypto.createHash('sha256').update(notGz).digest('hex'), size: notGz.length, uncompressed_size: 10, count: 1 }] }),
        { header: { name: 'indicators-0001.ndjson.gz' }, data: notGz },
      ]),
    );
    expect(r.code).toBe('E_FORMAT');
    expect(r.message).toMatch(/not valid gzip/);
  });

  it('garbage, an empty file and a gzipped tar are E_FORMAT', async () => {
    const rand = mulberry32(7);
    const garbage = Buffer.from(Array.from({ length: 64 * 1024 }, () => Math.floor(rand() * 256)));
    for (const buf of [garbage, garbage.subarray(0, 300), Buffer.alloc(0), zlib.gzipSync(goodBytes), Buffer.from(fs.readFileSync(path.join(DATA, 'ipsum/levels/3.txt')))]) {
      const r = await outcome(buf);
      expect(r.code, r.message).toBe('E_FORMAT');
    }
    expect((await outcome(path.join(work, 'does-not-exist.tar'))).code).toBe('E_NOT_FOUND');
  });

  it('verify re-hashes from disk when streaming digests are absent, and readIndicators re-checks the bytes it reads', async () => {
    const staged = await stagePackage(good.path, stagingRoot, LIMITS);
    try {
      const { digests: _d, ...rest } = staged;
      expect(verifyPackage({ ...rest }, trusted).version).toBe(1);
      const first = good.manifest.files[0];
      const p = staged.files.get(first.name)!;
      const bytes = fs.readFileSync(p);
      bytes[bytes.length - 5] ^= 0xff; // the gzip trailer (CRC/size), after verification
      fs.writeFileSync(p, bytes);
      let code = 'accepted';
      try {
        for await (const _ of readIndicators(staged, first, LIMITS)) void _;
      } catch (e) {
        code = (e as { code: string }).code;
      }
      expect(['E_HASH', 'E_FORMAT']).toContain(code);
      expect(() => verifyPackage({ ...rest }, trusted)).toThrow(expect.objectContaining({ code: 'E_HASH' }));
    } finally {
      staged.cleanup();
    }
  });
});
